//! Tenant lock commands: `lock acquire|release|renew|list|force-unlock`.
//!
//! Every call goes through the tenant's own locks ([`super::TenantApi::locks`]:
//! `TenantLocks` on a store, the server's `/v1/locks` in remote mode), so a
//! tenant only ever names keys below `tenant:<id>:`; lock keys are
//! `stack:<stack>:env:<env>`.

use serde_json::json;
use tenancy_core::lock::validate_ttl;
use tenancy_core::{LockInfo, LockRequest};
use tenancy_server::views::{LockList, LockView};

use super::Ctx;
use crate::cli::{
    LockAcquireArgs, LockForceArgs, LockHeldArgs, LockListArgs, LockRenewArgs, StackEnv,
};
use crate::output::{ago, time};

/// `user@host` for the lock holder: the user from the environment, the host
/// name from the OS (`HOSTNAME` is a shell variable that is rarely exported).
fn holder_name() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    tenancy_core::lock::who(&user, &host)
}

/// A lock as `--output json` shows it: the server's [`LockView`].
fn info_json(i: &LockInfo) -> LockView {
    LockView::from(i.clone())
}

/// A refusal because another lock id holds the lock (or none does), with
/// where to see the holder.
fn not_the_holder(e: tenancy_core::Error, action: &str) -> anyhow::Error {
    match e {
        e @ (tenancy_core::Error::Precondition { .. } | tenancy_core::Error::NotFound { .. }) => {
            anyhow::Error::new(e).context(format!(
                "cannot {action} the lock; `tenancy lock list` shows who holds it and with which lock id"
            ))
        }
        e => e.into(),
    }
}

/// `tenancy lock acquire`.
pub(crate) async fn acquire(ctx: &mut Ctx<'_>, args: LockAcquireArgs) -> anyhow::Result<()> {
    let LockAcquireArgs {
        at,
        ttl,
        wait,
        operation,
    } = args;
    let key = at.lock_key()?;
    let StackEnv { stack, env } = at;
    validate_ttl(ttl)?;
    let locks = ctx.require_tenant().await?.locks();
    let req = LockRequest::new(key.clone(), ttl)
        .operation(operation)
        .who(holder_name());
    req.validate()?;
    let info = if wait.is_zero() {
        locks.try_acquire(&req).await?
    } else {
        locks.acquire(&req, wait).await?
    };
    if ctx.is_json() {
        ctx.out().json(&info_json(&info))
    } else {
        ctx.out().pairs(vec![
            ("lock", info.key.to_string().into()),
            ("lock_id", info.lock_id.to_string().into()),
            ("fencing_token", info.fencing_token.to_string().into()),
            ("expires", time(&info.expires).into()),
        ])?;
        ctx.note(&format!(
            "Release it with `tenancy lock release --stack {stack} --env {env} --id {}`.",
            info.lock_id
        ))
    }
}

/// `tenancy lock release`.
pub(crate) async fn release(ctx: &mut Ctx<'_>, args: LockHeldArgs) -> anyhow::Result<()> {
    let key = args.at.lock_key()?;
    let lock_id = args.id;
    let locks = ctx.require_tenant().await?.locks();
    locks
        .release(&key, lock_id)
        .await
        .map_err(|e| not_the_holder(e, "release"))?;
    if ctx.is_json() {
        ctx.out()
            .json(&json!({ "released": true, "key": key, "lock_id": lock_id }))
    } else {
        ctx.out().line(&format!("Released lock {key}."))
    }
}

/// `tenancy lock renew`.
pub(crate) async fn renew(ctx: &mut Ctx<'_>, args: LockRenewArgs) -> anyhow::Result<()> {
    let key = args.held.at.lock_key()?;
    let (lock_id, ttl) = (args.held.id, args.ttl);
    validate_ttl(ttl)?;
    let locks = ctx.require_tenant().await?.locks();
    let info = locks
        .renew(&key, lock_id, ttl)
        .await
        .map_err(|e| not_the_holder(e, "renew"))?;
    if ctx.is_json() {
        ctx.out().json(&info_json(&info))
    } else {
        ctx.out().line(&format!(
            "Renewed lock {key} until {}.",
            time(&info.expires)
        ))
    }
}

/// `tenancy lock list [--tenant ID]`: this tenant's held locks, or (admin)
/// any tenant's.
pub(crate) async fn list(ctx: &mut Ctx<'_>, args: LockListArgs) -> anyhow::Result<()> {
    let all = match &args.tenant {
        Some(id) => ctx.require_admin_access().await?.list(id).await?,
        None => {
            let locks = ctx.require_tenant().await?.locks();
            let mut all = locks.list("").await?;
            all.sort_by(|a, b| a.key.cmp(&b.key));
            all
        }
    };
    if ctx.is_json() {
        // The server's `GET /v1/locks` shape.
        let locks = all.iter().map(info_json).collect();
        return ctx.out().json(&LockList { locks });
    }
    let now = ctx.now();
    let rows = all
        .iter()
        .map(|i| {
            vec![
                i.key.to_string().into(),
                i.lock_id.to_string().into(),
                i.who.clone().into(),
                i.operation.clone().into(),
                i.fencing_token.to_string().into(),
                format!("{} ({})", time(&i.expires), ago(&i.expires, now)).into(),
            ]
        })
        .collect();
    ctx.out().table(
        &["KEY", "LOCK ID", "WHO", "OPERATION", "FENCING", "EXPIRES"],
        rows,
        "No locks held.",
    )
}

/// `tenancy lock force-unlock [--tenant ID]`.
pub(crate) async fn force_unlock(ctx: &mut Ctx<'_>, args: LockForceArgs) -> anyhow::Result<()> {
    let key = args.held.at.lock_key()?;
    let lock_id = args.held.id;
    let done = match &args.tenant {
        Some(id) => {
            ctx.require_admin_access()
                .await?
                .force_unlock(id, &key, lock_id)
                .await
        }
        None => {
            let tenant = ctx.require_tenant().await?;
            tenant.force_unlock(&key, lock_id).await
        }
    };
    done.map_err(|e| not_the_holder(e, "force-unlock"))?;
    if ctx.is_json() {
        ctx.out()
            .json(&json!({ "unlocked": true, "key": key, "lock_id": lock_id }))
    } else {
        ctx.out().line(&format!("Force-unlocked {key}."))
    }
}
