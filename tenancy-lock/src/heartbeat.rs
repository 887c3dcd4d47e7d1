//! `HeartbeatGuard`: keeps a lease alive during a long operation by renewing
//! it every ttl/3, and reports the loss of the lock instead of hiding it.

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{Error, LockId, LockInfo, LockKey, LockManager, Result};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a [`HeartbeatGuard`] knows about its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatState {
    /// The lease is held; this is its latest renewal.
    Held(LockInfo),
    /// The lease is gone: a renew was refused (taken over, force-unlocked,
    /// expired), or renewals failed until the lease ran out. Work protected
    /// by the lock must stop.
    Lost {
        /// The last lease the guard held.
        lease: LockInfo,
        /// Why the guard considers it lost.
        reason: String,
    },
}

impl HeartbeatState {
    /// The latest lease (held or lost).
    pub fn lease(&self) -> &LockInfo {
        match self {
            HeartbeatState::Held(l) | HeartbeatState::Lost { lease: l, .. } => l,
        }
    }

    /// True once the lease is lost.
    pub fn is_lost(&self) -> bool {
        matches!(self, HeartbeatState::Lost { .. })
    }
}

/// Renews a lease every ttl/3 in a tokio task until [`release`](Self::release)
/// (which stops renewing and releases the lock) or drop (which only stops
/// renewing: the lease then runs out after its TTL).
///
/// A refused renew (the lease was taken over, force-unlocked or had expired)
/// marks the lease lost at once. A failing backend is retried every ttl/12
/// until the lease would have run out, then the lease is marked lost too; so
/// is a renew still unanswered then (a hung store), and each renewed lease
/// is counted from when its request was sent, not from its answer.
/// [`lost`](Self::lost), [`check`](Self::check), [`watch`](Self::watch) and
/// [`wait_lost`](Self::wait_lost) report it.
#[derive(Debug)]
pub struct HeartbeatGuard {
    manager: Arc<dyn LockManager>,
    key: LockKey,
    lock_id: LockId,
    fencing_token: u64,
    state: watch::Receiver<HeartbeatState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HeartbeatGuard {
    /// Starts renewing `lease` (as returned by `acquire` on `manager`) with
    /// `ttl` every `ttl / 3`.
    ///
    /// # Panics
    ///
    /// Like `tokio::spawn`, when called outside a tokio runtime.
    pub fn start(manager: Arc<dyn LockManager>, lease: LockInfo, ttl: Duration) -> HeartbeatGuard {
        let (tx, rx) = watch::channel(HeartbeatState::Held(lease.clone()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(renew_loop(
            Arc::clone(&manager),
            lease.clone(),
            ttl,
            tx,
            stop_rx,
        ));
        HeartbeatGuard {
            manager,
            key: lease.key,
            lock_id: lease.lock_id,
            fencing_token: lease.fencing_token,
            state: rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The lock key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The lease's lock id.
    pub fn lock_id(&self) -> LockId {
        self.lock_id
    }

    /// The lease's fencing token: pass it to the store you write under the
    /// lock, so it can refuse writes from an older lease.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The latest lease (after the last successful renew).
    pub fn lease(&self) -> LockInfo {
        self.state.borrow().lease().clone()
    }

    /// True once the lease is lost.
    pub fn lost(&self) -> bool {
        self.state.borrow().is_lost()
    }

    /// The latest lease while it is held; [`Error::Precondition`] saying why
    /// once it is lost. Call it before each step that needs the lock.
    pub fn check(&self) -> Result<LockInfo> {
        match &*self.state.borrow() {
            HeartbeatState::Held(l) => Ok(l.clone()),
            HeartbeatState::Lost { lease, reason } => Err(lost_error(lease, reason)),
        }
    }

    /// A receiver that sees every renewal and the loss of the lease.
    pub fn watch(&self) -> watch::Receiver<HeartbeatState> {
        self.state.clone()
    }

    /// Resolves when the lease is lost, with the error [`check`](Self::check)
    /// would give; never resolves while it is held. Use it in `tokio::select!`
    /// to abandon work when the lock goes.
    pub async fn wait_lost(&self) -> Error {
        let mut rx = self.state.clone();
        loop {
            if let HeartbeatState::Lost { lease, reason } = &*rx.borrow_and_update() {
                return lost_error(lease, reason);
            }
            if rx.changed().await.is_err() {
                // The renew task ended without a loss: it was stopped, which
                // only happens through `self`; wait forever like a held lease.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops renewing and releases the lock.
    ///
    /// If the lease had been lost, the lock is still released where this
    /// lease holds it, and the loss is returned as the error, so the caller
    /// learns that its work ran unprotected.
    pub async fn release(mut self) -> Result<()> {
        self.stop_renewing().await;
        let lost = self.check().err();
        let released = self.manager.release(&self.key, self.lock_id).await;
        match (lost, released) {
            (Some(e), _) => Err(e),
            (None, r) => r,
        }
    }

    async fn stop_renewing(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already (lease lost); nothing to tell it then.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A renew task that panicked has nothing left to stop.
            let _ = task.await;
        }
    }
}

fn lost_error(lease: &LockInfo, reason: &str) -> Error {
    Error::precondition(format!(
        "lock {} (lock id {}, fencing token {}) was lost: {reason}",
        lease.key, lease.lock_id, lease.fencing_token
    ))
}

async fn renew_loop(
    manager: Arc<dyn LockManager>,
    mut lease: LockInfo,
    ttl: Duration,
    tx: watch::Sender<HeartbeatState>,
    mut stop: oneshot::Receiver<()>,
) {
    let interval = ttl / 3;
    let retry = ttl / 12;
    let mut deadline = Instant::now() + ttl;
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // The renewed lease runs from no earlier than the request was sent;
        // a renew that has not answered when the lease would run out (a
        // store that hangs) cannot have kept it.
        let sent = Instant::now();
        let renewed = tokio::select! {
            _ = &mut stop => return,
            r = tokio::time::timeout_at(deadline, manager.renew(&lease.key, lease.lock_id, ttl)) => r,
        };
        let Ok(renewed) = renewed else {
            let reason = "no renewal answered before the lease ran out".to_string();
            tx.send_replace(HeartbeatState::Lost { lease, reason });
            return;
        };
        match renewed {
            Ok(info) => {
                deadline = sent + ttl;
                wait = interval;
                lease = info.clone();
                tx.send_replace(HeartbeatState::Held(info));
            }
            Err(e) if e.is_temporary() && Instant::now() < deadline => {
                wait = retry.min(deadline.saturating_duration_since(Instant::now()));
            }
            Err(e) => {
                let reason = if e.is_temporary() {
                    format!("renewals failed until the lease ran out; last error: {e}")
                } else {
                    format!("renew refused: {e}")
                };
                tx.send_replace(HeartbeatState::Lost { lease, reason });
                return;
            }
        }
    }
}
