//! Admin commands outside `tenant`: `init`, `admin login|session` and
//! `migrate` (the admin's tenant commands are in `tenant.rs`).

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tenancy_core::{Error, Session};

use super::Ctx;
use crate::cli::{AdminLoginArgs, InitArgs, MigrateArgs};
use crate::exit::CliError;
use crate::home::SessionSlot;
use crate::output::time;

/// The shortest admin password `init` accepts.
pub(crate) const MIN_ADMIN_PASSWORD: usize = 8;

/// `tenancy init`: bootstraps the registry with an admin password.
pub(crate) async fn init(ctx: &mut Ctx<'_>, args: InitArgs) -> anyhow::Result<()> {
    if ctx.services.registry.is_bootstrapped().await? {
        return Err(Error::already_exists(format!(
            "a registry already exists at {}; log in with `tenancy admin login`",
            ctx.backend_url
        ))
        .into());
    }
    let password = if !args.admin_password_stdin
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
            args.admin_password_stdin,
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
pub(crate) async fn login(ctx: &mut Ctx<'_>, args: AdminLoginArgs) -> anyhow::Result<()> {
    if !ctx.services.registry.is_bootstrapped().await? {
        return Err(Error::not_found(format!(
            "no registry at {}; create one with `tenancy init`",
            ctx.backend_url
        ))
        .into());
    }
    let password = ctx.io.secret(
        "admin password",
        args.password_stdin,
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

/// `tenancy migrate --tenant ID [--from PREFIX]`.
pub(crate) async fn migrate(ctx: &mut Ctx<'_>, args: MigrateArgs) -> anyhow::Result<()> {
    ctx.require_admin().await?;
    let MigrateArgs { tenant: id, from } = args;
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
