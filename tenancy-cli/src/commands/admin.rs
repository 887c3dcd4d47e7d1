//! Admin commands outside `tenant`: `init`, `admin login|session`,
//! `migrate` and `doctor` (the admin's tenant commands are in `tenant.rs`).
//! `doctor` only renders `tenancy_state::doctor`'s report.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tenancy_core::{Error, Secret, Session};
use tenancy_state::MigrateOptions;

use super::{Ctx, Target};
use crate::cli::{AdminLoginArgs, AdminPasswdArgs, DoctorArgs, InitArgs, MigrateArgs};
use crate::exit::{CliError, PROBLEMS};
use crate::home::SessionSlot;
use crate::io::{clean_secret, Cancelled, PROMPT_TRIES};
use crate::output::{plural, time};

/// `tenancy init`: bootstraps the registry with an admin password.
pub(crate) async fn init(ctx: &mut Ctx<'_>, args: InitArgs) -> anyhow::Result<()> {
    if ctx.is_remote() {
        let url = ctx.backend_url.clone();
        return Err(CliError::usage(format!(
            "a tenancy-server bootstraps its own registry when it first starts (with the admin credential from its TENANCY_ADMIN_TOKEN, or one it prints); nothing to initialize at {url}: log in with `tenancy --backend {url} admin login`"
        ))
        .into());
    }
    let services = ctx.store("tenancy init", "")?;
    if services.registry.is_bootstrapped().await? {
        return Err(Error::already_exists(format!(
            "a registry already exists at {}; log in with `tenancy admin login`",
            ctx.backend_url
        ))
        .into());
    }
    let password = new_password(
        ctx,
        args.admin_password_stdin,
        "--admin-password-stdin",
        "TENANCY_ADMIN_PASSWORD",
        "tenancy init",
    )?;
    services
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

/// A new admin password: from stdin, `env_var`, or asked twice on a
/// terminal; 8 to 72 bytes (bcrypt's limit: longer is refused, never cut).
/// On a terminal the length is checked before the repeat is asked, a
/// refused or mismatched password is asked again ([`PROMPT_TRIES`] in
/// all), and an empty first answer cancels ([`Cancelled`]).
fn new_password(
    ctx: &mut Ctx<'_>,
    stdin: bool,
    flag: &str,
    env_var: &str,
    again: &str,
) -> anyhow::Result<Secret> {
    if !ctx.io.will_prompt(stdin, env_var) {
        let password = ctx.io.secret(
            "admin password",
            stdin,
            flag,
            env_var,
            "New admin password: ",
        )?;
        return match password_length_problem(&password) {
            None => Ok(password),
            Some(problem) => Err(CliError::usage(format!("{problem}; choose another")).into()),
        };
    }
    for _ in 0..PROMPT_TRIES {
        let first = clean_secret(ctx.io.prompter.ask_hidden("New admin password: ")?.expose());
        if first.expose().is_empty() {
            return Err(Cancelled.into());
        }
        if let Some(problem) = password_length_problem(&first) {
            ctx.note(&format!("{problem}; try again."))?;
            continue;
        }
        let repeat = clean_secret(
            ctx.io
                .prompter
                .ask_hidden("Repeat the admin password: ")?
                .expose(),
        );
        if first == repeat {
            return Ok(first);
        }
        ctx.note("The two passwords differ; try again.")?;
    }
    Err(CliError::usage(format!(
        "no admin password after {PROMPT_TRIES} tries; run `{again}` again"
    ))
    .into())
}

/// Why `password` cannot be the admin password (its length), if it cannot.
fn password_length_problem(password: &Secret) -> Option<String> {
    let n = password.expose().len();
    let bytes = tenancy_state::registry::ADMIN_PASSWORD_BYTES;
    (!bytes.contains(&n)).then(|| {
        format!(
            "the admin password must be {} to {} bytes (it is {n})",
            bytes.start(),
            bytes.end()
        )
    })
}

/// `tenancy admin passwd`: replaces the admin credential and bumps its
/// generation, which ends every admin session (this one too) and every
/// admin token a server has cached. `--reset` needs no admin session: it
/// is for whoever holds the store's own credentials (they control
/// everything on it anyway) and has lost the admin password.
pub(crate) async fn passwd(ctx: &mut Ctx<'_>, args: AdminPasswdArgs) -> anyhow::Result<()> {
    let registry = if args.reset {
        let services = ctx.store(
            "tenancy admin passwd --reset",
            "run it where the store is reachable, with its own credentials",
        )?;
        if !services.registry.is_bootstrapped().await? {
            return Err(Error::not_found(format!(
                "no registry at {}{}; create one with `tenancy init`",
                ctx.backend_url,
                super::or_no_bucket(&ctx.backend_url)
            ))
            .into());
        }
        services.registry.clone()
    } else {
        ctx.require_admin().await?
    };
    let password = new_password(
        ctx,
        args.new_password_stdin,
        "--new-password-stdin",
        "TENANCY_NEW_ADMIN_PASSWORD",
        "tenancy admin passwd",
    )?;
    let generation = registry
        .set_admin_password(&password)
        .await
        .context("changing the admin credential")?;
    ctx.home.remove(SessionSlot::Admin)?;
    if ctx.is_json() {
        ctx.out()
            .json(&json!({ "changed": true, "generation": generation }))?;
    } else {
        ctx.out().line(&format!(
            "Changed the admin credential (generation {generation}); every admin session and cached admin token has ended."
        ))?;
        ctx.note("Next: `tenancy admin login` with the new password.")?;
    }
    Ok(())
}

/// `tenancy admin login`: on a store, checks the password against the
/// registry; through a server, exchanges it for a server-issued admin session.
pub(crate) async fn login(ctx: &mut Ctx<'_>, args: AdminLoginArgs) -> anyhow::Result<()> {
    if let Target::Store(services) = &ctx.target {
        if !services.registry.is_bootstrapped().await? {
            return Err(Error::not_found(format!(
                "no registry at {}{}; create one with `tenancy init`",
                ctx.backend_url,
                super::or_no_bucket(&ctx.backend_url)
            ))
            .into());
        }
    }
    let wrong = |e: Error| match e {
        Error::Unauthorized { .. } => Error::unauthorized(
            "wrong admin password; check it and run `tenancy admin login` again",
        ),
        other => other,
    };
    // A typed password that is wrong is asked again (three tries in all).
    let prompted = ctx
        .io
        .will_prompt(args.password_stdin, "TENANCY_ADMIN_PASSWORD");
    let tries = if prompted { PROMPT_TRIES } else { 1 };
    let mut attempt = 0;
    let (session, token) = loop {
        attempt += 1;
        let password = ctx.io.secret(
            "admin password",
            args.password_stdin,
            "--password-stdin",
            "TENANCY_ADMIN_PASSWORD",
            "Admin password: ",
        )?;
        let verified = match &ctx.target {
            Target::Store(services) => {
                match services.login_registry().verify_admin(&password).await {
                    Ok(_) => services
                        .registry
                        .admin_generation()
                        .await
                        .map(|generation| (Session::admin(ctx.now(), generation), None)),
                    Err(e) => Err(e),
                }
            }
            Target::Server(client) => client
                .login_admin(&password)
                .await
                .map(|issued| (issued.session.session, Some(issued.token))),
        };
        match verified {
            Ok(done) => break done,
            Err(Error::Unauthorized { .. }) if attempt < tries => {
                ctx.note("Wrong admin password; try again.")?;
            }
            Err(e) => return Err(wrong(e).into()),
        }
    };
    let expires = session.expires_at;
    ctx.save_session(SessionSlot::Admin, session, token.as_ref())?;
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
    let registry = ctx.require_admin().await?;
    if ctx.is_remote() {
        // The server's word that the session still works.
        if let Some(token) = ctx.home.load(SessionSlot::Admin)?.and_then(|f| f.token) {
            registry
                .authenticate_session(&tenancy_core::Secret::new(token))
                .await?;
        }
    }
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

/// `tenancy migrate --tenant ID [--from PREFIX] [--dry-run] [--force]`.
pub(crate) async fn migrate(ctx: &mut Ctx<'_>, args: MigrateArgs) -> anyhow::Result<()> {
    let services = ctx.store(
        "tenancy migrate",
        "run it with --backend naming the server's store (file://, s3://), where the store is reachable",
    )?;
    ctx.require_admin().await?;
    let MigrateArgs {
        tenant: id,
        from,
        dry_run,
        force,
    } = args;
    let t = services.registry.get(&id).await?;
    let bar = ProgressBar::with_draw_target(
        None,
        if ctx.io.terminal.stderr && !dry_run {
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
    let options = MigrateOptions { dry_run, force };
    let result = tenancy_state::migrate_stacks(
        services.backend.as_ref(),
        services.registry.as_ref(),
        &t,
        &from,
        options,
        &mut progress,
    )
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e @ Error::QuotaExceeded { .. }) => {
            let (limit, requested) = match &e {
                Error::QuotaExceeded {
                    limit, requested, ..
                } => (*limit, *requested),
                _ => (0, 0),
            };
            return Err(anyhow::Error::new(e).context(format!(
                "migrating {from}/ would give tenant {id} {requested} stacks, over its max_stacks of {limit}; nothing was copied: raise the limit (`tenancy tenant update {id} --max-stacks {requested}`) or pass --force (see --dry-run)"
            )));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("migrating {from}/ into tenant {id}")))
        }
    };
    if ctx.is_json() {
        ctx.out().json(&json!({
            "tenant": id,
            "dry_run": report.dry_run,
            "source": report.source,
            "destination": report.destination,
            "source_objects": report.source_objects,
            "copied": report.copied,
            "copies": report
                .copies
                .iter()
                .map(|(s, d)| json!({ "from": s.as_str(), "to": d.as_str() }))
                .collect::<Vec<_>>(),
            "skipped_identical": report.skipped_identical,
            "conflicts": report.conflicts.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "bytes_copied": report.bytes_copied,
            "verified_objects": report.verified_objects,
            "existing_stacks": report.existing_stacks,
            "new_stacks": report.new_stacks,
            "max_stacks": report.max_stacks,
            "forced_over_quota": report.forced_over_quota,
            "clean": report.is_clean(),
        }))?;
    } else if report.dry_run {
        let rows = report
            .copies
            .iter()
            .map(|(s, d)| vec![s.to_string().into(), d.to_string().into()])
            .collect();
        ctx.out()
            .table(&["WOULD COPY", "TO"], rows, "Nothing to copy.")?;
        ctx.out().line(&format!(
            "Dry run, nothing was written: {} of {} objects under {} would be copied into tenant {id} ({} bytes), {} already there; {} new stacks ({} of {} max stacks).",
            report.copied,
            report.source_objects,
            report.source,
            report.bytes_copied,
            report.skipped_identical,
            report.new_stacks.len(),
            report.stacks_after(),
            report.max_stacks
        ))?;
    } else {
        let summary = vec![
            ("source objects", report.source_objects.to_string().into()),
            ("copied", plural(report.copied, "object").into()),
            ("bytes copied", report.bytes_copied.to_string().into()),
            (
                "already there",
                plural(report.skipped_identical, "object").into(),
            ),
            ("verified", plural(report.verified_objects, "object").into()),
            ("conflicts", report.conflicts.len().to_string().into()),
            (
                "stacks",
                format!(
                    "{} new, {} of {} max",
                    report.new_stacks.len(),
                    report.stacks_after(),
                    report.max_stacks
                )
                .into(),
            ),
        ];
        ctx.out().pairs(summary)?;
        ctx.out().line(&format!(
            "Migrated {} into tenant {id} ({}): {} objects, {} copied ({} bytes), {} already there, {} verified; {} new stacks ({} of {} max stacks).",
            report.source,
            report.destination,
            report.source_objects,
            report.copied,
            report.bytes_copied,
            report.skipped_identical,
            report.verified_objects,
            report.new_stacks.len(),
            report.stacks_after(),
            report.max_stacks
        ))?;
    }
    if report.source_objects == 0 {
        ctx.warn(&format!(
            "nothing found under {from}/ on {}; check --from",
            ctx.backend_url
        ))?;
    }
    if report.forced_over_quota {
        let msg = if report.dry_run {
            format!(
                "tenant {id} would have {} stacks, over its max_stacks of {}: the migration is refused unless you raise the limit or pass --force",
                report.stacks_after(),
                report.max_stacks
            )
        } else {
            format!(
                "--force: tenant {id} now has {} stacks, over its max_stacks of {}; it cannot start new stacks until the limit is raised",
                report.stacks_after(),
                report.max_stacks
            )
        };
        ctx.warn(&msg)?;
    }
    if !report.conflicts.is_empty() {
        for k in &report.conflicts {
            ctx.warn(&format!(
                "{k} differs at the destination and {} left alone",
                if report.dry_run { "would be" } else { "was" }
            ))?;
        }
        if report.dry_run {
            return Ok(());
        }
        return Err(Error::precondition(format!(
            "{} objects of tenant {id} differ from their source and were not overwritten; compare them, then remove or keep them",
            report.conflicts.len()
        ))
        .into());
    }
    Ok(())
}

/// `tenancy doctor [--repair]`: exit 0 when nothing is left to fix, 8
/// ([`PROBLEMS`]) while findings remain.
pub(crate) async fn doctor(ctx: &mut Ctx<'_>, args: DoctorArgs) -> anyhow::Result<()> {
    let services = ctx.store(
        "tenancy doctor",
        "run it with --backend naming the server's store (file://, s3://), where the store is reachable",
    )?;
    ctx.require_admin().await?;
    let registry = tenancy_state::StoreRegistry::new(services.backend.clone())
        .with_clock(services.clock.clone());
    let options = tenancy_state::doctor::DoctorOptions {
        repair: args.repair,
        ..Default::default()
    };
    let report = tenancy_state::doctor::doctor(&services.store, &registry, options)
        .await
        .context("checking the store")?;
    // Repairs change the store: one admin-log entry names them.
    let repaired: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.repaired)
        .map(|f| f.key.as_str())
        .collect();
    if !repaired.is_empty() {
        services
            .audit_as(tenancy_core::audit::Actor::admin())
            .record(
                &tenancy_core::audit::Scope::Admin,
                "store.repair",
                "store",
                tenancy_core::audit::Outcome::Ok,
                json!({ "repaired": repaired.len(), "keys": repaired.iter().take(100).collect::<Vec<_>>() }),
            )
            .await;
    }
    let remaining = report.remaining().count();
    let fixable = report.remaining().filter(|f| f.repairable).count();
    if ctx.is_json() {
        let url = ctx.backend_url.clone();
        ctx.out().json(&json!({
            "backend": url,
            "repair": report.repair,
            "tenants": report.tenants,
            "clean": report.is_clean(),
            "remaining": remaining,
            "findings": report.findings,
        }))?;
    } else {
        let rows = report
            .findings
            .iter()
            .map(|f| {
                let fix = if f.repaired {
                    "repaired"
                } else if f.repairable {
                    "--repair"
                } else {
                    "by hand"
                };
                vec![
                    f.kind.as_str().into(),
                    f.key.clone().into(),
                    fix.into(),
                    f.message.clone().into(),
                ]
            })
            .collect();
        ctx.out().table(
            &["KIND", "KEY", "FIX", "MESSAGE"],
            rows,
            "No problems found.",
        )?;
        ctx.out().line(&format!(
            "{} tenants checked, {} findings, {} repaired, {remaining} remaining.",
            report.tenants,
            report.findings.len(),
            report.findings.iter().filter(|f| f.repaired).count()
        ))?;
    }
    if remaining == 0 {
        return Ok(());
    }
    let next = if fixable > 0 && !args.repair {
        format!("{fixable} of them can be fixed with `tenancy doctor --repair`, the others by hand (see the messages)")
    } else if fixable > 0 {
        "run `tenancy doctor` again later for the ones that were in flight, and fix the others by hand (see the messages)".to_string()
    } else {
        "fix them by hand as the messages say, then run `tenancy doctor` again".to_string()
    };
    Err(CliError::new(
        PROBLEMS,
        format!("{remaining} problems remain in the store: {next}"),
    )
    .into())
}
