//! Named API keys over HTTP: a tenant manages its own (`/v1/keys`, owner
//! role), the admin any tenant's (`/v1/tenants/{id}/keys`). A new or
//! rotated key is in the answer once. Revocation and rotation go through
//! the watched registry, so this replica refuses a revoked key (and a
//! rotated one after its grace) from the next request on, and other
//! replicas within the auth refresh interval; see `tenancy_core::apikey`
//! for the rules and `tenancy_state::registry` (`keys.rs`) for the storage.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use tenancy_core::{KeyId, NewApiKey, TenantId};

use super::admin::tenant_id;
use super::audit::Audit;
use crate::app_state::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path};
use crate::views::{
    CreatedKeyView, KeyList, KeyView, NewKeyBody, RotateKeyBody, RotatedKeyView, MAX_KEY_SECONDS,
};

/// The path of one tenant's key (admin routes).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TenantKeyPath {
    id: String,
    key_id: String,
}

fn key_id(raw: &str) -> ApiResult<KeyId> {
    Ok(KeyId::parse(raw)?)
}

fn seconds(n: u64, what: &str) -> ApiResult<Duration> {
    if n > MAX_KEY_SECONDS {
        return Err(ApiError::bad_request(format!(
            "{what} is at most {MAX_KEY_SECONDS} seconds (10 years)"
        )));
    }
    Ok(Duration::from_secs(n))
}

/// The registry a key route works through: the request's audited view, so
/// every change is recorded with its caller and request id.
type Registry = std::sync::Arc<dyn tenancy_core::TenantRegistry>;

async fn list(
    state: &AppState,
    registry: Registry,
    tenant: &TenantId,
) -> ApiResult<axum::Json<KeyList>> {
    let now = state.clock().now();
    let keys = registry.keys(tenant).await?;
    Ok(axum::Json(KeyList {
        keys: keys.iter().map(|k| KeyView::new(k, now)).collect(),
    }))
}

async fn create(
    state: &AppState,
    registry: Registry,
    tenant: &TenantId,
    body: NewKeyBody,
) -> ApiResult<(StatusCode, axum::Json<CreatedKeyView>)> {
    let now = state.clock().now();
    let expires_at = match body.expires_in_seconds {
        None => None,
        Some(0) => {
            return Err(ApiError::bad_request(
                "expires_in_seconds must be at least 1",
            ))
        }
        Some(n) => {
            Some(now + tenancy_core::clock::chrono_duration(seconds(n, "expires_in_seconds")?))
        }
    };
    let created = registry
        .create_key(
            tenant,
            NewApiKey {
                name: body.name,
                role: body.role,
                expires_at,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKeyView {
            key: KeyView::new(&created.key, now),
            secret: created.secret.expose().to_string(),
        }),
    ))
}

async fn revoke(
    state: &AppState,
    registry: Registry,
    tenant: &TenantId,
    id: &str,
) -> ApiResult<axum::Json<KeyView>> {
    let id = key_id(id)?;
    let key = registry.revoke_key(tenant, &id).await?;
    Ok(axum::Json(KeyView::new(&key, state.clock().now())))
}

async fn rotate(
    state: &AppState,
    registry: Registry,
    tenant: &TenantId,
    id: &str,
    body: Option<RotateKeyBody>,
) -> ApiResult<(StatusCode, axum::Json<RotatedKeyView>)> {
    let id = key_id(id)?;
    let grace = seconds(
        body.and_then(|b| b.grace_seconds).unwrap_or(0),
        "grace_seconds",
    )?;
    let rotated = registry.rotate_key(tenant, &id, grace).await?;
    let now = state.clock().now();
    Ok((
        StatusCode::CREATED,
        axum::Json(RotatedKeyView {
            key: KeyView::new(&rotated.created.key, now),
            secret: rotated.created.secret.expose().to_string(),
            previous: KeyView::new(&rotated.previous, now),
        }),
    ))
}

// ---- the tenant's own keys (owner role, checked by the role guard) ----

/// The calling tenant's keys, oldest first (revoked and expired ones for 30 days).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn own_list(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    audit: Audit,
) -> ApiResult<axum::Json<KeyList>> {
    list(&state, audit.registry(), who.id()).await
}

/// The named key this request is made with, directly or through a session
/// opened with it (404 for the primary secret): how a client learns its role.
#[utoipa::path(get, path = "/v1/keys/current", tag = "keys",
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "made with the primary secret (role owner)", body = ErrorBody)))]
pub(crate) async fn own_current(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
) -> ApiResult<axum::Json<KeyView>> {
    let Some(key) = who.key() else {
        return Err(ApiError::not_found(
            "this request was made with the tenant's primary secret (role owner), not a named key",
        ));
    };
    Ok(axum::Json(KeyView::new(key, state.clock().now())))
}

/// Creates a named key for the calling tenant; the key is in the answer once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKeyBody,
    security(("api_key" = []), ("basic" = [])),
    responses((status = 201, body = CreatedKeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "a usable key has this name", body = ErrorBody),
        (status = 429, description = "100 usable keys already, or the request rate", body = ErrorBody)))]
pub(crate) async fn own_create(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    audit: Audit,
    Json(body): Json<NewKeyBody>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKeyView>)> {
    create(&state, audit.registry(), who.id(), body).await
}

/// Revokes one of the calling tenant's keys at once (again: a no-op).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "key id")),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn own_revoke(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    audit: Audit,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<KeyView>> {
    revoke(&state, audit.registry(), who.id(), &key).await
}

/// Replaces one of the calling tenant's keys with a new one of the same
/// name, role and expiry; the old key keeps working for `grace_seconds`.
#[utoipa::path(post, path = "/v1/keys/{key_id}/rotate", tag = "keys",
    params(("key_id" = String, Path, description = "key id")),
    request_body(content = Option<RotateKeyBody>),
    security(("api_key" = []), ("basic" = [])),
    responses((status = 201, body = RotatedKeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 412, description = "the key is revoked, expired or already rotated", body = ErrorBody)))]
pub(crate) async fn own_rotate(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    audit: Audit,
    Path(key): Path<String>,
    OptionalJson(body): OptionalJson<RotateKeyBody>,
) -> ApiResult<(StatusCode, axum::Json<RotatedKeyView>)> {
    rotate(&state, audit.registry(), who.id(), &key, body).await
}

// ---- any tenant's keys (admin) ----

/// A tenant's keys (admin).
#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = KeyList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_list(
    State(state): State<AppState>,
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<KeyList>> {
    list(&state, audit.registry(), &tenant_id(&id)?).await
}

/// Creates a named key for a tenant (admin); the key is in the answer once.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "admin", request_body = NewKeyBody,
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 201, body = CreatedKeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a usable key has this name", body = ErrorBody),
        (status = 412, description = "the tenant is deleted", body = ErrorBody),
        (status = 429, description = "100 usable keys already", body = ErrorBody)))]
pub(crate) async fn admin_create(
    State(state): State<AppState>,
    audit: Audit,
    Path(id): Path<String>,
    Json(body): Json<NewKeyBody>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKeyView>)> {
    create(&state, audit.registry(), &tenant_id(&id)?, body).await
}

/// Revokes one of a tenant's keys (admin).
#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id"),
        ("key_id" = String, Path, description = "key id")),
    security(("admin" = [])),
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_revoke(
    State(state): State<AppState>,
    audit: Audit,
    Path(p): Path<TenantKeyPath>,
) -> ApiResult<axum::Json<KeyView>> {
    revoke(&state, audit.registry(), &tenant_id(&p.id)?, &p.key_id).await
}

/// Rotates one of a tenant's keys (admin).
#[utoipa::path(post, path = "/v1/tenants/{id}/keys/{key_id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "tenant id"),
        ("key_id" = String, Path, description = "key id")),
    request_body(content = Option<RotateKeyBody>),
    security(("admin" = [])),
    responses((status = 201, body = RotatedKeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, description = "the key is revoked, expired or already rotated", body = ErrorBody)))]
pub(crate) async fn admin_rotate(
    State(state): State<AppState>,
    audit: Audit,
    Path(p): Path<TenantKeyPath>,
    OptionalJson(body): OptionalJson<RotateKeyBody>,
) -> ApiResult<(StatusCode, axum::Json<RotatedKeyView>)> {
    rotate(
        &state,
        audit.registry(),
        &tenant_id(&p.id)?,
        &p.key_id,
        body,
    )
    .await
}
