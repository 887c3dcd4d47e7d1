//! Stack state over HTTP: the tenant's stacks with history, rollback, the
//! `max_stacks` quota and fenced locks, spoken the way Terraform's and
//! OpenTofu's `http` state backend speaks.
//!
//! # Protocol (Terraform/OpenTofu `http` backend)
//!
//! ```text
//! GET    /v1/stacks/{stack}/{env}/state   200 + the document (Content-MD5) | 204 when none
//! POST   /v1/stacks/{stack}/{env}/state   save; ?ID=<lock id> while locked; Content-MD5 checked
//! DELETE /v1/stacks/{stack}/{env}/state   delete (a tombstone version; history kept until pruned)
//! LOCK   /v1/stacks/{stack}/{env}/lock    body: Terraform LockInfo; 200 | 423 + the holder's LockInfo
//! UNLOCK /v1/stacks/{stack}/{env}/lock    body: LockInfo with the holder's ID; empty: force-unlock
//! ```
//!
//! `POST` and `DELETE` on `.../lock` do what `LOCK` and `UNLOCK` do, for
//! clients that cannot send custom methods. Authentication is HTTP Basic
//! (user: the tenant id, password: the secret), `X-API-Key` or `Bearer`.
//!
//! - **Status codes** are the ones Terraform's client expects: `LOCK` and
//!   `UNLOCK` answer exactly 200; a held lock is 423 with the holder's
//!   LockInfo (Terraform prints its `ID`); `GET` of no state is 204.
//! - **Locks.** The lock of `stack`/`env` is the tenant's lock key
//!   `stack:<stack>:env:<env>` (`LockKey::stack_env`, the key `tenancy lock
//!   acquire --stack S --env E` takes, so `/v1/locks` and `tenancy lock
//!   list` show it). Its id is the
//!   client's (Terraform sends a UUID); the client's `Operation`, `Info`,
//!   `Who`, `Version` and `Path` are stored with our lease and fencing
//!   token. Terraform never renews, so the lease is the server's
//!   `stack_lock_ttl` (default 1 h), and a save, delete or rollback made
//!   under the lock extends it to that much from now whenever less than
//!   half of it is left (so a save on a fresh lease costs no renew).
//! - **Saves.** While the stack is locked, a save without `?ID` is 423 (also
//!   for a client run with `-lock=false`) and a save with another id (stale
//!   or foreign) is 409; a save with `?ID` of a lock that is no longer held
//!   (lease ran out, force-unlocked) is 409. A save under the lock records
//!   the lock's fencing token in the new version, and the store refuses a
//!   save whose token is below the one recorded (409 `fenced`), so a holder
//!   whose lease lapsed can never overwrite a newer holder's state, even if
//!   its request was checked just before the takeover.
//! - **Documents** are stored as given and returned byte for byte; a body
//!   that is not JSON is 400; a `Content-MD5` that does not match is 400.
//! - **Quota.** The first save of a new stack counts against `max_stacks`
//!   (`tenancy_state::stack_quota`, the CLI's counting); `DELETE` of its
//!   last environment gives it back.
//!
//! Besides Terraform's routes: `GET /v1/stacks` (every stack environment
//! with its serial, save time and lock holder), `GET .../history`,
//! `GET .../history/{serial}` (that version's document) and `POST
//! .../rollback` (`{"to": serial}`, refused while another holder has the
//! lock; `?ID=` to roll back under one's own lock).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use serde::Deserialize;
use tenancy_core::{Error, LockId, LockInfo, LockKey, LockManager, LockRequest, StateBackend};
use tenancy_lock::holder_fence;
use tenancy_state::stack::{Expected, SaveOptions, StackStore, StateDocument};
use tenancy_state::stack_quota::StackQuota;
use utoipa::IntoParams;

use tenancy_core::audit::Scope;
use tenancy_state::audited::{lock_target, stack_detail, stack_target, unlock_detail};

use super::audit::Audit;
use crate::app_state::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Json, Path, Query};
use crate::views::{
    DamagedVersionView, RollbackBody, StackEnvView, StackHistory, StackList, StackVersionView,
    StackWritten, TerraformLock,
};

type Store = StackStore<Arc<dyn StateBackend>>;

/// The path of one stack environment.
#[derive(Debug, Deserialize)]
pub(crate) struct StackPath {
    stack: String,
    env: String,
}

/// The path of one version of a stack environment.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionPath {
    stack: String,
    env: String,
    serial: u64,
}

/// The optional lock id of a save, delete or rollback.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct LockIdQuery {
    /// The id of the lock the request is made under (Terraform's `?ID=`).
    #[serde(rename = "ID")]
    #[param(rename = "ID")]
    id: Option<String>,
}

fn store(state: &AppState, who: &AuthenticatedTenant) -> ApiResult<Store> {
    Ok(StackStore::new(state.stores().state(who.tenant())?))
}

fn locks(state: &AppState, who: &AuthenticatedTenant) -> ApiResult<Arc<dyn LockManager>> {
    Ok(state.stores().locks(who.tenant())?)
}

/// The longest stack or environment name, in bytes: two of them fit the
/// stack's lock key (`stack:<stack>:env:<env>`, 11 bytes more) within the
/// longest lock key a tenant may name (`tenant::MAX_TENANT_LOCK_KEY`), so
/// each name has a limit of its own that the OpenAPI document can state.
pub(crate) const MAX_NAME_LEN: usize = (crate::routes::tenant::MAX_TENANT_LOCK_KEY - 11) / 2;

fn lock_key(p: &StackPath) -> ApiResult<LockKey> {
    for (what, name) in [("stack", &p.stack), ("environment", &p.env)] {
        if name.len() > MAX_NAME_LEN {
            return Err(ApiError::bad_request(format!(
                "the {what} name is {} bytes long; the limit is {MAX_NAME_LEN}",
                name.len()
            )));
        }
        // the names must be state key segments too
        tenancy_core::StateKey::segment(name)?;
    }
    Ok(LockKey::stack_env(&p.stack, &p.env)?)
}

fn locked(holder: &LockInfo) -> Response {
    (StatusCode::LOCKED, axum::Json(TerraformLock::from(holder))).into_response()
}

fn lost(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "lock_lost", message)
}

/// What a write may do given the stack's lock ([`holder_fence`]):
/// `Ok(fence)` to go on, or the answer that refuses it (423 with the
/// holder, 409 for a lost or foreign lock id).
async fn under_lock(
    state: &AppState,
    locks: &dyn LockManager,
    key: &LockKey,
    given: Option<&str>,
) -> Result<Option<u64>, Response> {
    let id = match given.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(LockId::parse(raw).map_err(|e| ApiError::from(e).into_response())?),
    };
    let now = state.clock().now();
    match holder_fence(locks, key, id, Some(state.config().stack_lock_ttl), now).await {
        Ok(fence) => Ok(fence),
        Err(Error::LockHeld { holder }) => Err(locked(&holder)),
        Err(Error::Fenced { what }) => Err(lost(what).into_response()),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

fn document_response(raw: Bytes, serial: u64) -> ApiResult<Response> {
    let md5 = HeaderValue::from_str(&md5_base64(&raw)).map_err(|_| ApiError::internal())?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::HeaderName::from_static("content-md5"), md5),
            (
                header::HeaderName::from_static("x-tenancy-serial"),
                HeaderValue::from(serial),
            ),
        ],
        raw,
    )
        .into_response())
}

fn response(r: Result<Response, Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

/// The current state document: 200 with it, or 204 when there is none.
#[utoipa::path(get, path = "/v1/stacks/{stack}/{env}/state", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path)), security(("api_key" = []), ("basic" = [])),
    responses((status = 200, description = "the state document, byte for byte", content_type = "application/json"),
        (status = 204, description = "no state"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn get_state(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
) -> ApiResult<Response> {
    lock_key(&p)?;
    match store(&state, &who)?.current(&p.stack, &p.env).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(snap) => document_response(snap.raw, snap.serial),
    }
}

/// Saves a new version (Terraform's `POST` with `?ID=` while locked).
#[utoipa::path(post, path = "/v1/stacks/{stack}/{env}/state", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path), LockIdQuery),
    request_body(content = String, content_type = "application/json", description = "the state document (any JSON)"),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = StackWritten), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 423, description = "locked by another holder", body = TerraformLock),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn save_state(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
    Query(q): Query<LockIdQuery>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Response {
    response(save_inner(state, audit, who, p, q, headers, bytes).await)
}

async fn save_inner(
    state: AppState,
    audit: Audit,
    who: AuthenticatedTenant,
    p: StackPath,
    q: LockIdQuery,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Response> {
    lock_key(&p).map_err(IntoResponse::into_response)?;
    if let Some(given) = headers.get("content-md5") {
        let given = given
            .to_str()
            .ok()
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            })
            .ok_or_else(|| {
                ApiError::bad_request("Content-MD5 is not base64 of an MD5 digest").into_response()
            })?;
        if given.as_slice() != Md5::digest(&bytes).as_slice() {
            return Err(ApiError::bad_request(
                "the body does not match its Content-MD5; nothing was saved",
            )
            .into_response());
        }
    }
    let doc = StateDocument::from_bytes(&bytes).map_err(|e| ApiError::from(e).into_response())?;
    write(state, audit, who, p, q, Write::Save(doc)).await
}

/// What a write of a stack environment does.
#[derive(Debug)]
enum Write {
    Save(StateDocument),
    Delete,
    Rollback(u64),
}

/// Every write of a stack environment: checked against its lock
/// ([`under_lock`]), counted (`tenancy_state::stack_quota`), on top of the
/// latest version, in its own task (a disconnect never stops it between
/// quota and write). A rollback or delete is recorded in the tenant's
/// audit log (a save is not; a quota refusal is, by the registry).
async fn write(
    state: AppState,
    audit: Audit,
    who: AuthenticatedTenant,
    p: StackPath,
    q: LockIdQuery,
    op: Write,
) -> Result<Response, Response> {
    let key = lock_key(&p).map_err(IntoResponse::into_response)?;
    let locks = locks(&state, &who).map_err(IntoResponse::into_response)?;
    let fence = under_lock(&state, &*locks, &key, q.id.as_deref()).await?;
    let store = store(&state, &who).map_err(IntoResponse::into_response)?;
    let registry = audit.registry();
    let tenant = who.tenant_arc();
    let (stack, env) = (p.stack.clone(), p.env.clone());
    let task = tokio::spawn(async move {
        let quota = StackQuota::new(&store, &*registry, &tenant);
        let opts = SaveOptions::new(Expected::Latest).fenced(fence);
        let (action, to, done) = match op {
            Write::Save(doc) => return quota.save(&stack, &env, &doc, opts).await,
            Write::Rollback(to) => (
                "stack.rollback",
                Some(to),
                quota.rollback(&stack, &env, to, opts).await,
            ),
            Write::Delete => (
                "stack.delete",
                None,
                quota.delete(&stack, &env, opts).await.map(|(v, _)| v),
            ),
        };
        audit
            .record(
                &Scope::Tenant(tenant.id.clone()),
                action,
                stack_target(&stack, &env),
                &done,
                |v| stack_detail(v.serial, to),
            )
            .await;
        done
    });
    let done = task
        .await
        .map_err(|_| ApiError::internal().into_response())?;
    state.usage_cache().invalidate(who.id());
    let v = done.map_err(|e| ApiError::from(e).into_response())?;
    Ok(axum::Json(StackWritten {
        stack: p.stack,
        env: p.env,
        serial: v.serial,
        saved_at: v.saved_at,
    })
    .into_response())
}

/// Deletes the stack environment (a tombstone version: the history stays
/// until pruned and a rollback restores it); gives its stack quota back
/// when it was the stack's last environment.
#[utoipa::path(delete, path = "/v1/stacks/{stack}/{env}/state", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path), LockIdQuery),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = StackWritten), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 423, body = TerraformLock)))]
pub(crate) async fn delete_state(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
    Query(q): Query<LockIdQuery>,
) -> Response {
    response(write(state, audit, who, p, q, Write::Delete).await)
}

/// `LOCK`/`UNLOCK` (and `POST`/`DELETE`) on a stack environment's lock.
pub(crate) async fn lock_route(
    State(state): State<AppState>,
    audit: Audit,
    method: Method,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
    Body(bytes): Body,
) -> Response {
    let r = match method.as_str() {
        "LOCK" | "POST" => lock(&state, &who, &p, &bytes).await,
        "UNLOCK" | "DELETE" => unlock(&state, &audit, &who, &p, &bytes).await,
        _ => {
            let mut res = ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
                .with_message("use LOCK or UNLOCK (or POST or DELETE) on a stack lock")
                .into_response();
            res.headers_mut().insert(
                header::ALLOW,
                // the methods of the OpenAPI document; LOCK and UNLOCK are
                // Terraform's names for them, as the message says
                HeaderValue::from_static("POST, DELETE"),
            );
            Err(res)
        }
    };
    response(r)
}

/// What the server reads of a LockInfo a client sends (Terraform sends
/// `Created` too, and a client may echo `Expires` and `FencingToken`: the
/// server sets those itself, so they are not read at all).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockBody {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    info: String,
    #[serde(default)]
    who: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    path: String,
}

fn parse_lock(bytes: &[u8]) -> ApiResult<LockBody> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the body is not a Terraform LockInfo JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a Terraform LockInfo JSON object: {e}"
        ))
    })
}

/// Takes the lock: 200 with the lease, 423 with the holder, or 429 when the
/// tenant already holds its `max_locks` (counted by `SharedStores`' lock layer).
#[utoipa::path(post, path = "/v1/stacks/{stack}/{env}/lock", tag = "stacks",
    description = "Also `LOCK` (Terraform's default lock method).",
    params(("stack" = String, Path), ("env" = String, Path)), request_body = TerraformLock,
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = TerraformLock), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 423, body = TerraformLock),
        (status = 429, description = "over the locks_held quota (max_locks)", body = ErrorBody)))]
#[allow(dead_code)] // documents `lock_route` in the OpenAPI document
pub(crate) async fn lock_doc() {}

async fn lock(
    state: &AppState,
    who: &AuthenticatedTenant,
    p: &StackPath,
    bytes: &[u8],
) -> Result<Response, Response> {
    let key = lock_key(p).map_err(IntoResponse::into_response)?;
    let info = parse_lock(bytes).map_err(IntoResponse::into_response)?;
    let id = LockId::parse(&info.id).map_err(|e| ApiError::from(e).into_response())?;
    let who_name = if info.who.trim().is_empty() {
        who.id().to_string()
    } else {
        info.who
    };
    let mut req = LockRequest::new(key, state.config().stack_lock_ttl)
        .lock_id(id)
        .who(who_name)
        .operation(info.operation)
        .info(info.info)
        .path(info.path);
    if !info.version.is_empty() {
        req = req.version(info.version);
    }
    req.validate()
        .map_err(|e| ApiError::from(e).into_response())?;
    let locks = locks(state, who).map_err(IntoResponse::into_response)?;
    match locks.try_acquire(&req).await {
        Ok(held) => Ok((StatusCode::OK, axum::Json(TerraformLock::from(&held))).into_response()),
        Err(Error::LockHeld { holder }) => Err(locked(&holder)),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// Releases the lock (the holder's LockInfo), or force-unlocks it (an empty body).
#[utoipa::path(delete, path = "/v1/stacks/{stack}/{env}/lock", tag = "stacks",
    description = "Also `UNLOCK` (Terraform's default unlock method). An empty body force-unlocks (`terraform force-unlock`).",
    params(("stack" = String, Path), ("env" = String, Path)),
    request_body(content = Option<TerraformLock>),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, description = "unlocked (or it was not locked)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "held by another lock id", body = TerraformLock)))]
#[allow(dead_code)] // documents `lock_route` in the OpenAPI document
pub(crate) async fn unlock_doc() {}

async fn unlock(
    state: &AppState,
    audit: &Audit,
    who: &AuthenticatedTenant,
    p: &StackPath,
    bytes: &[u8],
) -> Result<Response, Response> {
    let key = lock_key(p).map_err(IntoResponse::into_response)?;
    let locks = locks(state, who).map_err(IntoResponse::into_response)?;
    let fail = |e: Error| ApiError::from(e).into_response();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // force-unlock by the tenant: whoever holds it
        if let Some(h) = locks.inspect(&key).await.map_err(fail)? {
            let done = locks.force_unlock(&key, h.lock_id).await;
            audit
                .record(
                    &Scope::Tenant(who.id().clone()),
                    "lock.force_unlock",
                    lock_target(&key),
                    &done,
                    |_| unlock_detail(&h.lock_id, Some(&h)),
                )
                .await;
            match done {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        return Ok(StatusCode::OK.into_response());
    }
    let info = parse_lock(bytes).map_err(IntoResponse::into_response)?;
    let id = LockId::parse(&info.id).map_err(fail)?;
    match locks.release(&key, id).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        // already free (released, or its lease ran out and it was cleared)
        Err(Error::NotFound { .. }) => Ok(StatusCode::OK.into_response()),
        Err(Error::Precondition { .. }) => match locks.inspect(&key).await.map_err(fail)? {
            Some(h) => {
                Err((StatusCode::CONFLICT, axum::Json(TerraformLock::from(&h))).into_response())
            }
            None => Ok(StatusCode::OK.into_response()),
        },
        Err(e) => Err(fail(e)),
    }
}

/// Every stack environment of the tenant with its serial, save time and lock holder.
#[utoipa::path(get, path = "/v1/stacks", tag = "stacks", security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = StackList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
) -> ApiResult<axum::Json<StackList>> {
    let store = store(&state, &who)?;
    let held = locks(&state, &who)?.list("stack:").await?;
    let stacks = store
        .listing(&held)
        .await?
        .into_iter()
        .map(|l| StackEnvView::new(l.stack, l.env, l.current, l.locked_by.as_ref()))
        .collect();
    Ok(axum::Json(StackList {
        stacks,
        max_stacks: who.tenant().limits().max_stacks,
    }))
}

/// The versions of a stack environment, oldest first.
#[utoipa::path(get, path = "/v1/stacks/{stack}/{env}/history", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path)), security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = StackHistory), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
) -> ApiResult<axum::Json<StackHistory>> {
    lock_key(&p)?;
    let report = store(&state, &who)?
        .history_report(&p.stack, &p.env)
        .await?;
    Ok(axum::Json(StackHistory {
        versions: report
            .entries
            .into_iter()
            .map(|e| StackVersionView {
                serial: e.serial,
                saved_at: e.saved_at,
                size: e.size,
                rolled_back_from: e.rolled_back_from,
                plain: e.plain,
                deleted: e.deleted,
                fencing_token: e.fence,
            })
            .collect(),
        damaged: report
            .damaged
            .into_iter()
            .map(|d| DamagedVersionView {
                serial: d.serial,
                key: d.key.to_string(),
                message: d.message,
            })
            .collect(),
    }))
}

/// One version's document, byte for byte.
#[utoipa::path(get, path = "/v1/stacks/{stack}/{env}/history/{serial}", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path), ("serial" = u64, Path)),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, description = "the document", content_type = "application/json"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn version(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(p): Path<VersionPath>,
) -> ApiResult<Response> {
    let sp = StackPath {
        stack: p.stack,
        env: p.env,
    };
    lock_key(&sp)?;
    let snap = store(&state, &who)?
        .version(&sp.stack, &sp.env, p.serial)
        .await?;
    document_response(snap.raw, snap.serial)
}

/// Rolls back to an older version (a new version with its document);
/// refused while another holder has the lock.
#[utoipa::path(post, path = "/v1/stacks/{stack}/{env}/rollback", tag = "stacks",
    params(("stack" = String, Path), ("env" = String, Path), LockIdQuery),
    request_body = RollbackBody, security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = StackWritten), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 423, body = TerraformLock)))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(p): Path<StackPath>,
    Query(q): Query<LockIdQuery>,
    Json(body): Json<RollbackBody>,
) -> Response {
    response(write(state, audit, who, p, q, Write::Rollback(body.to)).await)
}

/// The default lease of a lock taken through these routes.
pub(crate) const DEFAULT_STACK_LOCK_TTL: Duration = Duration::from_secs(3600);
/// The default largest stack state document: 32 MiB.
pub(crate) const DEFAULT_STACK_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The path of an admin force-unlock.
#[derive(Debug, Deserialize)]
pub(crate) struct AdminStackPath {
    id: String,
    stack: String,
    env: String,
}

/// The admin's force-unlock of a tenant's stack lock (whoever holds it):
/// 200 with the lock it ended, or 404 when it is not locked.
#[utoipa::path(delete, path = "/v1/tenants/{id}/stacks/{stack}/{env}/lock", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ("stack" = String, Path), ("env" = String, Path)),
    security(("admin" = [])),
    responses((status = 200, body = TerraformLock), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_force_unlock(
    State(state): State<AppState>,
    audit: Audit,
    Path(p): Path<AdminStackPath>,
) -> ApiResult<axum::Json<TerraformLock>> {
    let id = tenancy_core::TenantId::new(&p.id)?;
    let tenant = state.registry().get(&id).await?;
    let key = lock_key(&StackPath {
        stack: p.stack,
        env: p.env,
    })?;
    let locks = state.stores().locks(&tenant)?;
    let holder = locks
        .inspect(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{key} of tenant {id} is not locked")))?;
    let done = locks.force_unlock(&key, holder.lock_id).await;
    audit
        .record(
            &Scope::Tenant(id.clone()),
            "lock.force_unlock",
            lock_target(&key),
            &done,
            |_| unlock_detail(&holder.lock_id, Some(&holder)),
        )
        .await;
    done?;
    Ok(axum::Json(TerraformLock::from(&holder)))
}
