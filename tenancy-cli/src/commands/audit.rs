//! The audit trail in the CLI: how a command on a store acts through the
//! audited registry (`tenancy_state::audited`: `via: cli`, the admin or the
//! tenant of the session as the actor), what happens after the command
//! (counted refusals are written, entries that could not be written are
//! warned about), and the `tenancy audit list|verify|head|prune` commands:
//! on a store through `tenancy_state::audit::AuditLog`, in remote mode
//! through the server's `/v1/audit` routes (prune works on a store only).
//!
//! `audit verify` exits 8 (`PROBLEMS`, as `doctor` does) when the chain is
//! not intact, after naming every problem.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tenancy_core::audit::{Actor, Filter, Head, Scope};
use tenancy_core::{Clock, StateBackend, TenantId, TenantRegistry};
use tenancy_server::views::{AuditEntryView, AuditHeadView, AuditList, AuditVerificationView};
use tenancy_state::audited::{AuditContext, Audited};

use super::{Ctx, Services, Target};
use crate::cli::{AuditListArgs, AuditPruneArgs, AuditScopeArgs, AuditVerifyArgs};
use crate::exit::{CliError, PROBLEMS};
use crate::io::Cancelled;
use crate::output::{time, Cell, Style};

/// The store's audited registry.
pub(crate) type AuditedRegistry = Audited<Arc<dyn TenantRegistry>>;

/// The entries that could not be written during a command, for the warning
/// after it.
pub(crate) type Unrecorded = Arc<Mutex<Vec<String>>>;

/// `registry` audited on `backend` (acting as the store's holder until a
/// command names its actor), and where its failed appends are kept.
pub(crate) fn audited(
    registry: Arc<dyn TenantRegistry>,
    backend: Arc<dyn StateBackend>,
    clock: Arc<dyn Clock>,
) -> (AuditedRegistry, Unrecorded) {
    let unrecorded: Unrecorded = Arc::new(Mutex::new(Vec::new()));
    let sink = unrecorded.clone();
    let audited = Audited::new(registry, backend)
        .with_clock(clock)
        .on_failure(Arc::new(move |f| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                "{} on {} ({}): {}",
                f.entry.action, f.entry.target, f.scope, f.error
            ));
        }));
    (audited, unrecorded)
}

impl Services {
    /// The audited registry acting as `actor` from this CLI.
    pub(crate) fn audit_as(&self, actor: Actor) -> AuditedRegistry {
        self.audit.with_context(AuditContext::cli(actor))
    }

    /// [`Services::audit_as`] as a registry.
    pub(crate) fn acting_as(&self, actor: Actor) -> Arc<dyn TenantRegistry> {
        Arc::new(self.audit_as(actor))
    }

    /// The registry whose credential checks are logins to record (`login`,
    /// `admin login`).
    pub(crate) fn login_registry(&self) -> Arc<dyn TenantRegistry> {
        Arc::new(
            self.audit
                .with_context(AuditContext::cli(Actor::anonymous()).login()),
        )
    }
}

/// After every command on a store: writes the refusals counted and not
/// yet written, and warns about every entry that could not be written (the
/// changes stand).
pub(crate) async fn finish(ctx: &mut Ctx<'_>) {
    let Target::Store(services) = &ctx.target else {
        return;
    };
    services.audit.flush_all_refusals().await;
    let lost: Vec<String> = std::mem::take(
        &mut *services
            .audit_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for l in lost {
        let _ = ctx.warn(&format!(
            "the change was made but its audit entry could not be written: {l}"
        ));
    }
}

fn scope_of(tenant: Option<&TenantId>) -> Scope {
    match tenant {
        Some(t) => Scope::Tenant(t.clone()),
        None => Scope::Admin,
    }
}

fn who(a: &tenancy_server::views::AuditActorView) -> String {
    let mut s = a.kind.clone();
    if let Some(id) = &a.id {
        s.push(' ');
        s.push_str(id);
    }
    if let Some(n) = &a.name {
        s.push_str(&format!(" ({n})"));
    }
    s
}

fn outcome_cell(o: &str) -> Cell {
    match o {
        "ok" => Cell::styled(o, Style::Green),
        "refused" => Cell::styled(o, Style::Yellow),
        _ => Cell::styled(o, Style::Red),
    }
}

/// `tenancy audit list [--tenant X] [--since T] [--action A]`.
pub(crate) async fn list(ctx: &mut Ctx<'_>, args: AuditListArgs) -> anyhow::Result<()> {
    let filter = Filter {
        since: args.since.map(|t| t.at(ctx.now())),
        action: args.action,
    };
    let scope = scope_of(args.tenant.as_ref());
    let listed = match ctx.require_admin_access().await? {
        super::AdminAccess::Store(s) => {
            let entries = s.audit.log().list(&scope, &filter).await?;
            AuditList::new(&scope, &entries, entries.len())
        }
        super::AdminAccess::Server(r) => r.audit(args.tenant.as_ref(), &filter, None).await?,
    };
    if ctx.is_json() {
        return ctx.out().json(&listed);
    }
    if listed.truncated {
        ctx.warn("older entries were left out (the server's limit); narrow with --since")?;
    }
    let rows = listed
        .entries
        .iter()
        .map(|e: &AuditEntryView| {
            let mut detail = match &e.detail {
                serde_json::Value::Null => String::new(),
                serde_json::Value::Object(m) if m.is_empty() => String::new(),
                d => d.to_string(),
            };
            if let Some(s) = &e.actor.session {
                detail = format!("session {s} {detail}");
            }
            vec![
                e.seq.to_string().into(),
                time(&e.at).into(),
                who(&e.actor).into(),
                e.action.clone().into(),
                e.target.clone().into(),
                outcome_cell(&e.outcome),
                match &e.request_id {
                    Some(r) => format!("{} {r}", e.via),
                    None => e.via.clone(),
                }
                .into(),
                detail.trim().to_string().into(),
            ]
        })
        .collect();
    let empty = format!("No entries in the {scope} log.");
    ctx.out().table(
        &[
            "SEQ", "AT", "WHO", "ACTION", "TARGET", "OUTCOME", "VIA", "DETAIL",
        ],
        rows,
        &empty,
    )
}

/// The admin log's or a tenant's head, on the store or through the server.
async fn head_of(ctx: &mut Ctx<'_>, tenant: Option<&TenantId>) -> anyhow::Result<AuditHeadView> {
    let scope = scope_of(tenant);
    match ctx.require_admin_access().await? {
        super::AdminAccess::Store(s) => {
            let head = s.audit.log().head(&scope).await?;
            Ok(AuditHeadView::new(&scope, head.as_ref()))
        }
        super::AdminAccess::Server(r) => Ok(r.audit_head(tenant).await?),
    }
}

/// `tenancy audit head [--tenant X]`: `<seq>:<hash>`.
pub(crate) async fn head(ctx: &mut Ctx<'_>, args: AuditScopeArgs) -> anyhow::Result<()> {
    let view = head_of(ctx, args.tenant.as_ref()).await?;
    if ctx.is_json() {
        return ctx.out().json(&view);
    }
    match view.head {
        Some(h) => ctx.out().line(&h),
        None => {
            let scope = scope_of(args.tenant.as_ref());
            Err(tenancy_core::Error::not_found(format!(
                "the {scope} log has no entries yet: there is no head to print"
            ))
            .into())
        }
    }
}

/// `tenancy audit verify [--tenant X] [--head H]`: exit 8 unless intact.
pub(crate) async fn verify(ctx: &mut Ctx<'_>, args: AuditVerifyArgs) -> anyhow::Result<()> {
    let expected: Option<Head> = args
        .head
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: tenancy_core::Error| CliError::usage(e.to_string()))?;
    let scope = scope_of(args.tenant.as_ref());
    let v: AuditVerificationView = match ctx.require_admin_access().await? {
        super::AdminAccess::Store(s) => {
            let v = s.audit.log().verify(&scope, expected.as_ref()).await?;
            AuditVerificationView::new(&scope, &v)
        }
        super::AdminAccess::Server(r) => {
            r.audit_verify(args.tenant.as_ref(), expected.as_ref())
                .await?
        }
    };
    if ctx.is_json() {
        ctx.out().json(&v)?;
    } else if v.intact {
        let head = v.head.clone().unwrap_or_else(|| "none (empty)".into());
        ctx.out().line(&format!(
            "The {scope} log is intact: {} entries from number {}, head {head}.",
            v.entries, v.first
        ))?;
    } else {
        let rows = v
            .problems
            .iter()
            .map(|p| {
                vec![
                    p.seq.to_string().into(),
                    Cell::styled(&p.kind, Style::Red),
                    p.message.clone().into(),
                ]
            })
            .collect();
        ctx.out()
            .table(&["ENTRY", "PROBLEM", "WHAT"], rows, "No problems.")?;
    }
    if v.intact {
        Ok(())
    } else {
        Err(CliError::new(
            PROBLEMS,
            format!(
                "the {scope} log is not intact: {} problem(s), listed above; restore the named entries from a backup, and keep heads outside the store (`tenancy audit head`)",
                v.problems.len()
            ),
        )
        .into())
    }
}

/// `tenancy audit prune --before T [--tenant X] [--yes]` (on a store).
pub(crate) async fn prune(ctx: &mut Ctx<'_>, args: AuditPruneArgs) -> anyhow::Result<()> {
    let services = ctx.store(
        "audit prune",
        "run it with --backend set to the server's store (prune is not served over HTTP)",
    )?;
    ctx.require_admin().await?;
    let before: DateTime<Utc> = args.before.at(ctx.now());
    let scope = scope_of(args.tenant.as_ref());
    if !args.yes {
        let q = format!(
            "Remove the {scope} log's entries older than {}? The chain stays verifiable from the cut. [y/N] ",
            time(&before)
        );
        match ctx.io.confirm(&q)? {
            None => return Err(CliError::usage(
                "pruning needs confirmation; pass --yes (`tenancy audit prune --before T --yes`)",
            )
            .into()),
            Some(false) => return Err(Cancelled.into()),
            Some(true) => {}
        }
    }
    let removed = services.audit.log().prune(&scope, before).await;
    let admin = services.audit_as(Actor::admin());
    admin
        .record_result(
            &scope,
            "audit.prune",
            format!("{scope} log"),
            &removed,
            |n| serde_json::json!({ "removed": n, "before": before }),
        )
        .await;
    let removed = removed?;
    if ctx.is_json() {
        ctx.out().json(&serde_json::json!({
            "tenant": args.tenant,
            "removed": removed,
            "before": before,
        }))
    } else {
        ctx.out().line(&format!(
            "Removed {removed} entries of the {scope} log older than {} (the newest entry always stays).",
            time(&before)
        ))
    }
}
