//! The retry loop behind `acquire(req, wait)`, on core's [`Backoff`].

use std::time::Duration;

use tenancy_core::{Backoff, Clock, Error, LockInfo, LockManager, LockRequest, Result};

/// Retries `locks.try_acquire(req)` with `backoff`, sleeping through `clock`,
/// until it succeeds, fails with anything but [`Error::LockHeld`], or `wait`
/// is used up; then returns the last `LockHeld` (with the current holder).
///
/// Every manager of this crate implements `acquire` with this function; other
/// [`LockManager`] implementations may use it too.
pub async fn acquire_with_backoff(
    locks: &dyn LockManager,
    clock: &dyn Clock,
    backoff: &Backoff,
    req: &LockRequest,
    wait: Duration,
) -> Result<LockInfo> {
    req.validate()?;
    let start = clock.now();
    let wait_chrono = tenancy_core::clock::chrono_duration(wait);
    let mut attempt = 0u32;
    loop {
        match locks.try_acquire(req).await {
            Err(Error::LockHeld { holder }) => {
                let elapsed = clock.now() - start;
                if elapsed >= wait_chrono {
                    return Err(Error::LockHeld { holder });
                }
                let left = (wait_chrono - elapsed).to_std().unwrap_or(Duration::ZERO);
                let delay = backoff.next_delay(attempt).min(left);
                // A zero delay would spin; wait at least a millisecond.
                clock.sleep(delay.max(Duration::from_millis(1))).await;
                attempt = attempt.saturating_add(1);
            }
            other => return other,
        }
    }
}
