//! The admin's view of a tenant's locks: list them and force-unlock one,
//! without the tenant's secret (`tenancy lock list --tenant X`, `tenancy
//! lock force-unlock --tenant X`). Keys are the tenant's own, as in the
//! tenant's `/v1/locks`.

use axum::extract::State;
use axum::http::StatusCode;

use super::admin::tenant_id;
use super::audit::Audit;
use super::tenant::{holder_only, lock_key, lock_list, ListLocks};
use crate::app_state::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::views::LockList;

/// The path of one tenant's lock.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TenantLockPath {
    id: String,
    key: String,
}

/// The query of an admin force-unlock.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForceUnlockQuery {
    /// The holder's lock id (from the listing).
    pub lock_id: String,
}

/// A tenant's held locks (below `prefix`, if given), sorted by key.
#[utoipa::path(get, path = "/v1/tenants/{id}/locks", tag = "admin",
    params(("id" = String, Path, description = "tenant id"), ListLocks),
    security(("admin" = [])),
    responses((status = 200, body = LockList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListLocks>,
) -> ApiResult<axum::Json<LockList>> {
    let id = tenant_id(&id)?;
    let tenant = state.registry().get(&id).await?;
    let locks = state.stores().locks(&tenant)?;
    Ok(axum::Json(lock_list(&*locks, q).await?))
}

/// Force-unlocks one of a tenant's locks, given its holder's lock id
/// (`lock_id`): 204, 404 when it is not held, 409 when another lock id holds it.
#[utoipa::path(delete, path = "/v1/tenants/{id}/locks/{key}", tag = "admin",
    params(("id" = String, Path, description = "tenant id"),
        ("key" = String, Path, description = "lock key, `:`-separated"), ForceUnlockQuery),
    security(("admin" = [])),
    responses((status = 204, description = "unlocked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn force_unlock(
    State(state): State<AppState>,
    audit: Audit,
    Path(p): Path<TenantLockPath>,
    Query(q): Query<ForceUnlockQuery>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&p.id)?;
    let key = lock_key(&p.key)?;
    let lock = tenancy_core::LockId::parse(&q.lock_id)?;
    let tenant = state.registry().get(&id).await?;
    let locks = state.stores().locks(&tenant)?;
    let done = locks.force_unlock(&key, lock).await;
    audit
        .record(
            &tenancy_core::audit::Scope::Tenant(id.clone()),
            "lock.force_unlock",
            tenancy_state::audited::lock_target(&key),
            &done,
            |_| tenancy_state::audited::unlock_detail(&lock, None),
        )
        .await;
    state.usage_cache().invalidate(&id);
    done.map_err(holder_only)?;
    Ok(StatusCode::NO_CONTENT)
}
