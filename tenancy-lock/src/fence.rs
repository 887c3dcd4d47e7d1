//! Writes made under a lock: whether a lock id holds a key, and the fencing
//! token the write records (the store refuses a token below the last one).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tenancy_core::clock::chrono_duration;
use tenancy_core::{Error, LockId, LockInfo, LockKey, LockManager, Result};

/// True when less than half of `ttl` is left on `held`'s lease at `now`.
fn renew_due(held: &LockInfo, ttl: Duration, now: DateTime<Utc>) -> bool {
    held.expires - now < chrono_duration(ttl / 2)
}

/// Decides whether a write of `key`'s data may go on, given the lock id
/// `given` it is made under (`None`: no lock):
///
/// - unlocked and no id: `Ok(None)`, an unfenced write;
/// - locked and no id: [`Error::LockHeld`] with the holder;
/// - an id that does not hold the lock (its lease ran out, it was
///   force-unlocked, or another holder took over): [`Error::Fenced`];
/// - the holder's id: `Ok(Some(fencing token))`, after extending the lease
///   to `extend` from now when given and less than half of `extend` is
///   left (a client that never renews, like Terraform, keeps its lock alive
///   by writing under it, and a write on a fresh lease costs no renew).
pub async fn holder_fence(
    locks: &dyn LockManager,
    key: &LockKey,
    given: Option<LockId>,
    extend: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Option<u64>> {
    let holder = locks.inspect(key).await?;
    match (holder, given) {
        (None, None) => Ok(None),
        (Some(h), None) => Err(Error::LockHeld {
            holder: Box::new(h),
        }),
        (None, Some(id)) => Err(Error::Fenced {
            what: format!(
                "lock {id} of {key} is not held any more (its lease ran out or it was force-unlocked); lock again and read the state again"
            ),
        }),
        (Some(h), Some(id)) if h.lock_id != id => Err(Error::Fenced {
            what: format!(
                "lock {id} does not hold {key}: lock {} of {} does (fencing token {})",
                h.lock_id, h.who, h.fencing_token
            ),
        }),
        (Some(h), Some(id)) => match extend {
            None => Ok(Some(h.fencing_token)),
            Some(ttl) if !renew_due(&h, ttl, now) => Ok(Some(h.fencing_token)),
            Some(ttl) => match locks.renew(key, id, ttl).await {
                Ok(info) => Ok(Some(info.fencing_token)),
                Err(e) if e.is_conflict() || e.is_not_found() => Err(Error::Fenced {
                    what: format!("lock {id} of {key} was lost: {e}"),
                }),
                Err(e) => Err(e),
            },
        },
    }
}
