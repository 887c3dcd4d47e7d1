//! The admin API (`Authorization: Bearer <admin token or admin session>`):
//! tenant lifecycle, credentials, stats, purge, and quota reservations and
//! usage events for work run outside the server (what the HTTP client's
//! `TenantRegistry` needs).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tenancy_core::{
    NewTenant, Tenant, TenantFilter, TenantId, TenantRegistryExt, TenantStatus, TenantUpdate,
};
use utoipa::IntoParams;

use super::audit::Audit;
use crate::app_state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::views::{
    AdminCredentialChanged, AdminCredentialInfo, CommitReservation, CreateTenant,
    NewAdminCredential, PatchTenant, PurgeTenant, Purged, RecordUsage, ReleaseReservation,
    Released, ReservationList, ReserveQuota, StatsView, Suspend, TenantList, TenantView,
    TenantWithSecret,
};

/// Refuses requests without a valid admin token or admin session; puts the
/// [`AdminCaller`](crate::AdminCaller) into the request's extensions.
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.admin().authorize(req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/admin/sessions"
            {
                let rid = super::audit::request_id_of(req.extensions());
                super::audit::admin_login_refused(&state, rid, &e).await;
            }
            e.into_response()
        }
    }
}

/// A tenant id from a path, as a 400 when it is not one.
pub(crate) fn tenant_id(raw: &str) -> ApiResult<TenantId> {
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

/// Creates a tenant; its secret is in the answer, once.
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    security(("admin" = [])),
    responses((status = 201, body = TenantWithSecret), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    audit: Audit,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, axum::Json<TenantWithSecret>)> {
    let new = NewTenant {
        id: body.id.as_deref().map(tenant_id).transpose()?,
        display_name: body.display_name,
        email: body.email,
        plan: body.plan.unwrap_or_default(),
        secret_prefix: body.secret_prefix,
        limits: body.limits.unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
        expires_at: body.expires_at,
    };
    let created = audit.registry().create(new).await?;
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
    /// `usage`: each tenant with its usage counters (one more read per tenant).
    pub include: Option<String>,
}

/// The query of `GET /v1/tenants/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetTenant {
    /// `usage`: the tenant with its usage counters.
    pub include: Option<String>,
}

/// True for `include=usage`; 400 for any other value.
fn include_usage(include: Option<&str>) -> ApiResult<bool> {
    match include {
        None => Ok(false),
        Some("usage") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "include={} is not known; the one value is `usage`",
            other.chars().take(50).collect::<String>().escape_debug()
        ))),
    }
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
    let with_usage = include_usage(q.include.as_deref())?;
    let now = state.clock().now();
    let listed = state.registry().list_all(filter).await?;
    // Each tenant's usage is one read: many in flight, answered in order.
    let state = &state;
    let tenants = futures::stream::iter(listed)
        .map(|t| async move { view_of(state, &t, now, with_usage).await })
        .buffered(tenancy_core::GET_MANY_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(axum::Json(TenantList { tenants }))
}

/// One tenant, with its effective status.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), GetTenant), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<GetTenant>,
) -> ApiResult<axum::Json<TenantView>> {
    let with_usage = include_usage(q.include.as_deref())?;
    let t = state.registry().get(&tenant_id(&id)?).await?;
    let now = state.clock().now();
    Ok(axum::Json(view_of(&state, &t, now, with_usage).await?))
}

/// The view of `t`, with its usage counters when `with_usage`.
async fn view_of(
    state: &AppState,
    t: &Tenant,
    now: chrono::DateTime<chrono::Utc>,
    with_usage: bool,
) -> ApiResult<TenantView> {
    let view = TenantView::new(t, now);
    Ok(if with_usage {
        view.with_usage(state.usage(t).await?)
    } else {
        view
    })
}

/// Updates a tenant: 412 when `expected_revision` is stale, 409 when the tenant is deleted.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "admin", request_body = PatchTenant,
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    audit: Audit,
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
    let t = match audit.registry().update(&id, update).await {
        Ok(t) => t,
        // The registry refuses both a stale `expected_revision` and a deleted
        // tenant as a precondition; only the first is one the client set
        // (412): a deleted tenant is a refused transition (409), like
        // suspending or deleting it again.
        Err(e @ tenancy_core::Error::Precondition { .. }) => {
            return Err(match audit.registry().get(&id).await {
                Ok(t) if t.status == TenantStatus::Deleted => lifecycle(e),
                _ => e.into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(axum::Json(changed(&state, &t)))
}

/// Soft-deletes a tenant (its state is archived); its key stops working at once.
///
/// The record stays: `GET /v1/tenants/{id}` answers 200 with `status: deleted`
/// and `deleted_at` until `POST /v1/tenants/{id}/purge` removes it after the
/// grace period (as a Kubernetes namespace reads as `Terminating`).
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let id = tenant_id(&id)?;
    let registry = audit.registry();
    // Run to the end even if the client goes away: the archive move is not
    // something to stop halfway.
    let t = tokio::spawn(async move { registry.delete(&id).await })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(lifecycle)?;
    Ok(axum::Json(changed(&state, &t)))
}

/// Suspends a tenant: its requests get 403 from the next one on.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "admin",
    request_body(content = Option<Suspend>),
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn suspend(
    State(state): State<AppState>,
    audit: Audit,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Suspend>,
) -> ApiResult<axum::Json<TenantView>> {
    let reason = body.and_then(|b| b.reason);
    let t = audit
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
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantView>> {
    let t = audit
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
    audit: Audit,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantWithSecret>> {
    let created = audit
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

/// Replaces the one admin credential and bumps its generation: every admin
/// CLI session and every admin token cached by any replica stops working
/// (the old token gets 401 on its next request).
#[utoipa::path(put, path = "/v1/admin/credential", tag = "admin",
    request_body = NewAdminCredential, security(("admin" = [])),
    responses((status = 200, body = AdminCredentialChanged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn change_credential(
    State(state): State<AppState>,
    audit: Audit,
    Json(body): Json<NewAdminCredential>,
) -> ApiResult<axum::Json<AdminCredentialChanged>> {
    let n = body.token.len();
    if !tenancy_state::registry::ADMIN_PASSWORD_BYTES.contains(&n) {
        return Err(ApiError::bad_request(format!(
            "the admin token must be 8 to 72 bytes (this one is {n}); a longer one would be cut by bcrypt"
        )));
    }
    let generation = audit
        .registry()
        .set_admin_password(&tenancy_core::Secret::new(body.token))
        .await?;
    state.admin().forget_all();
    Ok(axum::Json(AdminCredentialChanged { generation }))
}

/// The admin credential's generation (an admin session of another
/// generation is refused). Also how a client checks an admin token.
#[utoipa::path(get, path = "/v1/admin/credential", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = AdminCredentialInfo), (status = 401, body = ErrorBody)))]
pub(crate) async fn credential(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<AdminCredentialInfo>> {
    let generation = state.registry().admin_generation().await?;
    Ok(axum::Json(AdminCredentialInfo { generation }))
}

/// Removes a deleted tenant's archived state older than the grace period
/// (409 for a tenant that is not deleted). The record stays: ids are never
/// reused.
#[utoipa::path(post, path = "/v1/tenants/{id}/purge", tag = "admin", request_body = PurgeTenant,
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = Purged), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn purge(
    audit: Audit,
    Path(id): Path<String>,
    Json(body): Json<PurgeTenant>,
) -> ApiResult<axum::Json<Purged>> {
    let id = tenant_id(&id)?;
    let grace = std::time::Duration::from_secs(body.grace_seconds);
    let registry = audit.registry();
    // Deletes many objects: run to the end even if the client goes away.
    let removed = tokio::spawn(async move { registry.purge(&id, grace).await })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(lifecycle)?;
    Ok(axum::Json(Purged { removed }))
}

/// The reservation of a body, checked against the path.
fn named(id: &str, reservation: &str, r: &tenancy_core::Reservation) -> ApiResult<()> {
    let id = tenant_id(id)?;
    if r.tenant != id || r.id.hyphenated().to_string() != reservation {
        return Err(ApiError::bad_request(
            "the reservation in the body is not the one the path names",
        ));
    }
    Ok(())
}

/// Takes quota for a tenant (for work the server does not run itself):
/// 201 with the reservation, or 429 `quota_exceeded` taking nothing.
/// Commit or release it; a pending one expires on its own.
#[utoipa::path(post, path = "/v1/tenants/{id}/reservations", tag = "quotas",
    request_body = ReserveQuota, params(("id" = String, Path, description = "tenant id")),
    security(("admin" = [])),
    responses((status = 201, description = "the reservation", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn reserve(
    audit: Audit,
    Path(id): Path<String>,
    Json(body): Json<ReserveQuota>,
) -> ApiResult<(StatusCode, axum::Json<tenancy_core::Reservation>)> {
    let id = tenant_id(&id)?;
    let r = audit
        .registry()
        .reserve(&id, body.resource, body.amount)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(r)))
}

/// The reservations a tenant's usage record lists.
#[utoipa::path(get, path = "/v1/tenants/{id}/reservations", tag = "quotas",
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, body = ReservationList), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn reservations(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ReservationList>> {
    let reservations = state.registry().reservations(&tenant_id(&id)?).await?;
    Ok(axum::Json(ReservationList { reservations }))
}

/// Commits a reservation: its capacity stays in use until released (412
/// when it was committed already or expired).
#[utoipa::path(post, path = "/v1/tenants/{id}/reservations/{reservation}/commit", tag = "quotas",
    request_body = CommitReservation,
    params(("id" = String, Path, description = "tenant id"),
        ("reservation" = String, Path, description = "reservation id")),
    security(("admin" = [])),
    responses((status = 204, description = "committed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody)))]
pub(crate) async fn commit(
    State(state): State<AppState>,
    Path((id, reservation)): Path<(String, String)>,
    Json(body): Json<CommitReservation>,
) -> ApiResult<StatusCode> {
    named(&id, &reservation, &body.reservation)?;
    state.registry().commit(&body.reservation).await?;
    state.usage_cache().invalidate(&body.reservation.tenant);
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a reservation's capacity back (idempotent); with an `event`, the
/// release and the event are one write, counted once.
#[utoipa::path(post, path = "/v1/tenants/{id}/reservations/{reservation}/release", tag = "quotas",
    request_body = ReleaseReservation,
    params(("id" = String, Path, description = "tenant id"),
        ("reservation" = String, Path, description = "reservation id")),
    security(("admin" = [])),
    responses((status = 200, body = Released), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn release(
    State(state): State<AppState>,
    Path((id, reservation)): Path<(String, String)>,
    Json(body): Json<ReleaseReservation>,
) -> ApiResult<axum::Json<Released>> {
    named(&id, &reservation, &body.reservation)?;
    let registry = state.registry();
    let released = match body.event {
        Some(event) => registry.release_recording(&body.reservation, event).await?,
        None => {
            registry.release(&body.reservation).await?;
            true
        }
    };
    state.usage_cache().invalidate(&body.reservation.tenant);
    Ok(axum::Json(Released { released }))
}

/// Records a usage event (a job outcome, a cost) and returns the usage.
#[utoipa::path(post, path = "/v1/tenants/{id}/usage", tag = "quotas", request_body = RecordUsage,
    params(("id" = String, Path, description = "tenant id")), security(("admin" = [])),
    responses((status = 200, description = "the usage counters", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn record_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<RecordUsage>,
) -> ApiResult<axum::Json<tenancy_core::Usage>> {
    let id = tenant_id(&id)?;
    let usage = state.registry().record_usage(&id, body.event).await?;
    state.usage_cache().invalidate(&id);
    Ok(axum::Json(usage))
}
