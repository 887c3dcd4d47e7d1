//! The audit trail over HTTP, and who a request acts as.
//!
//! - [`Audit`]: the extractor every changing handler takes. It builds the
//!   request's view of the audited registry (`tenancy_state::audited`)
//!   from what the admin guard or the tenant layer put into the request
//!   (the admin and its session; the tenant, its key and its session) and
//!   the request id, so each entry names who, from where (`server`) and
//!   which request. A change made through `AppState::registry()` instead
//!   is still recorded, as the server itself (actor `system`).
//! - [`login_refusals`]: a tenant login the tenant layer refuses never
//!   reaches a handler; this layer around `POST /v1/sessions` records it
//!   (aggregated, like every refused login). The admin guard does the same
//!   for `POST /v1/admin/sessions`.
//! - Routes: `GET /v1/audit` (admin: the admin log, or `?tenant=` a
//!   tenant's), `GET /v1/audit/head`, `GET /v1/audit/verify` (what `tenancy
//!   audit head|verify` print through a server), `GET /v1/tenant/audit` (the
//!   calling tenant's own log; owner role).
//!
//! A server built without an audit trail (`AppStateBuilder::audit` not
//! called) answers these routes 501.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tenancy_core::audit::{Actor, Entry, Filter, Head, Scope};
use tenancy_core::{Clock, Error, Role, StateBackend, TenantId, TenantRegistry};
use tenancy_state::audited::{AuditContext, Audited};
use tower_http::request_id::RequestId;
use utoipa::IntoParams;

use crate::app_state::{AppState, AuditedRegistry};
use crate::auth::{AdminCaller, AuthenticatedTenant, TenantLabel};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Query;
use crate::metrics::Metrics;
use crate::views::{AuditHeadView, AuditList, AuditVerificationView};

/// The server's audited registry over `registry`, its trail on `backend`:
/// a failed append is logged as an error and counted in the metrics.
pub(crate) fn audited(
    registry: Arc<dyn TenantRegistry>,
    backend: Arc<dyn StateBackend>,
    clock: Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> AuditedRegistry {
    let metrics = metrics.clone();
    Audited::new(registry, backend)
        .with_clock(clock)
        .on_failure(Arc::new(move |f| {
            metrics.count_audit_unrecorded();
            tracing::error!(
                log = %f.scope,
                action = %f.entry.action,
                target = %f.entry.target,
                request_id = f.entry.request_id.as_deref().unwrap_or("-"),
                error = %f.error,
                "the change stands but its audit entry could not be written"
            );
        }))
        .with_context(AuditContext::server(Actor::system(), None))
}

/// The request id of a request (from its extensions), as its entries hold it.
pub(crate) fn request_id_of(extensions: &axum::http::Extensions) -> Option<String> {
    extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_string)
}

fn request_id(parts: &Parts) -> Option<String> {
    request_id_of(&parts.extensions)
}

/// Who a request acts as: the admin (and its session), the tenant or its
/// key (and its session), or nobody yet.
fn actor(parts: &Parts) -> Actor {
    if let Some(admin) = parts.extensions.get::<AdminCaller>() {
        let a = Actor::admin();
        return match admin.session() {
            Some(s) => a.in_session(s.to_string()),
            None => a,
        };
    }
    if let Some(who) = parts.extensions.get::<AuthenticatedTenant>() {
        let a = match who.key() {
            Some(k) => Actor::key(k.id.as_str(), &k.name),
            None => Actor::tenant(who.id()),
        };
        return match who.session() {
            Some(s) => a.in_session(s.to_string()),
            None => a,
        };
    }
    Actor::anonymous()
}

/// The request's view of the audited registry (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    view: Option<AuditedRegistry>,
    plain: Arc<dyn TenantRegistry>,
}

impl Audit {
    /// The registry to make the request's changes through.
    pub(crate) fn registry(&self) -> Arc<dyn TenantRegistry> {
        match &self.view {
            Some(v) => Arc::new(v.clone()),
            None => self.plain.clone(),
        }
    }

    /// Records what a change made outside the registry came to (stack
    /// rollback and delete, lock force-unlock): `Audited::record_result`.
    pub(crate) async fn record<T>(
        &self,
        scope: &Scope,
        action: &str,
        target: impl Into<String>,
        result: &tenancy_core::Result<T>,
        detail: impl FnOnce(&T) -> Value,
    ) {
        if let Some(v) = &self.view {
            v.record_result(scope, action, target, result, detail).await;
        }
    }
}

impl FromRequestParts<AppState> for Audit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let view = state
            .audit()
            .map(|a| a.with_context(AuditContext::server(actor(parts), request_id(parts))));
        Ok(Audit {
            view,
            plain: state.registry().clone(),
        })
    }
}

/// The most login bodies this layer reads to learn the tenant named.
const LOGIN_BODY_LIMIT: usize = 64 * 1024;

/// Around `POST /v1/sessions`: records a login the tenant layer refused
/// (a handler that ran recorded its own through the registry). The tenant
/// is the one the body or the Basic user names, if any.
pub(crate) async fn login_refusals(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(audit) = state.audit() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, LOGIN_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(LOGIN_BODY_LIMIT).into_response(),
    };
    let named = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("tenant").and_then(Value::as_str).map(str::to_string))
        .or_else(|| {
            crate::auth::presented_key(&parts.headers)
                .ok()
                .and_then(|p| p.user)
        })
        .and_then(|t| TenantId::new(t).ok());
    let rid = request_id(&parts);
    let res = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let refused = match res.status() {
        StatusCode::UNAUTHORIZED => Some(Error::unauthorized("invalid credentials")),
        StatusCode::FORBIDDEN => Some(Error::forbidden("refused")),
        _ => None,
    };
    // A response with the tenant label came from the handler: the
    // registry recorded what it refused.
    if let (Some(e), None) = (refused, res.extensions().get::<TenantLabel>()) {
        let view = audit.with_context(AuditContext::server(Actor::anonymous(), rid));
        view.record_refused_login(named.as_ref(), &e).await;
    }
    res
}

/// Records an admin login the admin guard refused (`POST /v1/admin/sessions`).
pub(crate) async fn admin_login_refused(state: &AppState, rid: Option<String>, error: &ApiError) {
    let Some(audit) = state.audit() else { return };
    let e = match error.status() {
        StatusCode::UNAUTHORIZED => Error::unauthorized("invalid admin credentials"),
        StatusCode::FORBIDDEN => Error::forbidden("refused"),
        _ => return,
    };
    audit
        .with_context(AuditContext::server(Actor::anonymous(), rid))
        .record_refused_admin_login(&e)
        .await;
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListAudit {
    /// A tenant's log instead of the admin log.
    pub tenant: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only this action (`tenant.create`), or actions below a prefix ending in `.` (`tenant.`).
    pub action: Option<String>,
    /// The most entries to return, the newest (default and maximum 10 000).
    pub limit: Option<u64>,
}

/// The query of `GET /v1/tenant/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListOwnAudit {
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only this action (`key.create`), or actions below a prefix ending in `.` (`key.`).
    pub action: Option<String>,
    /// The most entries to return, the newest (default and maximum 10 000).
    pub limit: Option<u64>,
}

/// The query of `GET /v1/audit/head`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditScope {
    /// A tenant's log instead of the admin log.
    pub tenant: Option<String>,
}

/// The query of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyAudit {
    /// A tenant's log instead of the admin log.
    pub tenant: Option<String>,
    /// A head recorded earlier (`<seq>:<sha256 hex>`, from `GET /v1/audit/head`).
    pub head: Option<String>,
}

/// The most entries one listing returns.
pub(crate) const MAX_AUDIT_LIST: u64 = 10_000;

/// An action filter: 1 to 64 of `a-z 0-9 . _`.
pub(crate) const ACTION_PATTERN: &str = "^[a-z0-9._]{1,64}$";

/// A chain head in a query: `<seq>:<sha256 hex>`.
pub(crate) const HEAD_PATTERN: &str = "^[0-9]{1,18}:[0-9a-fA-F]{64}$";

/// The `action` filter, checked as [`ACTION_PATTERN`] says.
fn action(raw: Option<String>) -> ApiResult<Option<String>> {
    match raw {
        Some(a)
            if !(1..=64).contains(&a.len())
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_') =>
        {
            Err(ApiError::bad_request(
                "action must be 1 to 64 of a-z, 0-9, '.' and '_' (e.g. tenant.create, or tenant. for every tenant action)",
            ))
        }
        a => Ok(a),
    }
}

/// The `head` query, checked as [`HEAD_PATTERN`] says.
fn head_query(raw: Option<&str>) -> ApiResult<Option<Head>> {
    let Some(raw) = raw else { return Ok(None) };
    let shaped = raw.split_once(':').is_some_and(|(seq, hash)| {
        (1..=18).contains(&seq.len())
            && seq.bytes().all(|b| b.is_ascii_digit())
            && hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if !shaped {
        return Err(ApiError::bad_request(
            "head must be <seq>:<sha256 hex>, as `tenancy audit head` prints it",
        ));
    }
    Ok(Some(raw.parse()?))
}

fn trail(state: &AppState) -> ApiResult<&AuditedRegistry> {
    state.audit().ok_or_else(|| {
        Error::not_implemented("this server keeps no audit trail (AppStateBuilder::audit)").into()
    })
}

fn scope_of(tenant: Option<&str>) -> ApiResult<Scope> {
    Ok(match tenant {
        None => Scope::Admin,
        Some(t) => Scope::Tenant(TenantId::new(t)?),
    })
}

fn filter(since: Option<&str>, action_raw: Option<String>) -> ApiResult<Filter> {
    let since = since
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "since={} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)",
                        s.chars().take(50).collect::<String>().escape_debug()
                    ))
                })
        })
        .transpose()?;
    Ok(Filter {
        since,
        action: action(action_raw)?,
    })
}

async fn listing(
    state: &AppState,
    scope: Scope,
    filter: Filter,
    limit: Option<u64>,
) -> ApiResult<axum::Json<AuditList>> {
    let limit = limit.unwrap_or(MAX_AUDIT_LIST);
    if !(1..=MAX_AUDIT_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_AUDIT_LIST}"
        )));
    }
    let entries: Vec<Entry> = trail(state)?.log().list(&scope, &filter).await?;
    Ok(axum::Json(AuditList::new(&scope, &entries, limit as usize)))
}

/// The admin log, or a tenant's (`?tenant=`), oldest first: the newest
/// `limit` entries that pass the filters.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(ListAudit),
    security(("admin" = [])),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListAudit>,
) -> ApiResult<axum::Json<AuditList>> {
    let scope = scope_of(q.tenant.as_deref())?;
    listing(
        &state,
        scope,
        filter(q.since.as_deref(), q.action)?,
        q.limit,
    )
    .await
}

/// The calling tenant's own log (owner role), oldest first.
#[utoipa::path(get, path = "/v1/tenant/audit", tag = "audit", params(ListOwnAudit),
    security(("api_key" = [])),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 501, body = ErrorBody)))]
pub(crate) async fn list_own(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Query(q): Query<ListOwnAudit>,
) -> ApiResult<axum::Json<AuditList>> {
    who.require(Role::Owner)?;
    let scope = Scope::Tenant(who.id().clone());
    listing(
        &state,
        scope,
        filter(q.since.as_deref(), q.action)?,
        q.limit,
    )
    .await
}

/// The head of the admin log or a tenant's (`<seq>:<sha256 hex>`, `null`
/// while the log is empty), to keep outside the store.
#[utoipa::path(get, path = "/v1/audit/head", tag = "audit", params(AuditScope),
    security(("admin" = [])),
    responses((status = 200, body = AuditHeadView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub(crate) async fn head(
    State(state): State<AppState>,
    Query(q): Query<AuditScope>,
) -> ApiResult<axum::Json<AuditHeadView>> {
    let scope = scope_of(q.tenant.as_deref())?;
    let head = trail(&state)?.log().head(&scope).await?;
    Ok(axum::Json(AuditHeadView::new(&scope, head.as_ref())))
}

/// Checks the whole chain of the admin log or a tenant's (and, given
/// `head`, that the head recorded then is still in it): 200 with every
/// modified, missing, moved or rewritten entry (`intact: false` when there
/// is one).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(VerifyAudit),
    security(("admin" = [])),
    responses((status = 200, body = AuditVerificationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Query(q): Query<VerifyAudit>,
) -> ApiResult<axum::Json<AuditVerificationView>> {
    let scope = scope_of(q.tenant.as_deref())?;
    let expected = head_query(q.head.as_deref())?;
    let v = trail(&state)?
        .log()
        .verify(&scope, expected.as_ref())
        .await?;
    Ok(axum::Json(AuditVerificationView::new(&scope, &v)))
}
