//! Hold a lock around a state save, with the heartbeat guard.
//!
//! A tenant team's deploy takes the lock of `stack:web:env:prod` on a shared
//! store (local files in a temp dir here; `s3://` works the same), keeps it
//! alive with a [`HeartbeatGuard`] while it works, checks the guard before
//! writing, saves the new state with the lease's fencing token in it, and
//! releases. A second deploy that tries meanwhile is told who holds the lock.
//!
//! Run: `cargo run -p tenancy-examples --example lock_heartbeat`

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{Error, LockKey, LockManager, LockRequest, TenantId};
use tenancy_lock::{HeartbeatGuard, StoreLockManager, TenantLocks};
use tenancy_state::stack::StackStore;
use tenancy_state::{LocalBackend, TenantScoped};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::backend("local", e))?;
    let shared = LocalBackend::open(dir.path())?;
    let tenant = TenantId::new("acme")?;

    // Locks live under locks/tenant:acme:..., state under tenants/acme/v1/.
    let locks: Arc<dyn LockManager> = Arc::new(TenantLocks::new(
        StoreLockManager::new(shared.clone()),
        tenant.clone(),
    ));
    let stacks = StackStore::new(TenantScoped::new(shared.clone(), &tenant, "v1")?);

    let key = LockKey::stack_env("web", "prod")?;
    let ttl = Duration::from_secs(3);
    let lease = locks
        .acquire(
            &LockRequest::new(key.clone(), ttl)
                .operation("deploy")
                .info("release 2024.06.1"),
            Duration::from_secs(30),
        )
        .await?;
    println!(
        "acquired {} as {} (lock id {}, fencing token {}, expires {})",
        lease.key, lease.who, lease.lock_id, lease.fencing_token, lease.expires
    );
    let guard = HeartbeatGuard::start(Arc::clone(&locks), lease.clone(), ttl);

    // Someone else's deploy is refused and told who holds the lock.
    match locks
        .try_acquire(&LockRequest::new(key.clone(), ttl).who("bob@ci"))
        .await
    {
        Err(Error::LockHeld { holder }) => println!(
            "second deploy refused: held by {} for {:?} until {}",
            holder.who, holder.operation, holder.expires
        ),
        other => return Err(Error::invalid(format!("expected LockHeld, got {other:?}"))),
    }

    // A long operation: longer than the TTL, so the guard must renew.
    tokio::time::sleep(Duration::from_millis(4500)).await;

    // Check the lease right before writing; the fencing token goes with the write.
    let held = guard.check()?;
    println!(
        "still held after {:.1} s (ttl {} s): last heartbeat {}, expires {}",
        (held.last_heartbeat - lease.created).num_milliseconds() as f64 / 1000.0,
        ttl.as_secs(),
        held.last_heartbeat,
        held.expires
    );
    let current = stacks.current("web", "prod").await?;
    let saved = stacks
        .save(
            "web",
            "prod",
            &serde_json::json!({
                "replicas": 3,
                "image": "web:2024.06.1",
                "fencing_token": guard.fencing_token(),
            }),
            current.map(|s| s.serial),
        )
        .await?;
    println!("saved state serial {} under the lock", saved.serial);

    guard.release().await?;
    println!(
        "released; lock is now {}",
        if locks.inspect(&key).await?.is_some() {
            "held"
        } else {
            "free"
        }
    );
    Ok(())
}
