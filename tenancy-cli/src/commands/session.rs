//! The tenant session: `login` and `session` (`logout` is in `lib.rs`). On
//! a store, login checks the secret against the registry and writes a
//! session file; through a server, it exchanges the secret for a
//! server-issued session whose token the file keeps.

use serde_json::json;
use tenancy_core::{Error, Session, TenantId};

use super::{Ctx, Target};
use crate::cli::LoginArgs;
use crate::exit::CliError;
use crate::home::SessionSlot;
use crate::io::PROMPT_TRIES;
use crate::output::{status_style, tenant_json, time, Cell};
use tenancy_server::client::TenantCredential;

/// `tenancy login ID [--secret-stdin]` (or `--tenant ID`).
pub(crate) async fn login(ctx: &mut Ctx<'_>, args: LoginArgs) -> anyhow::Result<()> {
    let id = match args.tenant {
        Some(id) => id,
        None => {
            let raw = ctx.io.value(
                "tenant id",
                None,
                "it (`tenancy login ID`)",
                "TENANCY_TENANT",
                "Tenant id: ",
            )?;
            TenantId::new(raw)?
        }
    };
    let refused = |e: Error| {
        match e {
        Error::Unauthorized { .. } => Error::unauthorized(format!(
            "login as tenant {id} refused: unknown tenant or wrong secret; check both, or ask the admin to rotate the secret"
        )),
        Error::Forbidden { message } if message.contains("deleted") => Error::forbidden(format!(
            "login as tenant {id} refused: {message}; a deleted tenant cannot be activated again, ask the admin for a new tenant"
        )),
        Error::Forbidden { message } => Error::forbidden(format!(
            "login as tenant {id} refused: {message}; ask the admin to activate it"
        )),
        other => other,
    }
    };
    let mistyped = || {
        Error::unauthorized(format!(
            "login as tenant {id} refused before asking anyone: the secret's checksum does not match, so it was mistyped or cut short; copy it again"
        ))
    };
    // A typed secret that is refused is asked again (three tries in all).
    let prompted = ctx.io.will_prompt(args.secret_stdin, "TENANCY_SECRET");
    let tries = if prompted { PROMPT_TRIES } else { 1 };
    let mut attempt = 0;
    let (t, session, token) = loop {
        attempt += 1;
        let secret = ctx.io.secret(
            "tenant secret",
            args.secret_stdin,
            "--secret-stdin",
            "TENANCY_SECRET",
            &format!("Secret of tenant {id}: "),
        )?;
        let verified = if tenancy_core::credentials::is_mistyped(secret.expose()) {
            Err(mistyped())
        } else {
            match &ctx.target {
                Target::Store(services) => match services.login_registry().authenticate_caller(Some(&id), &secret).await {
                    Ok(c) => Ok((Session::for_caller(&c, ctx.now()), None, Some(c.tenant))),
                    // No registry here at all: most likely --backend was forgotten.
                    Err(Error::Unauthorized { .. } | Error::NotFound { .. })
                        if !services.registry.is_bootstrapped().await.unwrap_or(true) =>
                    {
                        return Err(Error::not_found(format!(
                            "no registry at {}; pass the backend your admin gave you with --backend URL (or TENANCY_BACKEND)",
                            ctx.backend_url
                        ))
                        .into())
                    }
                    Err(e) => Err(e),
                },
                Target::Server(client) => client
                    .login_tenant(&id, &secret)
                    .await
                    .map(|issued| (issued.session.session, Some(issued.token), None)),
            }
        };
        match verified {
            Ok((session, token, t)) => break (t, session, token),
            Err(Error::Unauthorized { message }) if attempt < tries => {
                if message.contains("checksum") {
                    ctx.note(
                        "That secret's checksum does not match (mistyped or cut short); try again.",
                    )?;
                } else {
                    ctx.note(&format!("Unknown tenant {id} or wrong secret; try again."))?;
                }
            }
            Err(Error::Unauthorized { message }) if message.contains("checksum") => {
                return Err(Error::Unauthorized { message }.into())
            }
            Err(e) => return Err(refused(e).into()),
        }
    };
    let expires = session.expires_at;
    let key = session.key.clone();
    ctx.save_session(SessionSlot::Tenant, session, token.as_ref())?;
    let t = match (t, &ctx.target, token) {
        (Some(t), _, _) => t,
        // Through a server: the profile for the summary (login costs two requests).
        (None, Target::Server(client), Some(token)) => client
            .tenant(TenantCredential::Session(token))
            .me()
            .await?
            .profile
            .to_tenant()?,
        (None, _, _) => return Err(anyhow::anyhow!("login returned no tenant")),
    };
    if ctx.is_json() {
        let profile = tenant_json(&t, ctx.now());
        ctx.out().json(&json!({
            "tenant": t.id,
            "expires_at": expires,
            "key": key,
            "profile": profile,
        }))?;
    } else {
        let l = t.limits();
        let with = key.map_or_else(String::new, |k| format!(" with API key {k}"));
        ctx.out().line(&format!(
            "Logged in as tenant {} ({}, plan {}){with} until {}.",
            t.id,
            t.display_name,
            t.plan.as_str(),
            time(&expires)
        ))?;
        ctx.note(&format!(
            "Limits: {} stacks, {} locks, {} state bytes. Now available: `tenancy state put|get|list|history|rollback|delete`, `tenancy lock acquire|list|release`, `tenancy tenant details|usage|stacks`; `tenancy logout` when done.",
            l.max_stacks, l.max_locks, l.max_state_bytes
        ))?;
    }
    Ok(())
}

/// `tenancy session`: shows the tenant session after checking it against the
/// registry; fails (exit 3/4) when it is not valid.
pub(crate) async fn session(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let api = ctx.require_tenant().await?;
    if ctx.env_credentials()?.is_some() {
        // No session: every command authenticates with the variables.
        let t = api.profile().await?;
        let status = t.effective_status(ctx.now());
        let backend = ctx.backend_url.clone();
        return if ctx.is_json() {
            ctx.out().json(&json!({
                "kind": "environment",
                "tenant": t.id,
                "status": status,
                "backend": backend,
            }))
        } else {
            ctx.out().pairs(vec![
                ("session", "none: TENANCY_TENANT and TENANCY_SECRET".into()),
                ("tenant", t.id.to_string().into()),
                (
                    "status",
                    Cell::styled(status.as_str(), status_style(status)),
                ),
                ("backend", backend.into()),
            ])
        };
    }
    let Some(file) = ctx.home.load(SessionSlot::Tenant)? else {
        return Err(CliError::not_logged_in(
            "not logged in as a tenant; run `tenancy login --tenant ID`",
        )
        .into());
    };
    // One read that the session still works: the tenant's record.
    let t = api.profile().await?;
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
