//! The `LockManager` conformance suite.
//!
//! The manager under test must read time from the [`ManualClock`] passed in,
//! so expiry is tested by moving the clock, never by sleeping.

use std::time::Duration;

use super::SuiteReport;
use crate::clock::ManualClock;
use crate::error::Error;
use crate::keys::LockKey;
use crate::lock::{LockManager, LockRequest};

fn req(key: &LockKey, ttl: u64) -> LockRequest {
    LockRequest::new(key.clone(), Duration::from_secs(ttl)).operation("conformance")
}

/// Runs the lock suite. `clock` must be the clock `locks` reads.
pub async fn conformance(locks: &dyn LockManager, clock: &ManualClock) -> SuiteReport {
    let mut report = SuiteReport::new("lock");
    let key = LockKey::new(format!(
        "tk-{}:stack:web:env:prod",
        uuid::Uuid::new_v4().simple()
    ))
    .expect("valid lock key");

    // acquire, held, release, re-acquire with a larger fencing token
    let first = locks
        .try_acquire(&req(&key, 30))
        .await
        .expect("acquire a free lock");
    assert_eq!(first.key, key);
    assert_eq!(first.operation, "conformance");
    match locks.try_acquire(&req(&key, 30)).await {
        Err(Error::LockHeld { holder }) => assert_eq!(holder.lock_id, first.lock_id),
        other => panic!("a held lock must give LockHeld with the holder, got {other:?}"),
    }
    let seen = locks.inspect(&key).await.expect("inspect").expect("held");
    assert_eq!(seen.lock_id, first.lock_id);
    locks
        .release(&key, first.lock_id)
        .await
        .expect("holder releases");
    assert!(
        locks.inspect(&key).await.expect("inspect").is_none(),
        "released lock is free"
    );
    let second = locks.try_acquire(&req(&key, 30)).await.expect("re-acquire");
    assert!(
        second.fencing_token > first.fencing_token,
        "fencing token must grow across release"
    );
    report.pass("acquire_release");

    // expiry takeover by moving the clock
    clock.advance(Duration::from_secs(31));
    let third = locks
        .try_acquire(&req(&key, 30))
        .await
        .expect("take over an expired lock");
    assert!(
        third.fencing_token > second.fencing_token,
        "fencing token grows on takeover"
    );
    let err = locks
        .release(&key, second.lock_id)
        .await
        .expect_err("a lease from before the takeover cannot release");
    assert!(
        matches!(err, Error::Precondition { .. } | Error::NotFound { .. }),
        "a stale release gives Precondition or NotFound, got {err}"
    );
    let held = locks
        .inspect(&key)
        .await
        .expect("inspect")
        .expect("still held");
    assert_eq!(
        held.lock_id, third.lock_id,
        "a refused release changes nothing"
    );
    locks.release(&key, third.lock_id).await.expect("release");
    report.pass("expiry_takeover");
    report
}
