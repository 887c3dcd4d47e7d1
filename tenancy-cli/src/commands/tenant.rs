//! Tenant commands: `login`, `session`, `tenant details|usage` (`logout` needs no store: see `lib.rs`).

use serde_json::json;
use tenancy_core::{Error, Session};

use super::{tenant_id, Ctx};
use crate::exit::CliError;
use crate::home::SessionSlot;
use crate::output::{status_style, tenant_json, tenant_pairs, time, Cell};

/// `tenancy login --tenant ID [--secret-stdin]`.
pub(crate) async fn login(
    ctx: &mut Ctx<'_>,
    tenant: Option<String>,
    secret_stdin: bool,
) -> anyhow::Result<()> {
    let raw = ctx.io.value(
        "tenant id",
        tenant,
        "--tenant ID",
        "TENANCY_TENANT",
        "Tenant id: ",
    )?;
    let id = tenant_id(&raw)?;
    let secret = ctx.io.secret(
        "tenant secret",
        secret_stdin,
        "--secret-stdin",
        "TENANCY_SECRET",
        &format!("Secret of tenant {id}: "),
    )?;
    let t = ctx
        .services
        .registry
        .authenticate(&id, &secret)
        .await
        .map_err(|e| match e {
            Error::Unauthorized { .. } => Error::unauthorized(format!(
                "login as tenant {id} refused: unknown tenant or wrong secret; check both, or ask the admin to rotate the secret"
            )),
            Error::Forbidden { message } => Error::forbidden(format!(
                "login as tenant {id} refused: {message}; ask the admin to activate it"
            )),
            other => other,
        })?;
    let now = ctx.now();
    let session = Session::tenant(&t, now);
    let expires = session.expires_at;
    ctx.save_session(SessionSlot::Tenant, session)?;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "tenant": t.id,
            "expires_at": expires,
        }))?;
    } else {
        ctx.out().line(&format!(
            "Logged in as tenant {} until {}.",
            t.id,
            time(&expires)
        ))?;
    }
    Ok(())
}

/// `tenancy session`: shows the tenant session after checking it against the
/// registry; fails (exit 3/4) when it is not valid.
pub(crate) async fn session(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let t = ctx.require_tenant().await?;
    let Some(file) = ctx.home.load(SessionSlot::Tenant)? else {
        return Err(CliError::not_logged_in(
            "not logged in as a tenant; run `tenancy login --tenant ID`",
        )
        .into());
    };
    let s = file.session;
    let now = ctx.now();
    let status = t.effective_status(now);
    if ctx.is_json() {
        ctx.out().json(&json!({
            "kind": "tenant",
            "tenant": t.id,
            "status": status,
            "backend": file.backend,
            "issued_at": s.issued_at,
            "expires_at": s.expires_at,
        }))
    } else {
        ctx.out().pairs(vec![
            ("session", "tenant".into()),
            ("tenant", t.id.to_string().into()),
            (
                "status",
                Cell::styled(status.as_str(), status_style(status)),
            ),
            ("backend", file.backend.into()),
            ("issued", time(&s.issued_at).into()),
            ("expires", time(&s.expires_at).into()),
        ])
    }
}

/// `tenancy tenant details`: the logged-in tenant's profile, plan and limits.
pub(crate) async fn details(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let t = ctx.require_tenant().await?;
    let now = ctx.now();
    if ctx.is_json() {
        ctx.out().json(&tenant_json(&t, now))
    } else {
        ctx.out().pairs(tenant_pairs(&t, now))
    }
}

/// `tenancy tenant usage`: usage counters against the effective limits.
pub(crate) async fn usage(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let t = ctx.require_tenant().await?;
    let u = ctx.services.registry.usage(&t.id).await?;
    let l = t.limits();
    let rows: Vec<(&str, u64, Option<u64>)> = vec![
        ("stacks", u.stacks, Some(l.max_stacks)),
        ("services", u.services, Some(l.max_services)),
        (
            "concurrent jobs",
            u.jobs_active,
            Some(l.max_concurrent_jobs),
        ),
        (
            "jobs this hour",
            u.jobs_this_hour,
            Some(l.max_jobs_per_hour),
        ),
        ("workers", u.workers, Some(l.max_workers)),
        ("cpu cores", u.cpu_cores, Some(l.max_cpu_cores)),
        ("gpus", u.gpus, Some(l.max_gpus)),
        (
            "cost this month",
            u.cost_this_month,
            Some(l.monthly_cost_limit),
        ),
        ("jobs completed", u.jobs_completed, None),
        ("jobs failed", u.jobs_failed, None),
    ];
    if ctx.is_json() {
        return ctx.out().json(&json!({
            "tenant": t.id,
            "usage": u,
            "limits": l,
        }));
    }
    let rows = rows
        .into_iter()
        .map(|(name, used, limit)| {
            vec![
                name.into(),
                used.to_string().into(),
                limit
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into())
                    .into(),
            ]
        })
        .collect();
    ctx.out().table(&["RESOURCE", "USED", "LIMIT"], rows, "")
}
