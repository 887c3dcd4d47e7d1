//! Server-issued sessions: a tenant exchanges its secret for a 7-day
//! session token (`POST /v1/sessions`), the admin its credential for an
//! 8-hour one (`POST /v1/admin/sessions`); both are listed and revocable,
//! and `.../current` is the caller's own. The token is in the answer once;
//! the registry keeps its SHA-256 (see `tenancy_state::registry::sessions`).
//! Revocations go through the watched registry, so this replica refuses
//! the token from the next request on, and others within the auth refresh
//! interval.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use tenancy_core::{Secret, SessionId, SessionOwner, TenantId};

use super::audit::Audit;
use crate::app_state::AppState;
use crate::auth::{bearer_token, presented_key, AdminCaller, AuthenticatedTenant};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{OptionalJson, Path};
use crate::views::{IssuedSessionView, SessionList, SessionView, TenantLogin};

fn session_id(raw: &str) -> ApiResult<SessionId> {
    Ok(SessionId::parse(raw)?)
}

fn issued(s: tenancy_core::IssuedSession) -> (StatusCode, axum::Json<IssuedSessionView>) {
    let session = SessionView::new(&s.session, Some(&s.session.id));
    (
        StatusCode::CREATED,
        axum::Json(IssuedSessionView {
            token: s.token.expose().to_string(),
            session,
        }),
    )
}

async fn list(
    state: &AppState,
    owner: &SessionOwner,
    current: Option<&SessionId>,
) -> ApiResult<axum::Json<SessionList>> {
    let sessions = state
        .registry()
        .sessions(owner)
        .await?
        .iter()
        .map(|s| SessionView::new(s, current))
        .collect();
    Ok(axum::Json(SessionList { sessions }))
}

/// The caller's own session, checked again (no cache: this is how a
/// client sees its session's times).
async fn current(state: &AppState, token: &str) -> ApiResult<axum::Json<SessionView>> {
    let token = Secret::new(token);
    let auth = state.registry().authenticate_session(&token).await?;
    Ok(axum::Json(SessionView::new(
        &auth.session,
        Some(&auth.session.id),
    )))
}

fn not_a_session() -> ApiError {
    ApiError::not_found(
        "this request was made with a secret, not a session token: there is no current session",
    )
}

/// Exchanges the tenant's secret (as `X-API-Key`, `Authorization: Bearer`
/// or Basic) for a session token, shown once. A session cannot open
/// another. The optional body names the tenant the secret must belong to
/// (401 for another tenant's secret, as for a wrong one).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", security(("api_key" = [])),
    request_body(content = Option<TenantLogin>),
    responses((status = 201, body = IssuedSessionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "suspended, expired or deleted tenant, or a session token instead of the secret", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    audit: Audit,
    who: AuthenticatedTenant,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<TenantLogin>,
) -> ApiResult<(StatusCode, axum::Json<IssuedSessionView>)> {
    if who.session().is_some() {
        return Err(ApiError::forbidden(
            "a session cannot open another session: log in with the tenant secret",
        ));
    }
    if let Some(named) = body.and_then(|b| b.tenant) {
        if named != who.id().as_str() {
            return Err(ApiError::unauthorized("invalid credentials"));
        }
    }
    let secret = Secret::new(presented_key(&headers)?.key);
    let s = audit.registry().login_tenant(who.id(), &secret).await?;
    Ok(issued(s))
}

/// The calling tenant's unexpired sessions (`current` marks the caller's).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("api_key" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn list_own(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
) -> ApiResult<axum::Json<SessionList>> {
    list(
        &state,
        &SessionOwner::Tenant(who.id().clone()),
        who.session(),
    )
    .await
}

/// The session this request is made with (404 when made with the secret).
#[utoipa::path(get, path = "/v1/sessions/current", tag = "sessions",
    security(("api_key" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn current_own(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    headers: HeaderMap,
) -> ApiResult<axum::Json<SessionView>> {
    if who.session().is_none() {
        return Err(not_a_session());
    }
    current(&state, &presented_key(&headers)?.key).await
}

/// Logout: ends the session this request is made with (404 when made
/// with the secret). Its token gets 401 from the next request on.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions",
    security(("api_key" = [])),
    responses((status = 204, description = "ended"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn logout(audit: Audit, who: AuthenticatedTenant) -> ApiResult<StatusCode> {
    let id = who.session().ok_or_else(not_a_session)?;
    audit
        .registry()
        .revoke_session(&SessionOwner::Tenant(who.id().clone()), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends one of the calling tenant's sessions.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session id")), security(("api_key" = [])),
    responses((status = 204, description = "ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_own(
    audit: Audit,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = session_id(&id)?;
    audit
        .registry()
        .revoke_session(&SessionOwner::Tenant(who.id().clone()), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exchanges the admin credential (`Authorization: Bearer <admin token>`)
/// for an admin session token, shown once. A session cannot open another.
#[utoipa::path(post, path = "/v1/admin/sessions", tag = "sessions", security(("admin" = [])),
    responses((status = 201, body = IssuedSessionView), (status = 401, body = ErrorBody),
        (status = 403, description = "a session token instead of the admin credential", body = ErrorBody)))]
pub(crate) async fn admin_login(
    audit: Audit,
    Extension(caller): Extension<AdminCaller>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, axum::Json<IssuedSessionView>)> {
    if caller.session().is_some() {
        return Err(ApiError::forbidden(
            "a session cannot open another session: log in with the admin credential",
        ));
    }
    let password = Secret::new(bearer_token(&headers)?);
    let s = audit.registry().login_admin(&password).await?;
    Ok(issued(s))
}

/// The unexpired admin sessions.
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "sessions", security(("admin" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody)))]
pub(crate) async fn admin_list(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
) -> ApiResult<axum::Json<SessionList>> {
    list(&state, &SessionOwner::Admin, caller.session()).await
}

/// The admin session this request is made with (404 when made with the
/// admin credential).
#[utoipa::path(get, path = "/v1/admin/sessions/current", tag = "sessions",
    security(("admin" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_current(
    State(state): State<AppState>,
    Extension(caller): Extension<AdminCaller>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<SessionView>> {
    if caller.session().is_none() {
        return Err(not_a_session());
    }
    current(&state, bearer_token(&headers)?).await
}

/// Admin logout: ends the admin session this request is made with.
#[utoipa::path(delete, path = "/v1/admin/sessions/current", tag = "sessions",
    security(("admin" = [])),
    responses((status = 204, description = "ended"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_logout(
    audit: Audit,
    Extension(caller): Extension<AdminCaller>,
) -> ApiResult<StatusCode> {
    let id = caller.session().ok_or_else(not_a_session)?;
    audit
        .registry()
        .revoke_session(&SessionOwner::Admin, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends one admin session.
#[utoipa::path(delete, path = "/v1/admin/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session id")), security(("admin" = [])),
    responses((status = 204, description = "ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_revoke(audit: Audit, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = session_id(&id)?;
    audit
        .registry()
        .revoke_session(&SessionOwner::Admin, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's unexpired sessions.
#[utoipa::path(get, path = "/v1/tenants/{id}/sessions", tag = "sessions",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn tenant_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SessionList>> {
    let id = TenantId::new(id)?;
    list(&state, &SessionOwner::Tenant(id), None).await
}

/// Ends one of a tenant's sessions.
#[utoipa::path(delete, path = "/v1/tenants/{id}/sessions/{session}", tag = "sessions",
    params(("id" = String, Path, description = "tenant id"),
        ("session" = String, Path, description = "session id")),
    security(("admin" = [])),
    responses((status = 204, description = "ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn tenant_revoke(
    audit: Audit,
    Path((id, session)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = TenantId::new(id)?;
    let session = session_id(&session)?;
    audit
        .registry()
        .revoke_session(&SessionOwner::Tenant(id), &session)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
