//! Admin commands: `init`, `admin login|session`, the admin `tenant`
//! commands, and `migrate`.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::DateTime;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tenancy_core::registry::TenantRegistryExt;
use tenancy_core::{
    CreatedTenant, Error, LimitOverrides, NewTenant, Plan, Session, StateKey, TenantFilter,
    TenantStatus, TenantUpdate,
};

use super::{tenant_id, Ctx};
use crate::cli::{LimitArgs, PlanArg, StatusArg};
use crate::exit::CliError;
use crate::home::SessionSlot;
use crate::output::{status_style, tenant_json, tenant_pairs, time, Cell};

/// The shortest admin password `init` accepts.
pub(crate) const MIN_ADMIN_PASSWORD: usize = 8;

/// `tenancy init`: bootstraps the registry with an admin password.
pub(crate) async fn init(ctx: &mut Ctx<'_>, admin_password_stdin: bool) -> anyhow::Result<()> {
    if ctx.services.registry.is_bootstrapped().await? {
        return Err(Error::already_exists(format!(
            "a registry already exists at {}; log in with `tenancy admin login`",
            ctx.backend_url
        ))
        .into());
    }
    let password = if !admin_password_stdin
        && ctx.io.var("TENANCY_ADMIN_PASSWORD").is_none()
        && ctx.io.prompter.is_interactive()
    {
        let first = ctx.io.prompter.ask_hidden("New admin password: ")?;
        let again = ctx.io.prompter.ask_hidden("Repeat the admin password: ")?;
        if first != again {
            return Err(
                CliError::usage("the two passwords differ; run `tenancy init` again").into(),
            );
        }
        first
    } else {
        ctx.io.secret(
            "admin password",
            admin_password_stdin,
            "--admin-password-stdin",
            "TENANCY_ADMIN_PASSWORD",
            "New admin password: ",
        )?
    };
    if password.expose().chars().count() < MIN_ADMIN_PASSWORD {
        return Err(CliError::usage(format!(
            "the admin password must be at least {MIN_ADMIN_PASSWORD} characters; choose a longer one"
        ))
        .into());
    }
    ctx.services
        .registry
        .bootstrap(&password)
        .await
        .context("bootstrapping the registry")?;
    let url = ctx.backend_url.clone();
    if ctx.is_json() {
        ctx.out()
            .json(&json!({ "initialized": true, "backend": url }))?;
    } else {
        ctx.out()
            .line(&format!("Initialized the tenant registry at {url}."))?;
        ctx.note("Next: `tenancy admin login`, then `tenancy tenant init --name ID`.")?;
    }
    Ok(())
}

/// `tenancy admin login`.
pub(crate) async fn login(ctx: &mut Ctx<'_>, password_stdin: bool) -> anyhow::Result<()> {
    if !ctx.services.registry.is_bootstrapped().await? {
        return Err(Error::not_found(format!(
            "no registry at {}; create one with `tenancy init`",
            ctx.backend_url
        ))
        .into());
    }
    let password = ctx.io.secret(
        "admin password",
        password_stdin,
        "--password-stdin",
        "TENANCY_ADMIN_PASSWORD",
        "Admin password: ",
    )?;
    ctx.services
        .registry
        .verify_admin(&password)
        .await
        .map_err(|e| match e {
            Error::Unauthorized { .. } => Error::unauthorized(
                "wrong admin password; check it and run `tenancy admin login` again",
            ),
            other => other,
        })?;
    let session = Session::admin(ctx.now());
    let expires = session.expires_at;
    ctx.save_session(SessionSlot::Admin, session)?;
    if ctx.is_json() {
        ctx.out()
            .json(&json!({ "admin": true, "expires_at": expires }))?;
    } else {
        ctx.out()
            .line(&format!("Logged in as the admin until {}.", time(&expires)))?;
    }
    Ok(())
}

/// `tenancy admin session`: shows the admin session; fails (exit 3/4) when there is no valid one.
pub(crate) async fn session(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let Some(file) = ctx.home.load(SessionSlot::Admin)? else {
        return Err(CliError::not_logged_in(
            "not logged in as the admin; run `tenancy admin login`",
        )
        .into());
    };
    let s = file.session;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "kind": "admin",
            "backend": file.backend,
            "issued_at": s.issued_at,
            "expires_at": s.expires_at,
        }))?;
    } else {
        ctx.out().pairs(vec![
            ("session", "admin".into()),
            ("backend", file.backend.into()),
            ("issued", time(&s.issued_at).into()),
            ("expires", time(&s.expires_at).into()),
        ])?;
    }
    Ok(())
}

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

/// `tenancy tenant init`.
pub(crate) async fn tenant_init(
    ctx: &mut Ctx<'_>,
    name: &str,
    display_name: Option<String>,
    email: Option<String>,
    plan: PlanArg,
    secret_prefix: Option<String>,
    limits: &LimitArgs,
) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(name)?;
    let limits = overrides(limits);
    limits.validate()?;
    let new = NewTenant {
        display_name,
        email,
        plan: Plan::from(plan),
        secret_prefix,
        limits,
        ..NewTenant::new(id.clone())
    };
    let created = ctx
        .services
        .registry
        .create(new)
        .await
        .with_context(|| format!("creating tenant {id}"))?;
    show_secret(ctx, &created, "Created")
}

/// `tenancy tenant list`.
pub(crate) async fn tenant_list(
    ctx: &mut Ctx<'_>,
    status: Option<StatusArg>,
    plan: Option<PlanArg>,
) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let filter = TenantFilter {
        status: status.map(TenantStatus::from),
        plan: plan.map(Plan::from),
    };
    let tenants = ctx
        .services
        .registry
        .list_all(filter)
        .await
        .context("listing tenants")?;
    let now = ctx.now();
    if ctx.is_json() {
        let all: Vec<_> = tenants.iter().map(|t| tenant_json(t, now)).collect();
        return ctx.out().json(&all);
    }
    let rows = tenants
        .iter()
        .map(|t| {
            let s = t.effective_status(now);
            vec![
                t.id.to_string().into(),
                Cell::styled(s.as_str(), status_style(s)),
                t.plan.as_str().into(),
                t.display_name.clone().into(),
                time(&t.created_at).into(),
            ]
        })
        .collect();
    ctx.out().table(
        &["ID", "STATUS", "PLAN", "DISPLAY NAME", "CREATED"],
        rows,
        "No tenants. Create one with `tenancy tenant init --name ID`.",
    )
}

/// `tenancy tenant show ID`.
pub(crate) async fn tenant_show(ctx: &mut Ctx<'_>, id: &str) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
    let t = ctx.services.registry.get(&id).await?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&tenant_json(&t, now))
    } else {
        ctx.out().pairs(tenant_pairs(&t, now))
    }
}

/// `tenancy tenant stats`: counts by status and plan.
pub(crate) async fn tenant_stats(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let tenants = ctx
        .services
        .registry
        .list_all(TenantFilter::default())
        .await
        .context("listing tenants")?;
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
        return ctx.out().json(&json!({
            "total": tenants.len(),
            "by_status": by_status,
            "by_plan": by_plan,
        }));
    }
    let mut rows = vec![vec![
        "total".into(),
        "all".into(),
        tenants.len().to_string().into(),
    ]];
    for (s, n) in &by_status {
        rows.push(vec!["status".into(), (*s).into(), n.to_string().into()]);
    }
    for (p, n) in &by_plan {
        rows.push(vec!["plan".into(), (*p).into(), n.to_string().into()]);
    }
    ctx.out().table(&["BY", "VALUE", "TENANTS"], rows, "")
}

/// The flags of `tenancy tenant update`.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpdateArgs {
    /// New plan.
    pub plan: Option<PlanArg>,
    /// New display name.
    pub display_name: Option<String>,
    /// New e-mail.
    pub email: Option<String>,
    /// New expiry (RFC 3339).
    pub expires_at: Option<String>,
    /// `KEY=VALUE` metadata entries.
    pub metadata: Vec<String>,
    /// Limit overrides.
    pub limits: LimitArgs,
}

/// `tenancy tenant update ID ...`.
pub(crate) async fn tenant_update(
    ctx: &mut Ctx<'_>,
    id: &str,
    args: UpdateArgs,
) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
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
    let t = ctx
        .services
        .registry
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
pub(crate) async fn tenant_rotate(ctx: &mut Ctx<'_>, id: &str, yes: bool) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
    // Fail on an unknown tenant before asking anything.
    ctx.services.registry.get(&id).await?;
    if !yes {
        match ctx.io.confirm(&format!(
            "Rotate the secret of tenant {id}? The old secret and every session stop working. [y/N] "
        ))? {
            Some(true) => {}
            Some(false) => return Err(CliError::usage("rotation cancelled; nothing changed").into()),
            None => {
                return Err(CliError::usage(format!(
                    "rotating needs confirmation; pass --yes (`tenancy tenant rotate {id} --yes`)"
                ))
                .into())
            }
        }
    }
    let rotated = ctx
        .services
        .registry
        .rotate(&id)
        .await
        .with_context(|| format!("rotating the secret of tenant {id}"))?;
    show_secret(ctx, &rotated, "Rotated the secret of")
}

/// `tenancy tenant suspend ID`.
pub(crate) async fn tenant_suspend(
    ctx: &mut Ctx<'_>,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
    let t = ctx
        .services
        .registry
        .suspend(&id, reason)
        .await
        .with_context(|| format!("suspending tenant {id}"))?;
    status_changed(ctx, &t, "Suspended tenant {id}: its logins and sessions are refused until `tenancy tenant activate {id}`.")
}

/// `tenancy tenant activate ID`.
pub(crate) async fn tenant_activate(ctx: &mut Ctx<'_>, id: &str) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
    let t = ctx
        .services
        .registry
        .activate(&id)
        .await
        .with_context(|| format!("activating tenant {id}"))?;
    status_changed(ctx, &t, "Activated tenant {id}.")
}

/// `tenancy tenant delete ID --confirm`.
pub(crate) async fn tenant_delete(
    ctx: &mut Ctx<'_>,
    id: &str,
    confirm: bool,
) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(id)?;
    ctx.services.registry.get(&id).await?;
    if !confirm {
        if !ctx.io.prompter.is_interactive() {
            return Err(CliError::usage(format!(
                "deleting needs confirmation; pass --confirm (`tenancy tenant delete {id} --confirm`)"
            ))
            .into());
        }
        let typed = ctx.io.prompter.ask(&format!(
            "Delete tenant {id}? Its state is archived and its secret stops working. Type the tenant id to confirm: "
        ))?;
        if typed.trim() != id.as_str() {
            return Err(CliError::usage("deletion cancelled; nothing changed").into());
        }
    }
    let t = ctx
        .services
        .registry
        .delete(&id)
        .await
        .with_context(|| format!("deleting tenant {id}"))?;
    status_changed(
        ctx,
        &t,
        "Deleted tenant {id}; its state was archived under archive/{id}/.",
    )
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

/// `tenancy migrate --tenant ID [--from PREFIX]`.
pub(crate) async fn migrate(ctx: &mut Ctx<'_>, tenant: &str, from: &str) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let id = tenant_id(tenant)?;
    let from = StateKey::new(from).context("--from")?;
    let t = ctx.services.registry.get(&id).await?;
    let bar = ProgressBar::with_draw_target(
        None,
        if ctx.io.terminal.stderr {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} objects ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("migrating {from}/ into tenant {id}"));
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let result =
        tenancy_state::migrate_stacks(ctx.services.backend.as_ref(), &t, &from, &mut progress)
            .await;
    bar.finish_and_clear();
    let report = result.with_context(|| format!("migrating {from}/ into tenant {id}"))?;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "tenant": id,
            "source": report.source,
            "destination": report.destination,
            "source_objects": report.source_objects,
            "copied": report.copied,
            "skipped_identical": report.skipped_identical,
            "conflicts": report.conflicts.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "bytes_copied": report.bytes_copied,
            "verified_objects": report.verified_objects,
            "clean": report.is_clean(),
        }))?;
    } else {
        ctx.out().line(&format!(
            "Migrated {} into tenant {id} ({}): {} objects, {} copied ({} bytes), {} already there, {} verified.",
            report.source,
            report.destination,
            report.source_objects,
            report.copied,
            report.bytes_copied,
            report.skipped_identical,
            report.verified_objects
        ))?;
    }
    if report.source_objects == 0 {
        ctx.warn(&format!(
            "nothing found under {from}/ on {}; check --from",
            ctx.backend_url
        ))?;
    }
    if !report.conflicts.is_empty() {
        for k in &report.conflicts {
            ctx.warn(&format!(
                "{k} differs at the destination and was left alone"
            ))?;
        }
        return Err(Error::precondition(format!(
            "{} objects of tenant {id} differ from their source and were not overwritten; compare them, then remove or keep them",
            report.conflicts.len()
        ))
        .into());
    }
    Ok(())
}
