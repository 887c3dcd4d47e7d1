//! The tenant API's own profile, state (with ETags) and locks. Every handler
//! works on the stores of the authenticated tenant only. Stack state
//! (`stacks/`, `stack-quota/`) can be read here but is written only through
//! the stack routes (`stacks.rs`), so no write skips a stack's lock,
//! fencing or `max_stacks`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use tenancy_core::{LockId, LockKey, LockManager, LockRequest, StateBackend, StateKey, Version};
use utoipa::IntoParams;

use super::audit::Audit;
use crate::app_state::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Json, OptionalJson, Path, Query};
use crate::jobs::SERVER_PREFIX;
use crate::routes::state_quota::{self, Want, Written};
use crate::views::{
    AcquireLock, LockList, LockView, OwnTenantView, RenewLock, StateEntryView, StateList,
    StateWritten,
};

/// The calling tenant's profile and usage.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, body = OwnTenantView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
) -> ApiResult<Response> {
    let json = |bytes: bytes::Bytes| {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response()
    };
    let tenant = who.tenant_arc();
    // The hot path: the body made for this very tenant record and a fresh usage.
    if let Some(body) = state.usage_cache().body(&tenant) {
        return Ok(json(body));
    }
    let t = &*tenant;
    let epoch = state.usage_cache().epoch();
    let usage = match state.usage_cache().get(&t.id) {
        Some(u) => u,
        None => {
            let u = state.usage(t).await?;
            state.metrics().record_usage(t, &u);
            state.usage_cache().put(&t.id, u.clone(), epoch);
            u
        }
    };
    let now = state.clock().now();
    let view = OwnTenantView {
        id: t.id.to_string(),
        display_name: t.display_name.clone(),
        status: t.effective_status(now),
        plan: t.plan,
        limits: t.limits(),
        expires_at: t.expires_at,
        usage,
        profile: crate::views::TenantView::new(t, now),
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&view).map_err(|_| ApiError::internal())?);
    state.usage_cache().set_body(&tenant, body.clone(), epoch);
    Ok(json(body))
}

fn tenant_state(state: &AppState, who: &AuthenticatedTenant) -> ApiResult<Arc<dyn StateBackend>> {
    Ok(state.stores().state(who.tenant())?)
}

fn tenant_locks(state: &AppState, who: &AuthenticatedTenant) -> ApiResult<Arc<dyn LockManager>> {
    Ok(state.stores().locks(who.tenant())?)
}

/// The longest state key a tenant may name, in bytes: below its state root
/// (`tenants/<id>/<version>/`, at most 75 bytes with the longest id and
/// version `v1`) every key up to this long fits `StateKey`'s 1024, whatever
/// the tenant, so the limit is one the OpenAPI document can state.
pub(crate) const MAX_TENANT_STATE_KEY: usize = 900;

/// The longest lock key a tenant may name, in bytes: with the tenant's
/// prefix (`tenant:<id>:`, at most 71 bytes) it fits `LockKey`'s 512,
/// whatever the tenant.
pub(crate) const MAX_TENANT_LOCK_KEY: usize = tenancy_core::keys::MAX_LOCK_KEY_LEN - 71;

/// Validates a state key from a path and refuses the server's own prefix.
fn state_key(raw: &str) -> ApiResult<StateKey> {
    if raw.len() > MAX_TENANT_STATE_KEY {
        return Err(ApiError::bad_request(format!(
            "state key is {} bytes long; the limit is {MAX_TENANT_STATE_KEY}",
            raw.len()
        )));
    }
    let key = StateKey::new(raw)?;
    if key.segments().next() == Some(SERVER_PREFIX) {
        return Err(ApiError::forbidden(format!(
            "keys under {SERVER_PREFIX}/ are reserved for the server (jobs and workers)"
        )));
    }
    Ok(key)
}

/// The prefixes of stack state (`stacks/`) and its quota markers
/// (`stack-quota/`): readable through the state API, written only through
/// the stack routes, which check the stack's lock, fencing and `max_stacks`.
const STACK_PREFIXES: [&str; 2] = ["stacks", tenancy_state::stack_quota::MARKER_PREFIX];

/// A state key the state API may write or delete: [`state_key`], and not
/// under the stack routes' prefixes.
fn writable_key(raw: &str) -> ApiResult<StateKey> {
    let key = state_key(raw)?;
    if let Some(first) = key.segments().next().filter(|s| STACK_PREFIXES.contains(s)) {
        return Err(ApiError::forbidden(format!(
            "keys under {first}/ are written through the stack routes (POST /v1/stacks/{{stack}}/{{env}}/state), which check the stack's lock and quota; nothing was written"
        )));
    }
    Ok(key)
}

pub(crate) use crate::views::{etag, parse_etag};

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> ApiResult<Option<&str>> {
    match headers.get(&name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("header {name} is not valid"))),
    }
}

fn one_etag(value: &str, name: &str) -> ApiResult<Version> {
    if value.contains(',') {
        return Err(ApiError::bad_request(format!(
            "{name} with several entity tags is not supported; send one"
        )));
    }
    // An entity tag this server never issued matches nothing.
    parse_etag(value).ok_or_else(|| {
        ApiError::precondition(format!("{name} names a version this server never issued"))
    })
}

/// Filters of `GET /v1/state`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListState {
    /// Only keys strictly below this key prefix (segment-wise).
    pub prefix: Option<String>,
    /// The most keys to return (default and maximum: the server's `max_list`).
    pub limit: Option<usize>,
}

/// Lists the calling tenant's keys.
#[utoipa::path(get, path = "/v1/state", tag = "state", params(ListState),
    security(("api_key" = [])),
    responses((status = 200, body = StateList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_state(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Query(q): Query<ListState>,
) -> ApiResult<axum::Json<StateList>> {
    let prefix = match q.prefix.as_deref() {
        None | Some("") => None,
        Some(p) => Some(state_key(p.trim_end_matches('/'))?),
    };
    let max = state.config().max_list;
    let limit = q.limit.unwrap_or(max).min(max);
    let store = tenant_state(&state, &who)?;
    let mut keys: Vec<StateEntryView> = store
        .list(prefix.as_ref())
        .try_filter(|e| futures::future::ready(e.key.segments().next() != Some(SERVER_PREFIX)))
        .map_ok(|e| StateEntryView {
            key: e.key.to_string(),
            size: e.size,
            last_modified: e.last_modified,
        })
        .try_collect()
        .await?;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    let truncated = keys.len() > limit;
    keys.truncate(limit);
    Ok(axum::Json(StateList { keys, truncated }))
}

/// Reads one object; `ETag` gives its version (`If-None-Match` answers 304).
#[utoipa::path(get, path = "/v1/state/{key}", tag = "state",
    params(("key" = String, Path, description = "state key, `/`-separated")),
    security(("api_key" = [])),
    responses((status = 200, description = "the object's bytes", content_type = "application/octet-stream"),
        (status = 304, description = "not modified"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_state(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = state_key(&raw)?;
    let store = tenant_state(&state, &who)?;
    let obj = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no state at key {key}")))?;
    let tag = etag(&obj.version);
    let tag_value = HeaderValue::from_str(&tag).map_err(|_| ApiError::internal())?;
    if let Some(inm) = header_str(&headers, header::IF_NONE_MATCH)? {
        let hit = inm.trim() == "*"
            || inm
                .split(',')
                .filter_map(parse_etag)
                .any(|v| v == obj.version);
        if hit {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag_value)]).into_response());
        }
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, tag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
        obj.bytes,
    )
        .into_response())
}

/// Writes one object. `If-Match: <etag>` writes only over that version,
/// `If-None-Match: *` only if absent; otherwise 412. Counts against the
/// tenant's `state_bytes` and `state_objects` quotas (429 over them; the
/// protocol is in `routes::state_quota`).
#[utoipa::path(put, path = "/v1/state/{key}", tag = "state",
    params(("key" = String, Path, description = "state key, `/`-separated")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("api_key" = [])),
    responses((status = 200, body = StateWritten), (status = 201, body = StateWritten),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, description = "over the state_bytes or state_objects quota", body = ErrorBody)))]
pub(crate) async fn put_state(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    let key = writable_key(&raw)?;
    let store = tenant_state(&state, &who)?;
    let if_match = header_str(&headers, header::IF_MATCH)?;
    let if_none = header_str(&headers, header::IF_NONE_MATCH)?;
    let want = match (if_match, if_none) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either If-Match or If-None-Match, not both",
            ))
        }
        (None, Some(v)) if v.trim() == "*" => Want::Absent,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "If-None-Match on a write supports only *",
            ))
        }
        (Some(v), None) if v.trim() == "*" => match store.get(&key).await? {
            Some(obj) => Want::At(obj.version),
            None => return Err(ApiError::precondition(format!("no state at key {key}"))),
        },
        (Some(v), None) => Want::At(one_etag(v, "If-Match")?),
        (None, None) => Want::Any,
    };
    let conditional = want != Want::Any;
    // Its own task: a disconnect never stops it between write and settle.
    let task = tokio::spawn(state_quota::put(
        audit.registry(),
        who.id().clone(),
        store,
        key.clone(),
        bytes,
        want,
    ));
    let written = task.await.map_err(|_| ApiError::internal());
    state.usage_cache().invalidate(who.id());
    let (version, created) = match written?? {
        Written::Stored(v, new) => (v, new && conditional),
        Written::Precondition("exists") => {
            return Err(ApiError::precondition(format!(
                "key {key} already exists (If-None-Match: *)"
            )))
        }
        Written::Precondition("absent") => {
            return Err(ApiError::precondition(format!("no state at key {key}")))
        }
        Written::Precondition(_) => {
            return Err(ApiError::precondition(format!(
                "key {key} is not at the version given in If-Match"
            )))
        }
    };
    let tag = etag(&version);
    let tag_value = HeaderValue::from_str(&tag).map_err(|_| ApiError::internal())?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::ETAG, tag_value)],
        axum::Json(StateWritten {
            key: key.to_string(),
            etag: tag,
        }),
    )
        .into_response())
}

/// Deletes one object (`If-Match` honoured).
#[utoipa::path(delete, path = "/v1/state/{key}", tag = "state",
    params(("key" = String, Path, description = "state key, `/`-separated")),
    security(("api_key" = [])),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody)))]
pub(crate) async fn delete_state(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let key = writable_key(&raw)?;
    let store = tenant_state(&state, &who)?;
    let current = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no state at key {key}")))?;
    let version = match header_str(&headers, header::IF_MATCH)? {
        None => current.version.clone(),
        Some(v) if v.trim() == "*" => current.version.clone(),
        Some(v) => {
            let want = one_etag(v, "If-Match")?;
            if want != current.version {
                return Err(ApiError::precondition(format!(
                    "key {key} is not at the version given in If-Match"
                )));
            }
            want
        }
    };
    if version != current.version {
        return Err(ApiError::precondition(format!(
            "key {key} changed meanwhile"
        )));
    }
    let task = tokio::spawn(state_quota::delete(
        state.registry().clone(),
        who.id().clone(),
        store,
        key.clone(),
        current,
    ));
    let deleted = task.await.map_err(|_| ApiError::internal());
    state.usage_cache().invalidate(who.id());
    deleted?.map_err(|e| match e {
        tenancy_core::Error::Precondition { .. } => {
            ApiError::precondition(format!("key {key} changed meanwhile"))
        }
        e => e.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn lock_key(raw: &str) -> ApiResult<LockKey> {
    if raw.len() > MAX_TENANT_LOCK_KEY {
        return Err(ApiError::bad_request(format!(
            "lock key is {} bytes long; the limit is {MAX_TENANT_LOCK_KEY}",
            raw.len()
        )));
    }
    Ok(LockKey::new(raw)?)
}

/// Takes a lock: 201 with the lease, 409 with the holder, or 429 when the
/// tenant already holds its plan's `max_locks` (`locks_held` in its usage;
/// leases that ran out no longer count).
#[utoipa::path(post, path = "/v1/locks/{key}", tag = "locks", request_body = AcquireLock,
    params(("key" = String, Path, description = "lock key, `:`-separated")),
    security(("api_key" = [])),
    responses((status = 201, body = LockView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, description = "over the locks_held quota (max_locks)", body = ErrorBody)))]
pub(crate) async fn acquire_lock(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    Json(body): Json<AcquireLock>,
) -> ApiResult<(StatusCode, axum::Json<LockView>)> {
    let key = lock_key(&raw)?;
    let mut req = LockRequest::new(key, Duration::from_secs(body.ttl_seconds))
        .who(body.owner.unwrap_or_else(|| who.id().to_string()))
        .operation(body.operation.unwrap_or_default())
        .info(body.info.unwrap_or_default())
        .path(body.path.unwrap_or_default());
    if let Some(id) = body.lock_id.as_deref() {
        req = req.lock_id(LockId::parse(id)?);
    }
    if let Some(v) = body.version {
        req = req.version(v);
    }
    req.validate()?;
    let locks = tenant_locks(&state, &who)?;
    let info = locks.try_acquire(&req).await;
    state.usage_cache().invalidate(who.id());
    Ok((StatusCode::CREATED, axum::Json(info?.into())))
}

/// The query of lock renew and release.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockQuery {
    /// The holder's lock id.
    pub lock_id: Option<String>,
    /// For renew: the new lease in seconds (default: the lease it had).
    pub ttl_seconds: Option<u64>,
    /// For release: free the lock whatever its lease, if `lock_id` is the
    /// current holder's (the escape hatch for a holder that is gone).
    pub force: Option<bool>,
}

/// The query of `GET /v1/locks`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListLocks {
    /// Only locks whose key starts with this (plain string prefix).
    pub prefix: Option<String>,
}

pub(super) fn lock_id(q: &LockQuery) -> ApiResult<LockId> {
    let raw = q
        .lock_id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("the lock_id query parameter is required"))?;
    Ok(LockId::parse(raw)?)
}

pub(super) fn holder_only(e: tenancy_core::Error) -> ApiError {
    match e {
        tenancy_core::Error::Precondition { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "lock_lost",
            "the lock is not held with this lock id",
        ),
        tenancy_core::Error::NotFound { .. } => ApiError::not_found("the lock is not held"),
        e => e.into(),
    }
}

/// Renews a lease (holder only).
#[utoipa::path(put, path = "/v1/locks/{key}", tag = "locks", params(("key" = String, Path), LockQuery),
    request_body(content = Option<RenewLock>), security(("api_key" = [])),
    responses((status = 200, body = LockView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn renew_lock(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    Query(q): Query<LockQuery>,
    OptionalJson(body): OptionalJson<RenewLock>,
) -> ApiResult<axum::Json<LockView>> {
    let key = lock_key(&raw)?;
    let id = lock_id(&q)?;
    // A query ttl is checked even when the body's wins: no value outside
    // the range is ever accepted.
    if let Some(s) = q.ttl_seconds {
        tenancy_core::lock::validate_ttl(Duration::from_secs(s))?;
    }
    let locks = tenant_locks(&state, &who)?;
    let ttl = match body.and_then(|b| b.ttl_seconds).or(q.ttl_seconds) {
        Some(s) => Duration::from_secs(s),
        None => {
            let held = locks
                .inspect(&key)
                .await?
                .ok_or_else(|| ApiError::not_found("the lock is not held"))?;
            (held.expires - held.last_heartbeat)
                .to_std()
                .unwrap_or(tenancy_core::lock::MIN_LOCK_TTL)
        }
    };
    tenancy_core::lock::validate_ttl(ttl)?;
    let info = locks.renew(&key, id, ttl).await.map_err(holder_only)?;
    Ok(axum::Json(info.into()))
}

/// Releases a lock (holder only; `force=true` frees it whatever its lease, given the holder's lock id).
#[utoipa::path(delete, path = "/v1/locks/{key}", tag = "locks", params(("key" = String, Path), LockQuery),
    security(("api_key" = [])),
    responses((status = 204, description = "released"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn release_lock(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
    Query(q): Query<LockQuery>,
) -> ApiResult<StatusCode> {
    let key = lock_key(&raw)?;
    let id = lock_id(&q)?;
    let locks = tenant_locks(&state, &who)?;
    let released = if q.force == Some(true) {
        let done = locks.force_unlock(&key, id).await;
        audit
            .record(
                &tenancy_core::audit::Scope::Tenant(who.id().clone()),
                "lock.force_unlock",
                tenancy_state::audited::lock_target(&key),
                &done,
                |_| tenancy_state::audited::unlock_detail(&id, None),
            )
            .await;
        done
    } else {
        locks.release(&key, id).await
    };
    state.usage_cache().invalidate(who.id());
    released.map_err(holder_only)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The holder of one lock (404 when it is free or expired).
#[utoipa::path(get, path = "/v1/locks/{key}", tag = "locks",
    params(("key" = String, Path, description = "lock key, `:`-separated")),
    security(("api_key" = [])),
    responses((status = 200, body = LockView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn inspect_lock(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<LockView>> {
    let key = lock_key(&raw)?;
    let locks = tenant_locks(&state, &who)?;
    let info = locks
        .inspect(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("the lock is not held"))?;
    Ok(axum::Json(info.into()))
}

/// Lists the calling tenant's held locks (below `prefix`, if given).
#[utoipa::path(get, path = "/v1/locks", tag = "locks", params(ListLocks),
    security(("api_key" = [])),
    responses((status = 200, body = LockList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list_locks(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Query(q): Query<ListLocks>,
) -> ApiResult<axum::Json<LockList>> {
    let locks = tenant_locks(&state, &who)?;
    Ok(axum::Json(lock_list(&*locks, q).await?))
}

/// The held locks of one tenant's lock manager below the query's prefix,
/// sorted by key (the tenant's and the admin's listing).
pub(super) async fn lock_list(locks: &dyn LockManager, q: ListLocks) -> ApiResult<LockList> {
    let mut all: Vec<LockView> = locks
        .list(&q.prefix.unwrap_or_default())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LockList { locks: all })
}
