//! Tenant state commands: `state put|get|list|history|rollback` and `tenant stacks`.
//!
//! On a store, state lives in a `StackStore` on the tenant's `TenantScoped`
//! view of the backend, so a tenant only ever reads and writes below
//! `tenants/<id>/<version>/`; through a server, in the server's stack
//! routes ([`super::TenantApi`] has both).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use tenancy_core::Error;
use tenancy_server::views::{
    DamagedVersionView, StackEnvView, StackHistory, StackList, StackVersionView,
};
use tenancy_state::stack::StateDocument;

use super::Ctx;
use crate::cli::{StackEnv, StateDeleteArgs, StateGetArgs, StatePutArgs, StateRollbackArgs};
use crate::exit::CliError;
use crate::io::Cancelled;
use crate::output::{ago, time, Cell, Style};

/// The largest state document `state put` accepts: 64 MiB.
pub(crate) const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

fn read_document(ctx: &mut Ctx<'_>, file: Option<&Path>) -> anyhow::Result<Value> {
    let (what, mut bytes) = match file {
        Some(p) if p != Path::new("-") => {
            let f = std::fs::File::open(p)
                .map_err(|e| CliError::usage(format!("cannot read --file {}: {e}", p.display())))?;
            let mut buf = Vec::new();
            f.take(MAX_STATE_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|e| CliError::usage(format!("cannot read --file {}: {e}", p.display())))?;
            (p.display().to_string(), buf)
        }
        _ => {
            if ctx.io.prompter.is_interactive() {
                ctx.note("Reading the JSON state document from stdin; end it with Ctrl-D (or pass --file F).")?;
            }
            let mut buf = Vec::new();
            (&mut ctx.io.stdin)
                .take(MAX_STATE_BYTES + 1)
                .read_to_end(&mut buf)
                .context("reading the state document from stdin")?;
            ("stdin".to_string(), buf)
        }
    };
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(CliError::usage(format!(
            "the state document on {what} is larger than {} MiB",
            MAX_STATE_BYTES / 1024 / 1024
        ))
        .into());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::usage(format!(
            "the state document on {what} is empty; pass --file F or pipe a JSON document in"
        ))
        .into());
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CliError::usage(format!(
            "the state document on {what} is not JSON (line {}, column {}); nothing was saved",
            e.line(),
            e.column()
        ))
    })?;
    bytes.clear();
    Ok(doc)
}

/// Adds what to do to a refusal because someone else holds the lock.
fn locked_hint(e: Error, stack: &str, env: &str) -> anyhow::Error {
    match e {
        e @ Error::LockHeld { .. } => anyhow::Error::new(e).context(format!(
            "{stack}/{env} is locked; pass --lock-id with the holder's lock id if you hold it"
        )),
        e => e.into(),
    }
}

/// `tenancy state put --stack S --env E [--file F]`.
pub(crate) async fn put(ctx: &mut Ctx<'_>, args: StatePutArgs) -> anyhow::Result<()> {
    let (stack, env) = (args.at.stack.as_str(), args.at.env.as_str());
    let api = ctx.require_tenant().await?;
    let doc = read_document(ctx, args.file.as_deref())?;
    let doc = StateDocument::from_value(&doc)?;
    let saved = api
        .save(stack, env, &doc, args.lock_id)
        .await
        .map_err(|e| locked_hint(e, stack, env))
        .with_context(|| format!("saving the state of {stack}/{env}"))?;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "stack": stack,
            "env": env,
            "serial": saved.serial,
            "saved_at": saved.saved_at,
        }))
    } else {
        ctx.out()
            .line(&format!("Saved {stack}/{env} as version {}.", saved.serial))
    }
}

/// `tenancy state get --stack S --env E [--version N]`: prints the stored
/// JSON document itself (in both output modes).
pub(crate) async fn get(ctx: &mut Ctx<'_>, args: StateGetArgs) -> anyhow::Result<()> {
    let (stack, env, version) = (args.at.stack.as_str(), args.at.env.as_str(), args.version);
    let api = ctx.require_tenant().await?;
    let raw = api.document(stack, env, version).await?.ok_or_else(|| {
        Error::not_found(format!(
            "no state for stack {stack} env {env}; store some with `tenancy state put --stack {stack} --env {env}`"
        ))
    })?;
    let document: Value = serde_json::from_slice(&raw).map_err(|e| Error::Corrupt {
        what: format!("the state of {stack}/{env}"),
        message: e.to_string(),
    })?;
    let text = serde_json::to_string_pretty(&document)?;
    ctx.out().line(&text)
}

/// The warning for a stack environment whose `state.json` is damaged.
fn damaged_hint(stack: &str, env: &str, message: &str) -> String {
    format!(
        "{message}; restore an intact version with `tenancy state rollback --stack {stack} --env {env} --to N` (versions: `tenancy state history --stack {stack} --env {env}`)"
    )
}

/// `tenancy state list`: every stack environment with its current version;
/// one whose `state.json` is damaged is shown as damaged (and warned about
/// on stderr) and the listing goes on.
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let api = ctx.require_tenant().await?;
    let envs = api.stack_envs().await?;
    let damaged: Vec<String> = envs
        .rows
        .iter()
        .filter_map(|r| {
            r.current
                .as_ref()
                .err()
                .map(|m| damaged_hint(&r.stack, &r.env, m))
        })
        .collect();
    if ctx.is_json() {
        // The server's `GET /v1/stacks` shape.
        let stacks = envs
            .rows
            .iter()
            .map(|r| {
                StackEnvView::new(
                    r.stack.clone(),
                    r.env.clone(),
                    r.current.clone(),
                    r.locked_by.as_ref(),
                )
            })
            .collect();
        ctx.out().json(&StackList {
            stacks,
            max_stacks: envs.max_stacks,
        })?;
    } else {
        let now = ctx.now();
        let rows = envs
            .rows
            .into_iter()
            .map(|r| {
                let locked: Cell = match &r.locked_by {
                    Some(l) => Cell::styled(l.who.clone(), Style::Yellow),
                    None => "-".into(),
                };
                match r.current {
                    Ok((serial, saved_at)) => vec![
                        r.stack.into(),
                        r.env.into(),
                        serial.to_string().into(),
                        saved_at.map_or_else(|| "-".into(), |t| ago(&t, now)).into(),
                        locked,
                    ],
                    Err(_) => vec![
                        r.stack.into(),
                        r.env.into(),
                        Cell::styled("damaged", Style::Red),
                        "-".into(),
                        locked,
                    ],
                }
            })
            .collect();
        ctx.out().table(
            &["STACK", "ENV", "VERSION", "SAVED", "LOCKED BY"],
            rows,
            "No state yet. Store some with `tenancy state put --stack S --env E --file state.json`.",
        )?;
    }
    for w in &damaged {
        ctx.warn(w)?;
    }
    Ok(())
}

/// `tenancy tenant stacks`: stacks and their environments, against the stack limit.
pub(crate) async fn stacks(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let api = ctx.require_tenant().await?;
    let envs = api.stack_envs().await?;
    let mut by_stack: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in envs.rows {
        by_stack.entry(r.stack).or_default().push(r.env);
    }
    let limit = envs.max_stacks;
    if ctx.is_json() {
        let v: Vec<Value> = by_stack
            .iter()
            .map(|(s, envs)| json!({ "stack": s, "envs": envs }))
            .collect();
        return ctx.out().json(&json!({
            "tenant": api.id(),
            "stacks": v,
            "count": by_stack.len(),
            "max_stacks": limit,
        }));
    }
    let count = by_stack.len();
    let rows = by_stack
        .into_iter()
        .map(|(s, envs)| vec![s.into(), envs.join(", ").into()])
        .collect();
    ctx.out()
        .table(&["STACK", "ENVIRONMENTS"], rows, "No stacks yet.")?;
    ctx.note(&format!("{count} of {limit} stacks used."))
}

/// `tenancy state history --stack S --env E`, oldest first; damaged objects
/// are shown as damaged (and warned about on stderr) and the rest listed.
pub(crate) async fn history(ctx: &mut Ctx<'_>, at: StackEnv) -> anyhow::Result<()> {
    let (stack, env) = (at.stack.as_str(), at.env.as_str());
    let api = ctx.require_tenant().await?;
    let report = api.history(stack, env).await?;
    let note = |h: &tenancy_state::stack::HistoryEntry| match (h.rolled_back_from, h.plain) {
        (Some(n), _) => format!("rollback to {n}"),
        (None, true) => "plain JSON (another tool's)".to_string(),
        (None, false) => String::new(),
    };
    if report.entries.is_empty() && report.damaged.is_empty() {
        return Err(Error::not_found(format!(
            "no state for stack {stack} env {env}; `tenancy state list` shows the stacks with state"
        ))
        .into());
    }
    if ctx.is_json() {
        // The server's `GET /v1/stacks/{stack}/{env}/history` shape.
        ctx.out().json(&StackHistory {
            versions: report
                .entries
                .iter()
                .map(|h| StackVersionView {
                    serial: h.serial,
                    saved_at: h.saved_at,
                    size: h.size,
                    rolled_back_from: h.rolled_back_from,
                    plain: h.plain,
                    deleted: h.deleted,
                    fencing_token: h.fence,
                })
                .collect(),
            damaged: report
                .damaged
                .iter()
                .map(|d| DamagedVersionView {
                    serial: d.serial,
                    key: d.key.to_string(),
                    message: d.message.clone(),
                })
                .collect(),
        })?;
    } else {
        let now = ctx.now();
        let mut rows: Vec<Vec<Cell>> = report
            .entries
            .iter()
            .map(|h| {
                vec![
                    h.serial.to_string().into(),
                    h.saved_at
                        .map_or_else(
                            || "-".into(),
                            |t| format!("{} ({})", time(&t), ago(&t, now)),
                        )
                        .into(),
                    h.size.to_string().into(),
                    note(h).into(),
                ]
            })
            .collect();
        rows.extend(report.damaged.iter().map(|d| {
            vec![
                d.serial
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "current".into())
                    .into(),
                "-".into(),
                "-".into(),
                Cell::styled("damaged", Style::Red),
            ]
        }));
        ctx.out().table(
            &["VERSION", "SAVED", "BYTES", "NOTE"],
            rows,
            &format!("No state for {stack}/{env}."),
        )?;
    }
    for d in &report.damaged {
        if d.serial.is_none() {
            ctx.warn(&damaged_hint(stack, env, &d.message))?;
        } else {
            ctx.warn(&format!(
                "{}; that version cannot be read, the others are listed",
                d.message
            ))?;
        }
    }
    Ok(())
}

/// `tenancy state rollback --stack S --env E --to N`: makes version N current
/// again, as a new version.
pub(crate) async fn rollback(ctx: &mut Ctx<'_>, args: StateRollbackArgs) -> anyhow::Result<()> {
    let (stack, env, to) = (args.at.stack.as_str(), args.at.env.as_str(), args.to);
    let api = ctx.require_tenant().await?;
    let v = api
        .rollback(stack, env, to, args.lock_id)
        .await
        .map_err(|e| locked_hint(e, stack, env))
        .with_context(|| format!("rolling {stack}/{env} back to version {to}"))?;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "stack": stack,
            "env": env,
            "serial": v.serial,
            "rolled_back_from": to,
            "saved_at": v.saved_at,
        }))
    } else {
        ctx.out().line(&format!(
            "Rolled {stack}/{env} back to version {to}; it is now version {}.",
            v.serial
        ))
    }
}

/// `tenancy state delete --stack S --env E [--lock-id ID] [--yes]`: deletes
/// the stack environment's state (a tombstone version: history stays until
/// pruned, `state rollback` restores it) and gives the stack back to the
/// stack limit when it was its last environment.
pub(crate) async fn delete(ctx: &mut Ctx<'_>, args: StateDeleteArgs) -> anyhow::Result<()> {
    let (stack, env) = (args.at.stack.as_str(), args.at.env.as_str());
    let api = ctx.require_tenant().await?;
    if !args.yes {
        match ctx.io.confirm(&format!(
            "Delete the state of {stack}/{env}? Its history is kept and `tenancy state rollback` restores it. [y/N] "
        ))? {
            Some(true) => {}
            Some(false) => return Err(Cancelled.into()),
            None => {
                return Err(CliError::usage(format!(
                    "deleting needs confirmation; pass --yes (`tenancy state delete --stack {stack} --env {env} --yes`)"
                ))
                .into())
            }
        }
    }
    let v = api
        .delete(stack, env, args.lock_id)
        .await
        .map_err(|e| locked_hint(e, stack, env))
        .with_context(|| format!("deleting the state of {stack}/{env}"))?;
    if ctx.is_json() {
        ctx.out().json(&json!({
            "stack": stack,
            "env": env,
            "deleted": true,
            "serial": v.serial,
            "deleted_at": v.saved_at,
        }))
    } else {
        ctx.out().line(&format!(
            "Deleted the state of {stack}/{env} (as version {}); `tenancy state rollback --stack {stack} --env {env} --to {}` restores it.",
            v.serial,
            v.serial.saturating_sub(1)
        ))
    }
}
