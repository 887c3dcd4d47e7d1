//! The reconciler's schedule: every tenant's jobs and workers are checked
//! against its quota reservations at start and every `reconcile_interval`
//! (what one pass repairs is described in `jobs.rs`). Replicas may run it at
//! once: every repair is a compare-and-swap or idempotent. The same
//! schedule writes the audit trail's counted refusals whose window has
//! closed (`tenancy_state::audited`).

use futures::StreamExt;
use tenancy_core::{Resource, TenantFilter, TenantStatus};

use crate::app_state::AppState;
use crate::jobs::Reconciled;

/// Reconciles every tenant that is not deleted and holds reservations of
/// the job resources (a tenant without any has no live job or worker, so
/// nothing to repair).
/// Returns the sum of what was repaired; a tenant that fails is logged and
/// skipped.
pub(crate) async fn all(state: &AppState) -> Reconciled {
    let mut total = Reconciled::default();
    let mut tenants = state.registry().list(TenantFilter::default());
    while let Some(t) = tenants.next().await {
        let Ok(t) = t else { continue };
        if t.status == TenantStatus::Deleted {
            continue;
        }
        match state.registry().reservations(&t.id).await {
            Ok(listed)
                if !listed
                    .iter()
                    .any(|l| Resource::JOBS_AND_WORKERS.contains(&l.reservation.resource)) =>
            {
                continue
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e, "cannot read reservations to reconcile");
                continue;
            }
        }
        let jobs = match state.jobs(&t) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e, "cannot open the tenant's state to reconcile");
                continue;
            }
        };
        match jobs.reconcile().await {
            Ok(r) => {
                total += r;
                if r.changed() {
                    state.usage_cache().invalidate(&t.id);
                }
            }
            Err(e) => tracing::warn!(tenant = %t.id, error = %e, "reconcile failed"),
        }
    }
    total
}

/// Runs [`all`] now and then every `reconcile_interval`, until the task is
/// aborted.
pub(crate) fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state
            .config()
            .reconcile_interval
            .max(std::time::Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            all(&state).await;
            if let Some(audit) = state.audit() {
                audit.flush_refusals().await;
            }
        }
    })
}
