//! `tenancy tenant ...`: the admin's commands on tenants (init, list, show,
//! stats, update, rotate, suspend, activate, delete) and a tenant's own view
//! (details, usage; `stacks` shares the state listing in `state.rs`).

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::DateTime;
use serde_json::json;
use tenancy_core::registry::TenantRegistryExt;
use tenancy_core::{
    CreatedTenant, LimitOverrides, NewTenant, Plan, Tenant, TenantFilter, TenantId, TenantRegistry,
    TenantStatus, TenantUpdate,
};

use super::Ctx;
use crate::cli::{
    LimitArgs, PlanArg, TenantArg, TenantDeleteArgs, TenantInitArgs, TenantListArgs,
    TenantRotateArgs, TenantStatsArgs, TenantSuspendArgs, TenantUpdateArgs,
};
use crate::exit::CliError;
use crate::io::{Cancelled, PROMPT_TRIES};
use crate::output::{ago, plural, status_style, tenant_json, tenant_pairs, Cell, Style};
use tenancy_server::views::StatsView;

fn overrides(l: &LimitArgs) -> LimitOverrides {
    LimitOverrides {
        max_stacks: l.max_stacks,
        max_services: l.max_services,
        monthly_cost_limit: l.monthly_cost_limit,
        max_concurrent_jobs: l.max_concurrent_jobs,
        max_workers: l.max_workers,
        max_jobs_per_hour: l.max_jobs_per_hour,
        max_cpu_cores: l.max_cpu_cores,
        max_gpus: l.max_gpus,
        requests_per_second: l.requests_per_second,
        burst: l.burst,
        max_state_bytes: l.max_state_bytes,
        max_state_objects: l.max_state_objects,
        max_locks: l.max_locks,
    }
}

fn show_secret(ctx: &mut Ctx<'_>, created: &CreatedTenant, verb: &str) -> anyhow::Result<()> {
    let now = ctx.now();
    let id = created.tenant.id.clone();
    if ctx.is_json() {
        ctx.out().json(&json!({
            "secret": created.secret.expose(),
            "tenant": tenant_json(&created.tenant, now),
        }))?;
    } else {
        let mut out = ctx.out();
        out.line(&format!("{verb} tenant {id}."))?;
        out.pairs(tenant_pairs(&created.tenant, now))?;
        out.line("")?;
        out.pairs(vec![("secret", created.secret.expose().into())])?;
    }
    ctx.warn(&format!(
        "the secret of tenant {id} is shown only this once and cannot be recovered; store it now (if lost, run `tenancy tenant rotate {id}`)"
    ))?;
    Ok(())
}

/// Asks for `what` until `parse` accepts the answer ([`PROMPT_TRIES`] in
/// all), saying what was wrong each time.
fn ask_valid<T>(
    ctx: &mut Ctx<'_>,
    question: &str,
    default: Option<&str>,
    mut parse: impl FnMut(Option<String>) -> Result<T, String>,
) -> anyhow::Result<T> {
    let mut last = String::new();
    for _ in 0..PROMPT_TRIES {
        let answer = ctx.io.ask_default(question, default)?;
        match parse(answer) {
            Ok(v) => return Ok(v),
            Err(problem) => {
                ctx.note(&format!("{problem}; try again."))?;
                last = problem;
            }
        }
    }
    Err(CliError::usage(format!("{last} ({PROMPT_TRIES} tries)")).into())
}

/// `tenant init`'s arguments completed on a terminal: without an id, every
/// detail not given by a flag is asked, with its default in brackets.
fn prompt_new_tenant(ctx: &mut Ctx<'_>, args: &mut TenantInitArgs) -> anyhow::Result<TenantId> {
    if let Some(id) = args.id.clone() {
        return Ok(id);
    }
    if !ctx.io.prompter.is_interactive() {
        return Err(CliError::usage(
            "no tenant id: pass it (`tenancy tenant init ID`, or --name ID), or run in a terminal to be asked",
        )
        .into());
    }
    let id = ask_valid(
        ctx,
        "Tenant id (lowercase letters, digits, '-')",
        None,
        |a| {
            let a = a.ok_or("a tenant id is needed")?;
            TenantId::new(a).map_err(|e| e.to_string())
        },
    )?;
    if args.display_name.is_none() {
        args.display_name = ctx.io.ask_default("Display name", Some(id.as_str()))?;
    }
    if args.email.is_none() {
        args.email = ctx.io.ask_default("Contact e-mail", None)?;
    }
    if args.plan.is_none() {
        let plan = ask_valid(
            ctx,
            "Plan (free, basic, pro, enterprise)",
            Some("free"),
            |a| {
                let a = a.unwrap_or_default();
                <PlanArg as clap::ValueEnum>::from_str(&a, true)
                    .map_err(|_| format!("\"{}\" is not a plan", a.escape_debug()))
            },
        )?;
        args.plan = Some(plan);
    }
    if args.secret_prefix.is_none() {
        let prefix = ask_valid(
            ctx,
            "Secret prefix",
            Some(tenancy_core::credentials::DEFAULT_SECRET_PREFIX),
            |a| {
                let a = a.unwrap_or_default();
                tenancy_core::credentials::validate_prefix(&a)
                    .map(|()| a)
                    .map_err(|e| e.to_string())
            },
        )?;
        args.secret_prefix = Some(prefix);
    }
    Ok(id)
}

/// `tenancy tenant init [ID]` (or `--name ID`; prompted on a terminal).
pub(crate) async fn init(ctx: &mut Ctx<'_>, mut args: TenantInitArgs) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let id = prompt_new_tenant(ctx, &mut args)?;
    let limits = overrides(&args.limits);
    limits.validate()?;
    let new = NewTenant {
        display_name: args.display_name,
        email: args.email,
        plan: Plan::from(args.plan.unwrap_or(PlanArg::Free)),
        secret_prefix: args.secret_prefix,
        limits,
        ..NewTenant::new(id.clone())
    };
    let created = registry
        .create(new)
        .await
        .with_context(|| format!("creating tenant {id}"))?;
    show_secret(ctx, &created, "Created")
}

/// A tenant record that could not be read, as listings show it.
struct DamagedTenant {
    /// The tenant id, where the error names one.
    id: Option<String>,
    /// The one-line reason.
    message: String,
}

/// Splits the errors of `list_partial` into damaged records (shown, the
/// listing goes on) and the first other error (the listing fails).
fn damaged_tenants(errors: Vec<tenancy_core::Error>) -> anyhow::Result<Vec<DamagedTenant>> {
    let mut damaged = Vec::new();
    for e in errors {
        match &e {
            tenancy_core::Error::Corrupt { what, .. } => damaged.push(DamagedTenant {
                // the registry names a record "tenant <id> (registry/<id>.yaml)"
                id: what
                    .strip_prefix("tenant ")
                    .and_then(|rest| rest.split(' ').next())
                    .map(str::to_string),
                message: e.to_string(),
            }),
            _ => return Err(anyhow::Error::new(e).context("listing tenants")),
        }
    }
    Ok(damaged)
}

fn warn_damaged(ctx: &mut Ctx<'_>, damaged: &[DamagedTenant]) -> anyhow::Result<()> {
    for d in damaged {
        let id = d.id.as_deref().unwrap_or("?");
        ctx.warn(&format!(
            "{}; the other tenants are listed. Restore registry/{id}.yaml from a backup (other commands on tenant {id} fail until then)",
            d.message
        ))?;
    }
    Ok(())
}

/// `tenancy tenant list`: every readable tenant, and a `damaged` row for
/// each record that cannot be read (warned about on stderr; exit 0).
pub(crate) async fn list(ctx: &mut Ctx<'_>, args: TenantListArgs) -> anyhow::Result<()> {
    let filter = TenantFilter {
        status: args.status.map(TenantStatus::from),
        plan: args.plan.map(Plan::from),
    };
    let (mut listed, errors) = ctx
        .require_admin_access()
        .await?
        .list_with_usage(filter)
        .await
        .context("listing tenants")?;
    let damaged = damaged_tenants(errors)?;
    // Deleted tenants only when asked for (kubectl hides what is gone too).
    let hidden = if args.all || filter.status == Some(TenantStatus::Deleted) {
        0
    } else {
        let before = listed.len();
        listed.retain(|(t, _)| t.status != TenantStatus::Deleted);
        before - listed.len()
    };
    let stacks: u64 = listed.iter().map(|(_, u)| u.stacks).sum();
    let now = ctx.now();
    if ctx.is_json() {
        // The server's `GET /v1/tenants` shape, plus the records that
        // cannot be read (when there are any).
        // The server's `GET /v1/tenants?include=usage` shape, plus the
        // records that cannot be read (when there are any).
        let all: Vec<_> = listed
            .iter()
            .map(|(t, u)| tenancy_server::views::TenantView::new(t, now).with_usage(u.clone()))
            .collect();
        let mut doc = json!({ "tenants": all });
        if !damaged.is_empty() {
            doc["damaged"] = damaged
                .iter()
                .map(|d| json!({ "id": d.id, "error": d.message }))
                .collect();
        }
        ctx.out().json(&doc)?;
        return warn_damaged(ctx, &damaged);
    }
    let mut rows: Vec<Vec<Cell>> = listed
        .iter()
        .map(|(t, u)| {
            let s = t.effective_status(now);
            let l = t.limits();
            vec![
                t.id.to_string().into(),
                Cell::styled(s.as_str(), status_style(s)),
                t.plan.as_str().into(),
                format!("{}/{}", u.stacks, l.max_stacks).into(),
                format!("{}/{}", u.cost_this_month, l.monthly_cost_limit).into(),
                t.display_name.clone().into(),
                ago(&t.created_at, now).into(),
            ]
        })
        .collect();
    rows.extend(damaged.iter().map(|d| {
        vec![
            d.id.clone().unwrap_or_else(|| "?".into()).into(),
            Cell::styled("damaged", Style::Red),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]
    }));
    let shown = rows.len();
    let empty = match (args.status, args.plan) {
        (None, None) if hidden > 0 => {
            format!(
                "No tenants but {} (`--all` shows them).",
                plural(hidden as u64, "deleted one")
            )
        }
        (None, None) => "No tenants. Create one with `tenancy tenant init ID`.".to_string(),
        (status, plan) => {
            let status = status.map(|s| TenantStatus::from(s).as_str().to_string());
            let plan = plan.map(|p| format!("on plan {}", Plan::from(p).as_str()));
            let what = [status, Some("tenants".to_string()), plan]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            format!("No {what}.")
        }
    };
    ctx.out().table(
        &[
            "ID",
            "STATUS",
            "PLAN",
            "STACKS",
            "COST",
            "DISPLAY NAME",
            "CREATED",
        ],
        rows,
        &empty,
    )?;
    if shown > 0 {
        let more = if hidden > 0 {
            format!(
                " ({} hidden; `--all` shows them)",
                plural(hidden as u64, "deleted tenant")
            )
        } else {
            String::new()
        };
        ctx.out().line(&format!(
            "Total: {}, {}{more}",
            plural(shown as u64, "tenant"),
            plural(stacks, "stack")
        ))?;
    }
    warn_damaged(ctx, &damaged)
}

/// `tenancy tenant show ID`.
pub(crate) async fn show(ctx: &mut Ctx<'_>, args: TenantArg) -> anyhow::Result<()> {
    let id = args.id;
    let (t, u) = ctx.require_admin_access().await?.show(&id).await?;
    let now = ctx.now();
    if ctx.is_json() {
        // The server's `GET /v1/tenants/{id}?include=usage`.
        let view = tenancy_server::views::TenantView::new(&t, now).with_usage(u);
        return ctx.out().json(&view);
    }
    ctx.out().pairs(tenant_pairs(&t, now))?;
    let l = t.limits();
    ctx.out().line("")?;
    ctx.out().pairs(vec![
        ("usage", "".into()),
        (
            "  stacks",
            format!("{} of {}", u.stacks, l.max_stacks).into(),
        ),
        (
            "  jobs",
            format!(
                "{} running or queued (of {}), {} this hour, {} completed, {} failed",
                u.jobs_active,
                l.max_concurrent_jobs,
                u.jobs_this_hour,
                u.jobs_completed,
                u.jobs_failed
            )
            .into(),
        ),
        (
            "  workers",
            format!("{} of {}", u.workers, l.max_workers).into(),
        ),
        (
            "  state",
            format!(
                "{} of {} bytes, {} of {} objects",
                u.state_bytes, l.max_state_bytes, u.state_objects, l.max_state_objects
            )
            .into(),
        ),
        (
            "  locks held",
            format!("{} of {}", u.locks_held, l.max_locks).into(),
        ),
        (
            "  cost this month",
            format!("{} of {}", u.cost_this_month, l.monthly_cost_limit).into(),
        ),
    ])?;
    ctx.note(&format!(
        "More: `tenancy tenant stats {id}` (every resource with what is left)."
    ))
}

/// `tenancy tenant stats`: counts by status and plan.
pub(crate) async fn stats(ctx: &mut Ctx<'_>, args: TenantStatsArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.id {
        // One tenant's usage against its limits ("Available Resources").
        let now = ctx.now();
        let stats = ctx.require_admin_access().await?.stats(id, now).await?;
        if ctx.is_json() {
            return ctx.out().json(&stats);
        }
        return usage_table(ctx, &stats);
    }
    let registry = ctx.require_admin().await?;
    let (tenants, errors) = registry.list_partial(TenantFilter::default()).await;
    let damaged = damaged_tenants(errors)?;
    let now = ctx.now();
    let mut by_status: BTreeMap<&str, u64> =
        TenantStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut by_plan: BTreeMap<&str, u64> = Plan::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    for t in &tenants {
        *by_status
            .entry(t.effective_status(now).as_str())
            .or_default() += 1;
        *by_plan.entry(t.plan.as_str()).or_default() += 1;
    }
    if ctx.is_json() {
        ctx.out().json(&json!({
            "total": tenants.len() + damaged.len(),
            "by_status": by_status,
            "by_plan": by_plan,
            "damaged": damaged.len(),
        }))?;
        return warn_damaged(ctx, &damaged);
    }
    let mut rows = vec![vec![
        "total".into(),
        "all".into(),
        (tenants.len() + damaged.len()).to_string().into(),
    ]];
    if !damaged.is_empty() {
        rows.push(vec![
            "record".into(),
            "damaged".into(),
            damaged.len().to_string().into(),
        ]);
    }
    for (s, n) in &by_status {
        rows.push(vec!["status".into(), (*s).into(), n.to_string().into()]);
    }
    for (p, n) in &by_plan {
        rows.push(vec!["plan".into(), (*p).into(), n.to_string().into()]);
    }
    ctx.out().table(&["BY", "VALUE", "TENANTS"], rows, "")?;
    warn_damaged(ctx, &damaged)
}

/// `tenancy tenant update ID ...`.
pub(crate) async fn update(ctx: &mut Ctx<'_>, args: TenantUpdateArgs) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let id = args.id.clone();
    let limits = overrides(&args.limits);
    limits.validate()?;
    let expires_at = match &args.expires_at {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    CliError::usage(format!(
                        "--expires-at \"{}\" is not an RFC 3339 time; use e.g. 2030-01-01T00:00:00Z",
                        s.escape_debug()
                    ))
                })?
                .to_utc(),
        ),
    };
    let mut metadata = BTreeMap::new();
    for entry in &args.metadata {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(CliError::usage(format!(
                "--metadata \"{}\" is not KEY=VALUE",
                entry.escape_debug()
            ))
            .into());
        };
        metadata.insert(k.to_string(), v.to_string());
    }
    let update = TenantUpdate {
        display_name: args.display_name,
        email: args.email,
        plan: args.plan.map(Plan::from),
        limits: (limits != LimitOverrides::default()).then_some(limits),
        metadata: (!metadata.is_empty()).then_some(metadata),
        expires_at,
        expected_revision: None,
    };
    if update == TenantUpdate::default() {
        return Err(CliError::usage(
            "nothing to update; pass e.g. --plan, --display-name, --email, --max-stacks (see `tenancy tenant update --help`)",
        )
        .into());
    }
    let t = registry
        .update(&id, update)
        .await
        .with_context(|| format!("updating tenant {id}"))?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&tenant_json(&t, now))
    } else {
        ctx.out().line(&format!("Updated tenant {id}."))?;
        ctx.out().pairs(tenant_pairs(&t, now))
    }
}

/// `tenancy tenant rotate ID [--yes]`.
pub(crate) async fn rotate(ctx: &mut Ctx<'_>, args: TenantRotateArgs) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let TenantRotateArgs { id, yes } = args;
    if !yes {
        // Fail on an unknown tenant before asking anything.
        registry.get(&id).await?;
        match ctx.io.confirm(&format!(
            "Rotate the secret of tenant {id}? The old secret and every session stop working. [y/N] "
        ))? {
            Some(true) => {}
            Some(false) => return Err(Cancelled.into()),
            None => {
                return Err(CliError::usage(format!(
                    "rotating needs confirmation; pass --yes (`tenancy tenant rotate {id} --yes`)"
                ))
                .into())
            }
        }
    }
    let rotated = registry
        .rotate(&id)
        .await
        .with_context(|| format!("rotating the secret of tenant {id}"))?;
    show_secret(ctx, &rotated, "Rotated the secret of")
}

/// `tenancy tenant suspend ID`.
pub(crate) async fn suspend(ctx: &mut Ctx<'_>, args: TenantSuspendArgs) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let TenantSuspendArgs { id, reason } = args;
    let done = registry.suspend(&id, reason).await;
    let Some(t) = unchanged(ctx, &*registry, &id, done, TenantStatus::Suspended).await? else {
        return Ok(());
    };
    status_changed(ctx, &t, "Suspended tenant {id}: its logins and sessions are refused until `tenancy tenant activate {id}`.")
}

/// `tenancy tenant activate ID`.
pub(crate) async fn activate(ctx: &mut Ctx<'_>, args: TenantArg) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let id = args.id;
    let done = registry.activate(&id).await;
    let Some(t) = unchanged(ctx, &*registry, &id, done, TenantStatus::Active).await? else {
        return Ok(());
    };
    status_changed(ctx, &t, "Activated tenant {id}.")
}

/// `tenancy tenant delete ID [--yes]` (`--confirm` is an alias).
pub(crate) async fn delete(ctx: &mut Ctx<'_>, args: TenantDeleteArgs) -> anyhow::Result<()> {
    let registry = ctx.require_admin().await?;
    let TenantDeleteArgs { id, confirm } = args;
    if !confirm {
        // Fail on an unknown tenant before asking anything.
        registry.get(&id).await?;
        if !ctx.io.prompter.is_interactive() {
            return Err(CliError::usage(format!(
                "deleting needs confirmation; pass --yes (`tenancy tenant delete {id} --yes`)"
            ))
            .into());
        }
        let typed = ctx.io.prompter.ask(&format!(
            "Delete tenant {id}? Its state is archived and its secret stops working. Type the tenant id to confirm: "
        ))?;
        if typed.trim() != id.as_str() {
            return Err(Cancelled.into());
        }
    }
    let done = registry.delete(&id).await;
    let Some(t) = unchanged(ctx, &*registry, &id, done, TenantStatus::Deleted).await? else {
        return Ok(());
    };
    let archive = t
        .deleted_at
        .and_then(|at| tenancy_state::archive_dir(&t.id, at).ok())
        .map(|k| format!("{k}/"));
    let now = ctx.now();
    match archive {
        Some(dir) if ctx.is_json() => {
            let mut doc = tenant_json(&t, now);
            doc["archived_to"] = json!(dir);
            ctx.out().json(&doc)
        }
        Some(dir) => ctx.out().line(&format!(
            "Deleted tenant {id}; its state was archived under {dir} (`tenancy tenant show {id}` still shows it)."
        )),
        None => status_changed(ctx, &t, "Deleted tenant {id}; its state was archived under archive/{id}/."),
    }
}

/// The tenant a status change produced, or `None` after saying that the
/// tenant already had `status` (re-applying a state that holds is not an
/// error: like kubectl's `unchanged`, exit 0; in JSON the tenant as it is).
async fn unchanged(
    ctx: &mut Ctx<'_>,
    registry: &dyn TenantRegistry,
    id: &TenantId,
    done: tenancy_core::Result<Tenant>,
    status: TenantStatus,
) -> anyhow::Result<Option<Tenant>> {
    match done {
        Ok(t) => Ok(Some(t)),
        Err(e) if status.is_already(&e) => {
            if ctx.is_json() {
                let t = registry.get(id).await?;
                let now = ctx.now();
                ctx.out().json(&tenant_json(&t, now))?;
            } else {
                ctx.out()
                    .line(&format!("Tenant {id} is already {status}; unchanged."))?;
            }
            Ok(None)
        }
        Err(e) => {
            let verb = match status {
                TenantStatus::Active => "activating",
                TenantStatus::Suspended => "suspending",
                _ => "deleting",
            };
            Err(anyhow::Error::new(e).context(format!("{verb} tenant {id}")))
        }
    }
}

fn status_changed(
    ctx: &mut Ctx<'_>,
    t: &tenancy_core::Tenant,
    message: &str,
) -> anyhow::Result<()> {
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&tenant_json(t, now))
    } else {
        let msg = message.replace("{id}", t.id.as_str());
        ctx.out().line(&msg)
    }
}

/// `tenancy tenant details`: the logged-in tenant's profile, plan and limits.
pub(crate) async fn details(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let t = ctx.require_tenant().await?.profile().await?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&tenant_json(&t, now))
    } else {
        ctx.out().pairs(tenant_pairs(&t, now))
    }
}

/// `tenancy tenant usage`: usage counters against the effective limits.
pub(crate) async fn usage(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let api = ctx.require_tenant().await?;
    let (u, l, status) = api.usage().await?;
    let stats = StatsView::from_limits(api.id().as_str(), status, u.clone(), &l);
    if ctx.is_json() {
        // The server's `GET /v1/tenants/{id}/stats` shape.
        return ctx.out().json(&stats);
    }
    usage_table(ctx, &stats)
}

/// Usage against the limits: used, limit, what is left and the share used;
/// a resource at or over its limit is flagged.
pub(crate) fn usage_table(ctx: &mut Ctx<'_>, stats: &StatsView) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<Cell>> = stats
        .quotas
        .iter()
        .map(|q| {
            let share = q
                .used
                .saturating_mul(100)
                .checked_div(q.limit)
                .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
            let flag = |text: String| -> Cell {
                if q.used > q.limit {
                    Cell::styled(format!("{text} over"), Style::Red)
                } else if q.limit > 0 && q.used == q.limit {
                    Cell::styled(format!("{text} full"), Style::Yellow)
                } else {
                    text.into()
                }
            };
            vec![
                q.resource.replace('_', " ").into(),
                q.used.to_string().into(),
                q.limit.to_string().into(),
                q.remaining.to_string().into(),
                flag(share),
            ]
        })
        .collect();
    for (name, n) in [
        ("jobs completed", stats.usage.jobs_completed),
        ("jobs failed", stats.usage.jobs_failed),
    ] {
        rows.push(vec![
            name.into(),
            n.to_string().into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    ctx.out().table(
        &["RESOURCE", "USED", "LIMIT", "REMAINING", "USED %"],
        rows,
        "",
    )
}
