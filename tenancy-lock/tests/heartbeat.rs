//! The heartbeat guard, on tokio's paused clock and a manual lock clock that
//! move together: no test sleeps through a real TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{
    Clock, Error, LockId, LockInfo, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend,
    Result,
};
use tenancy_lock::{HeartbeatGuard, HeartbeatState, MemoryLockManager, StoreLockManager};

const TTL: Duration = Duration::from_secs(30);

fn key() -> LockKey {
    LockKey::new(format!("hb-{}:job", uuid::Uuid::new_v4().simple())).expect("key")
}

/// Moves both clocks forward one second at a time, letting the renew task run.
async fn pass(clock: &ManualClock, secs: u64) {
    for _ in 0..secs {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
}

fn managers(clock: &ManualClock) -> Vec<Arc<dyn LockManager>> {
    vec![
        Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone()))),
        Arc::new(StoreLockManager::new(MemoryBackend::new()).with_clock(Arc::new(clock.clone()))),
    ]
}

#[tokio::test(start_paused = true)]
async fn keeps_the_lock_past_its_ttl_until_released() {
    let clock = ManualClock::starting_now();
    for m in managers(&clock) {
        let key = key();
        let lease = m
            .try_acquire(&LockRequest::new(key.clone(), TTL).operation("long job"))
            .await
            .expect("acquire");
        let guard = HeartbeatGuard::start(Arc::clone(&m), lease.clone(), TTL);
        assert_eq!(guard.fencing_token(), lease.fencing_token);
        assert_eq!(guard.lock_id(), lease.lock_id);
        pass(&clock, 5 * 30).await; // five TTLs
        let now = m.inspect(&key).await.expect("inspect").expect("still held");
        assert_eq!(now.lock_id, lease.lock_id);
        assert!(now.expires > lease.expires + chrono::Duration::seconds(100));
        assert!(!guard.lost());
        let checked = guard.check().expect("held");
        assert_eq!(checked.lock_id, lease.lock_id);
        assert!(checked.last_heartbeat > lease.last_heartbeat);
        assert!(matches!(
            m.try_acquire(&LockRequest::new(key.clone(), TTL)).await,
            Err(Error::LockHeld { .. })
        ));
        guard.release().await.expect("release");
        assert!(m.inspect(&key).await.expect("inspect").is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn reports_the_loss_of_the_lock() {
    let clock = ManualClock::starting_now();
    for m in managers(&clock) {
        let key = key();
        let lease = m
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acquire");
        let guard = HeartbeatGuard::start(Arc::clone(&m), lease.clone(), TTL);
        let mut watch = guard.watch();
        pass(&clock, 12).await;
        assert!(!guard.lost());

        // An admin force-unlocks and someone else takes the lock.
        m.force_unlock(&key, lease.lock_id)
            .await
            .expect("force-unlock");
        let thief = m
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acquire");
        pass(&clock, 11).await;

        assert!(guard.lost(), "the guard noticed");
        let e = guard.check().expect_err("lost");
        assert!(matches!(e, Error::Precondition { .. }), "{e}");
        assert!(e.to_string().contains("lost"), "{e}");
        let e = guard.wait_lost().await;
        assert!(matches!(e, Error::Precondition { .. }));
        assert!(watch.borrow_and_update().is_lost());
        assert!(matches!(
            &*watch.borrow(),
            HeartbeatState::Lost { lease: l, .. } if l.lock_id == lease.lock_id
        ));

        let e = guard.release().await.expect_err("release reports the loss");
        assert!(matches!(e, Error::Precondition { .. }), "{e}");
        assert_eq!(
            m.inspect(&key).await.expect("inspect").map(|i| i.lock_id),
            Some(thief.lock_id),
            "releasing a lost guard leaves the new holder alone"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn drop_stops_renewing() {
    let clock = ManualClock::starting_now();
    for m in managers(&clock) {
        let key = key();
        let lease = m
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acquire");
        let guard = HeartbeatGuard::start(Arc::clone(&m), lease, TTL);
        pass(&clock, 15).await;
        let renewed = guard.lease();
        drop(guard);
        pass(&clock, 31).await;
        assert!(clock.now() >= renewed.expires);
        assert!(
            m.inspect(&key).await.expect("inspect").is_none(),
            "a dropped guard no longer renews: the lease runs out"
        );
    }
}

/// A manager whose renew fails with a backend error while `down` is set,
/// and never answers while `hung` is set.
#[derive(Debug)]
struct Flaky {
    inner: MemoryLockManager,
    down: AtomicBool,
    hung: AtomicBool,
}

impl Flaky {
    fn on(clock: &ManualClock) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryLockManager::new().with_clock(Arc::new(clock.clone())),
            down: AtomicBool::new(false),
            hung: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl LockManager for Flaky {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        self.inner.try_acquire(req).await
    }
    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        self.inner.acquire(req, wait).await
    }
    async fn renew(&self, key: &LockKey, id: LockId, ttl: Duration) -> Result<LockInfo> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::backend("flaky", "connection refused"));
        }
        if self.hung.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        self.inner.renew(key, id, ttl).await
    }
    async fn release(&self, key: &LockKey, id: LockId) -> Result<()> {
        self.inner.release(key, id).await
    }
    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        self.inner.inspect(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.inner.list(prefix).await
    }
    async fn force_unlock(&self, key: &LockKey, id: LockId) -> Result<()> {
        self.inner.force_unlock(key, id).await
    }
}

#[tokio::test(start_paused = true)]
async fn rides_out_short_outages_and_reports_long_ones() {
    let clock = ManualClock::starting_now();
    let flaky = Flaky::on(&clock);
    let m: Arc<dyn LockManager> = flaky.clone();
    let key = key();
    let lease = m
        .try_acquire(&LockRequest::new(key.clone(), TTL))
        .await
        .expect("acquire");
    let guard = HeartbeatGuard::start(Arc::clone(&m), lease.clone(), TTL);

    // A 15 s outage: renewals fail, then succeed again before the lease ends.
    pass(&clock, 5).await;
    flaky.down.store(true, Ordering::SeqCst);
    pass(&clock, 15).await;
    assert!(!guard.lost(), "a short outage is ridden out");
    flaky.down.store(false, Ordering::SeqCst);
    pass(&clock, 15).await;
    assert!(!guard.lost());
    assert_eq!(
        m.inspect(&key).await.expect("inspect").map(|i| i.lock_id),
        Some(lease.lock_id)
    );

    // An outage longer than the TTL: the guard reports the loss.
    flaky.down.store(true, Ordering::SeqCst);
    pass(&clock, 31).await;
    assert!(guard.lost(), "a lease that could not be renewed is lost");
    let e = guard.check().expect_err("lost");
    assert!(e.to_string().contains("connection refused"), "{e}");
    flaky.down.store(false, Ordering::SeqCst);
    assert!(guard.release().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_renew_that_never_answers_loses_the_lease_when_it_runs_out() {
    let clock = ManualClock::starting_now();
    let flaky = Flaky::on(&clock);
    let m: Arc<dyn LockManager> = flaky.clone();
    let lease = m
        .try_acquire(&LockRequest::new(key(), TTL))
        .await
        .expect("acquire");
    let guard = HeartbeatGuard::start(Arc::clone(&m), lease, TTL);
    pass(&clock, 12).await;
    assert!(!guard.lost());
    // The store stops answering (a half-open connection, a stalled
    // database): the renew sent at 20 s never returns. By 10 s + TTL the
    // last renewed lease has run out and someone else may hold the lock.
    flaky.hung.store(true, Ordering::SeqCst);
    pass(&clock, TTL.as_secs()).await;
    assert!(
        guard.lost(),
        "a guard whose renew hangs must not go on reporting the lock held"
    );
    let e = guard.check().expect_err("lost");
    assert!(e.to_string().contains("no renewal answered"), "{e}");
    // Releasing does not wait on the hung renew either.
    flaky.hung.store(false, Ordering::SeqCst);
    let _ = guard.release().await;
}
