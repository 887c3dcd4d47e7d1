//! Helpers shared by the lock managers: building leases and the errors for
//! refused renew, release and force-unlock calls.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tenancy_core::clock::chrono_duration;
use tenancy_core::{Error, LockId, LockInfo, LockKey, LockRequest, TOOL_VERSION};

/// A fresh lease for `req`, taken at `now` with `fencing_token`, with the
/// request's lock id if it names one, else a random one.
pub(crate) fn new_lease(req: &LockRequest, now: DateTime<Utc>, fencing_token: u64) -> LockInfo {
    LockInfo {
        key: req.key.clone(),
        lock_id: req.lock_id.unwrap_or_else(random_lock_id),
        tenant: req.tenant.clone(),
        who: req.who.clone(),
        operation: req.operation.clone(),
        created: now,
        expires: expiry(now, req.ttl),
        last_heartbeat: now,
        fencing_token,
        version: req
            .version
            .clone()
            .unwrap_or_else(|| TOOL_VERSION.to_string()),
        info: req.info.clone(),
        path: req.path.clone(),
    }
}

/// A random (version 4) lock id from the thread-local CSPRNG, which is
/// reseeded from the OS (cheaper than one OS call per id).
pub(crate) fn random_lock_id() -> LockId {
    let bytes: [u8; 16] = rand::Rng::gen(&mut rand::thread_rng());
    LockId(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// `now + ttl`, saturating at the far future.
pub(crate) fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now.checked_add_signed(chrono_duration(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What a renew, release or force-unlock by `lock_id` finds at `key`.
pub(crate) enum Holder<'a> {
    /// Nobody holds the key (never taken, released, or force-unlocked).
    Free,
    /// `lock_id` holds the key (its lease may have run out).
    Mine(&'a LockInfo),
    /// Someone else holds the key, or took it over.
    Other(&'a LockInfo),
}

/// Classifies the current holder for a call by `lock_id`.
pub(crate) fn classify(holder: Option<&LockInfo>, lock_id: LockId) -> Holder<'_> {
    match holder {
        None => Holder::Free,
        Some(h) if h.lock_id == lock_id => Holder::Mine(h),
        Some(h) => Holder::Other(h),
    }
}

/// The error for a call on a key that nobody holds.
pub(crate) fn not_held(key: &LockKey, lock_id: LockId, action: &str) -> Error {
    Error::not_found(format!(
        "lock {key} is not held, so lock id {lock_id} cannot {action} it"
    ))
}

/// The error for a call by a lock id that is not the current holder's.
pub(crate) fn foreign(key: &LockKey, lock_id: LockId, holder: &LockInfo, action: &str) -> Error {
    Error::precondition(format!(
        "lock id {lock_id} cannot {action} lock {key}: it is held by lock id {} ({}, fencing token {}); the lease was lost or never existed",
        holder.lock_id, holder.who, holder.fencing_token
    ))
}

/// The error for renewing a lease that ran out before the renew.
pub(crate) fn expired(key: &LockKey, holder: &LockInfo) -> Error {
    Error::precondition(format!(
        "the lease {} on lock {key} expired at {}; acquire the lock again",
        holder.lock_id, holder.expires
    ))
}
