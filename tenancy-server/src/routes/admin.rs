//! The admin API (`Authorization: Bearer <admin token>`): tenant lifecycle,
//! credentials and stats.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenancy_core::{
    LimitOverrides, NewTenant, Plan, Tenant, TenantFilter, TenantId, TenantRegistryExt,
    TenantStatus, TenantUpdate,
};
use utoipa::{IntoParams, ToSchema};

use crate::app_state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::views::{StatsView, TenantList, TenantView, TenantWithSecret};

/// Refuses requests without a valid admin token.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.admin().check(req.headers()).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    TenantId::new(raw).map_err(ApiError::from)
}

/// A lifecycle change refused because of the tenant's status is a 409.
fn lifecycle(e: tenancy_core::Error) -> ApiError {
    match e {
        tenancy_core::Error::Precondition { what } => ApiError::conflict(what),
        e => e.into(),
    }
}

/// Renders a changed tenant (the registry already told the auth cache).
fn changed(state: &AppState, t: &Tenant) -> TenantView {
    if t.status == TenantStatus::Deleted {
        state.metrics().forget_tenant(&t.id);
    }
    TenantView::new(t, state.clock().now())
}

/// The body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    /// The tenant id: a lowercase DNS label, 3 to 63 characters.
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Contact e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Plan: `free` (default), `basic`, `pro`, `enterprise`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Plan>,
    /// Overrides of the plan's limits.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<LimitOverrides>,
    /// The secret's prefix, 2 to 8 lowercase letters.
    #[serde(default)]
    pub secret_prefix: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// When the tenant expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a tenant; its secret is in the answer, once.
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    security(("admin" = [])),
    responses((status = 201, body = TenantWithSecret), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, axum::Json<TenantWithSecret>)> {
    let new = NewTenant {
        id: Some(tenant_id(&body.id)?),
        display_name: body.display_name,
        email: body.email,
        plan: body.plan.unwrap_or_default(),
        secret_prefix: body.secret_prefix,
        limits: body.limits.unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
        expires_at: body.expires_at,
    };
    let created = state.registry().create(new).await?;
    let now = state.clock().now();
    Ok((
        StatusCode::CREATED,
        axum::Json(TenantWithSecret {
            tenant: TenantView::new(&created.tenant, now),
            secret: created.secret.expose().to_string(),
        }),
    ))
}

/// Filters of `GET /v1/tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTenants {
    /// Only tenants with this status.
    pub status: Option<String>,
    /// Only tenants on this plan.
    pub plan: Option<String>,
}

/// Lists tenants, sorted by id.
#[utoipa::path(get, path = "/v1/tenants", tag = "admin", params(ListTenants),
    security(("admin" = [])),
    responses((status = 200, body = TenantList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListTenants>,
) -> ApiResult<axum::Json<TenantList>> {
    let filter = TenantFilter {
        status: q.status.as_deref().map(str::parse).transpose()?,
        plan: q.plan.as_deref().map(str::parse).transpose()?,
    };
    let now = state.clock().now();
    let tenants = state
        .registry()
        .list_all(filter)
        .await?
        .iter()
        .map(|t| TenantView::new(t, now))
        .collect();
    Ok(axum::Json(TenantList { tenants }))
}

/// One tenant, with its effective status.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let t = state.registry().get(&tenant_id(&id)?).await?;
    Ok(axum::Json(TenantView::new(&t, state.clock().now())))
}

/// The body of `PATCH /v1/tenants/{id}`: fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTenant {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// New e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// New plan.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Plan>,
    /// Limit overrides, merged over the current ones.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<LimitOverrides>,
    /// Metadata entries to set.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// New expiry time.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Refuse with 412 unless the tenant is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// Updates a tenant: 412 when `expected_revision` is stale, 409 when the tenant is deleted.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "admin", request_body = PatchTenant,
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<PatchTenant>,
) -> ApiResult<axum::Json<TenantView>> {
    let update = TenantUpdate {
        display_name: body.display_name,
        email: body.email,
        plan: body.plan,
        limits: body.limits,
        metadata: body.metadata,
        expires_at: body.expires_at,
        expected_revision: body.expected_revision,
    };
    let id = tenant_id(&id)?;
    let t = match state.registry().update(&id, update).await {
        Ok(t) => t,
        // The registry refuses both a stale `expected_revision` and a deleted
        // tenant as a precondition; only the first is one the client set
        // (412): a deleted tenant is a refused transition (409), like
        // suspending or deleting it again.
        Err(e @ tenancy_core::Error::Precondition { .. }) => {
            return Err(match state.registry().get(&id).await {
                Ok(t) if t.status == TenantStatus::Deleted => lifecycle(e),
                _ => e.into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(axum::Json(changed(&state, &t)))
}

/// Soft-deletes a tenant (its state is archived); its key stops working at once.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let id = tenant_id(&id)?;
    let registry = state.registry().clone();
    // Run to the end even if the client goes away: the archive move is not
    // something to stop halfway.
    let t = tokio::spawn(async move { registry.delete(&id).await })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(lifecycle)?;
    Ok(axum::Json(changed(&state, &t)))
}

/// The optional body of `POST /v1/tenants/{id}/suspend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Suspend {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Suspends a tenant: its requests get 403 from the next one on.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "admin",
    request_body(content = Option<Suspend>),
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn suspend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Suspend>,
) -> ApiResult<axum::Json<TenantView>> {
    let reason = body.and_then(|b| b.reason);
    let t = state
        .registry()
        .suspend(&tenant_id(&id)?, reason)
        .await
        .map_err(lifecycle)?;
    Ok(axum::Json(changed(&state, &t)))
}

/// Activates a suspended or expired tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/activate", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn activate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let t = state
        .registry()
        .activate(&tenant_id(&id)?)
        .await
        .map_err(lifecycle)?;
    Ok(axum::Json(changed(&state, &t)))
}

/// Issues a new secret; the old one stops working at once.
#[utoipa::path(post, path = "/v1/tenants/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantWithSecret), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantWithSecret>> {
    let created = state
        .registry()
        .rotate(&tenant_id(&id)?)
        .await
        .map_err(lifecycle)?;
    Ok(axum::Json(TenantWithSecret {
        tenant: changed(&state, &created.tenant),
        secret: created.secret.expose().to_string(),
    }))
}

/// Usage and remaining quota of a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}/stats", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = StatsView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<StatsView>> {
    let id = tenant_id(&id)?;
    let t = state.registry().get(&id).await?;
    let usage = state.usage(&t).await?;
    if t.status != TenantStatus::Deleted {
        state.metrics().record_usage(&t, &usage);
    }
    Ok(axum::Json(StatsView::new(&t, usage, state.clock().now())))
}

/// The body of `PUT /v1/admin/credential`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAdminCredential {
    /// The new admin token, 8 to 72 bytes.
    pub token: String,
}

/// The answer of `PUT /v1/admin/credential`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AdminCredentialChanged {
    /// The admin credential's new generation.
    pub generation: u64,
}

/// Replaces the one admin credential and bumps its generation: every admin
/// CLI session and every admin token cached by any replica stops working
/// (the old token gets 401 on its next request).
#[utoipa::path(put, path = "/v1/admin/credential", tag = "admin",
    request_body = NewAdminCredential, security(("admin" = [])),
    responses((status = 200, body = AdminCredentialChanged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn change_credential(
    State(state): State<AppState>,
    Json(body): Json<NewAdminCredential>,
) -> ApiResult<axum::Json<AdminCredentialChanged>> {
    let n = body.token.len();
    if !tenancy_state::registry::ADMIN_PASSWORD_BYTES.contains(&n) {
        return Err(ApiError::bad_request(format!(
            "the admin token must be 8 to 72 bytes (this one is {n}); a longer one would be cut by bcrypt"
        )));
    }
    let generation = state
        .registry()
        .set_admin_password(&tenancy_core::Secret::new(body.token))
        .await?;
    state.admin().forget_all();
    Ok(axum::Json(AdminCredentialChanged { generation }))
}
