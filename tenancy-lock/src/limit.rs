//! `LimitedLocks`: a tenant's locks with a limit on how many it holds at
//! once (the plan's `max_locks`), counted atomically in one
//! compare-and-swap record, where a lease that runs out stops counting
//! without anyone releasing it.
//!
//! It is a layer (like OpenDAL's): it wraps any [`LockManager`], usually a
//! tenant's [`TenantLocks`](crate::TenantLocks) view, and every acquire
//! through it is counted without its caller knowing. The server applies it
//! where it builds a tenant's lock manager, so every lock route is counted.
//!
//! # The record
//!
//! `locks-held/<tenant>.json` (core's `layout::locks_held`, outside the
//! tenant's own tree, so a tenant that writes its state cannot change it): a
//! JSON [`HeldRecord`] with one [`HeldEntry`] `(key, lock id, claim, until)`
//! per acquire that went through this layer and may hold its lock. The claim
//! is the acquire's own random id (a client may choose its lock id, and use
//! one twice, so entries are removed by claim). `until` is when the entry's
//! lease ends as far as the record knows: the acquire's `now + ttl`, moved
//! only when a prune reads the real lease (a renew moves the lease, not the
//! record, so renewing costs nothing here). The **count** is the number of
//! distinct keys among the entries: a key is held by at most one lease, so
//! another try on a held key needs no new slot. At most one entry has a
//! given key and lock id.
//!
//! # The invariant, and why the limit holds
//!
//! *Every lease taken through this layer that is still held has its entry in
//! the record*, and *no write adds a key while the record already counts
//! `limit` keys*. So the locks held never exceed the limit, however many
//! acquires run at once, on one server or many: the record is only ever
//! written with compare-and-swap (core's `update_with`), so of N concurrent
//! acquires with room for L, exactly L add their key and the rest are
//! refused with [`Error::QuotaExceeded`] naming `locks_held`.
//!
//! # Protocol
//!
//! - **acquire**: the lease's lock id is the request's or a fresh random one
//!   (`LockRequest::lock_id`), and the acquire gets a fresh claim; CAS-add
//!   `(key, id, claim, now + ttl)` (refused when full, after a prune; an
//!   entry of the same key and id that is still live refuses it, as
//!   `LockHeld` when the lock is held, else as an acquire in flight); then
//!   acquire through the inner manager with that id. A definite refusal
//!   (`LockHeld` by another id, bad input) removes the entry; an ambiguous
//!   failure (a backend error: the write may have landed) leaves it to
//!   expire. An acquire that returns only at or after its entry's `until`
//!   (it took longer than its ttl) confirms its entry with one more CAS (or
//!   re-adds it within the limit, else releases the lease and is refused),
//!   because a prune may have judged it meanwhile.
//! - **release / force-unlock**: read the claim of the lease's entry, free
//!   the lease through the inner manager, then CAS-remove that claim (not
//!   whatever entry has the lock id then: an acquire of the same id that
//!   came after the free keeps its entry). A crash or failure in between
//!   leaves the entry until its `until`, then a prune drops it.
//! - **renew, inspect, list**: straight to the inner manager.
//! - **prune** (when the record is full, when it holds more than
//!   [`DUPLICATE_SLACK`] entries beyond its distinct keys, and in
//!   [`LimitedLocks::held`]): an entry whose `until` has passed is checked
//!   against the lock itself (`inspect`, after reading the clock): still
//!   held by its lock id (it was renewed), it stays with `until` = the
//!   lease's expiry; otherwise it is dropped. The drop is applied only to
//!   the very entry that was checked (same key, id, claim and `until`), on a
//!   fresh read, with compare-and-swap.
//!
//! # Why a crash or a lost release never leaks a slot
//!
//! Nothing but a live lease keeps an entry counted past its `until`: an
//! entry left by a server killed between any two steps, by a release whose
//! removal failed, or by a lease that simply ran out, is dropped by the
//! first prune after its `until` (at most the lease's ttl, 24 h at most).
//! Dropping is safe: the entry's lease cannot appear after the check. An
//! acquire that returned before `until` wrote its lease before the prune
//! read the clock, so the check sees it; one that returned later confirms
//! its entry, which either makes the prune's compare-and-swap fail (it
//! re-reads and keeps the entry) or finds it gone and re-adds it within the
//! limit; another acquire of the same key and id is refused while the entry
//! is there. A renew of an expired lease is refused, so a dead lease stays
//! dead.
//!
//! # Bounds
//!
//! - Only acquires through this layer count: locks a tenant takes through
//!   the CLI, which talks to the store directly, do not.
//! - Acquires in flight count (their entry is written first), and an entry
//!   left by a crash counts until its `until`: the count may be above the
//!   locks really held by those, never below. An acquire of the same key and
//!   lock id as such a leftover is refused until then.
//! - Expiry reads this layer's clock: it must agree with the inner manager's
//!   (and other replicas') to well within a ttl, as the lease protocol
//!   already needs.
//! - A record that does not decode fails the tenant's acquires and its
//!   count (and only its) with [`Error::Corrupt`]; deleting it starts the count from zero, so
//!   until the locks then held end, the tenant may hold up to twice its limit.
//! - Every acquire costs one read and one compare-and-swap write of the
//!   record (two more when it is refused as held); a release one read more;
//!   a renew nothing. Acquires of one tenant contend on its one record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tenancy_core::{
    Backoff, Clock, Error, ErrorKind, LockId, LockInfo, LockKey, LockManager, LockRequest, Object,
    Resource, Result, Retry, StateBackend, StateBackendExt, StateKey, Step, SystemClock, TenantId,
};

use uuid::Uuid;

use crate::backoff::acquire_with_backoff;
use crate::lease::expiry;

/// The current [`HeldRecord::format`].
pub const HELD_RECORD_FORMAT: u32 = 1;

/// How many entries beyond its distinct keys a record may hold (several
/// tries on one key, leases that ran out on a key taken again) before an
/// acquire prunes it.
pub const DUPLICATE_SLACK: usize = 64;

/// How many rounds of checking stale entries one call makes before giving up.
const MAX_PRUNE_ROUNDS: u32 = 8;

/// How many locks a prune inspects at once.
const INSPECT_CONCURRENCY: usize = 16;

/// The stored record of the locks a tenant holds through [`LimitedLocks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecord {
    /// The record format, [`HELD_RECORD_FORMAT`].
    pub format: u32,
    /// The tenant.
    pub tenant: TenantId,
    /// The acquires that may hold their lock.
    #[serde(default)]
    pub entries: Vec<HeldEntry>,
}

/// One acquire that may hold its lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeldEntry {
    /// The lock key (as the wrapped manager names it).
    pub key: LockKey,
    /// The lease's lock id (the client's, or one this layer picked).
    pub lock_id: LockId,
    /// This acquire's own id: a client may use one lock id more than once,
    /// so entries are removed by claim, never by lock id.
    pub claim: Uuid,
    /// When the lease ends as far as the record knows (see the [module docs](self)).
    pub until: DateTime<Utc>,
}

impl HeldRecord {
    fn new(tenant: TenantId) -> Self {
        HeldRecord {
            format: HELD_RECORD_FORMAT,
            tenant,
            entries: Vec::new(),
        }
    }

    /// The count: distinct keys among the entries.
    pub fn keys(&self) -> usize {
        self.entries
            .iter()
            .map(|e| &e.key)
            .collect::<HashSet<_>>()
            .len()
    }

    fn has_key(&self, key: &LockKey) -> bool {
        self.entries.iter().any(|e| e.key == *key)
    }

    /// Applies what the checks found; returns whether anything changed.
    fn apply(&mut self, verdicts: &Verdicts, now: DateTime<Utc>) -> bool {
        let mut changed = false;
        self.entries.retain_mut(|e| {
            if e.until > now {
                return true;
            }
            match verdicts.get(e) {
                Some(Some(until)) => {
                    e.until = *until;
                    changed = true;
                    true
                }
                Some(None) => {
                    changed = true;
                    false
                }
                None => true,
            }
        });
        changed
    }

    /// Entries whose `until` has passed and that no check has judged yet.
    fn unjudged(&self, verdicts: &Verdicts, now: DateTime<Utc>) -> Vec<HeldEntry> {
        self.entries
            .iter()
            .filter(|e| e.until <= now && !verdicts.contains_key(*e))
            .cloned()
            .collect()
    }
}

/// For each checked entry (exactly as it was checked): `Some(expiry)` of its
/// lease when it still holds its lock, `None` when it does not.
type Verdicts = HashMap<HeldEntry, Option<DateTime<Utc>>>;

/// What one attempt on the record decided.
enum Seen {
    /// The entry is in (added or confirmed).
    Added,
    /// Full: the count the acquire would have reached.
    Full(usize),
    /// These stale entries must be checked first.
    Check(Vec<HeldEntry>),
    /// Another live entry has this key and lock id.
    Taken,
    /// The count.
    Count(usize),
}

/// A [`LockManager`] whose acquires count against a limit on the locks held
/// at once. See the [module docs](self) for the record and the protocol.
#[derive(Debug)]
pub struct LimitedLocks<L: LockManager, B: StateBackend> {
    inner: L,
    backend: B,
    tenant: TenantId,
    record: StateKey,
    limit: u64,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
}

impl<L: LockManager, B: StateBackend> LimitedLocks<L, B> {
    /// `inner` (the tenant's view of its locks) limited to `limit` locks held
    /// at once, counted in `tenant`'s record on `backend`
    /// (`locks-held/<tenant>.json`), on the system clock.
    pub fn new(inner: L, backend: B, tenant: TenantId, limit: u64) -> Result<Self> {
        let record = tenancy_core::layout::locks_held(&tenant)?;
        Ok(LimitedLocks {
            inner,
            backend,
            tenant,
            record,
            limit,
            clock: Arc::new(SystemClock),
            backoff: Backoff::default(),
        })
    }

    /// Reads time (expiry of entries, CAS and acquire sleeps) from `clock`:
    /// the inner manager's clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `backoff` between the retries of `acquire`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Where the record lives.
    pub fn record_key(&self) -> &StateKey {
        &self.record
    }

    /// The locks the tenant holds through this layer now (acquires in flight
    /// included): stale entries are checked against their locks first, and
    /// what the checks found is written back.
    pub async fn held(&self) -> Result<u64> {
        let mut verdicts = Verdicts::new();
        for _ in 0..MAX_PRUNE_ROUNDS {
            let seen = self
                .update(|current, now| {
                    let Some(mut rec) = current else {
                        return Ok(Step::Keep(Seen::Count(0)));
                    };
                    let changed = rec.apply(&verdicts, now);
                    let unjudged = rec.unjudged(&verdicts, now);
                    if !unjudged.is_empty() {
                        return Ok(Step::Keep(Seen::Check(unjudged)));
                    }
                    let count = Seen::Count(rec.keys());
                    self.step(rec, changed, count)
                })
                .await?;
            match seen {
                Seen::Count(n) => return Ok(u64::try_from(n).unwrap_or(u64::MAX)),
                Seen::Check(stale) => verdicts.extend(self.check(stale).await?),
                Seen::Added | Seen::Full(_) | Seen::Taken => return Err(self.kept_changing()),
            }
        }
        Err(self.kept_changing())
    }

    fn what(&self) -> String {
        format!("the locks-held record of tenant {}", self.tenant)
    }

    fn kept_changing(&self) -> Error {
        Error::precondition(format!(
            "{} kept changing under concurrent acquires; try again",
            self.what()
        ))
    }

    fn decode(&self, obj: &Object) -> Result<HeldRecord> {
        let corrupt = |message: String| Error::Corrupt {
            what: format!("{} ({})", self.what(), self.record),
            message,
        };
        let rec: HeldRecord =
            serde_json::from_slice(&obj.bytes).map_err(|e| corrupt(e.to_string()))?;
        if rec.format != HELD_RECORD_FORMAT {
            return Err(corrupt(format!(
                "record format {} is not the supported {HELD_RECORD_FORMAT}",
                rec.format
            )));
        }
        if rec.tenant != self.tenant {
            return Err(corrupt(format!("it belongs to tenant {}", rec.tenant)));
        }
        Ok(rec)
    }

    /// Write `rec` if `changed`, else keep what is stored; either way `seen`.
    fn step(&self, rec: HeldRecord, changed: bool, seen: Seen) -> Result<Step<Seen>> {
        if !changed {
            return Ok(Step::Keep(seen));
        }
        let bytes = serde_json::to_vec(&rec)
            .map_err(|e| Error::invalid(format!("cannot encode {}: {e}", self.what())))?;
        Ok(Step::Write(Bytes::from(bytes), seen))
    }

    /// One compare-and-swap loop on the record; `f` gets the decoded record
    /// (`None` when there is none) and the time.
    async fn update<F>(&self, mut f: F) -> Result<Seen>
    where
        F: FnMut(Option<HeldRecord>, DateTime<Utc>) -> Result<Step<Seen>> + Send,
    {
        let what = self.what();
        let retry = Retry::new(self.clock.as_ref(), &what);
        let updated = self
            .backend
            .update_with(&self.record, retry, |current| {
                let rec = current.map(|o| self.decode(o)).transpose()?;
                f(rec, self.clock.now())
            })
            .await?;
        Ok(updated.value)
    }

    /// Checks stale entries against their locks: one `inspect` per key.
    async fn check(&self, stale: Vec<HeldEntry>) -> Result<Verdicts> {
        let keys: HashSet<LockKey> = stale.iter().map(|e| e.key.clone()).collect();
        let inner = &self.inner;
        let holders: HashMap<LockKey, Option<LockInfo>> = stream::iter(keys)
            .map(|key| async move {
                match inner.inspect(&key).await {
                    Ok(holder) => Ok(Some((key, holder))),
                    // A damaged lock object proves nothing: its entries stay.
                    Err(Error::Corrupt { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        Ok(stale
            .into_iter()
            .filter_map(|e| {
                let holder = holders.get(&e.key)?;
                let held = holder
                    .as_ref()
                    .filter(|h| h.lock_id == e.lock_id)
                    .map(|h| h.expires);
                Some((e, held))
            })
            .collect())
    }

    /// Puts the acquire `claim` of `(key, id)` in the record with `until`.
    /// A new claim needs a slot unless its key is already counted, and is
    /// refused when full after a prune; another entry of the same key and
    /// lock id refuses it (as `LockHeld` when that lock is held, else as an
    /// acquire in flight). A `confirm` (an acquire that outlived its ttl) of
    /// an entry that is there moves its `until` later.
    async fn reserve(
        &self,
        key: &LockKey,
        id: LockId,
        claim: Uuid,
        until: DateTime<Utc>,
        confirm: bool,
    ) -> Result<()> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let mut verdicts = Verdicts::new();
        for _ in 0..MAX_PRUNE_ROUNDS {
            let seen = self
                .update(|current, now| {
                    let mut rec = current.unwrap_or_else(|| HeldRecord::new(self.tenant.clone()));
                    let changed = rec.apply(&verdicts, now);
                    if let Some(e) = rec
                        .entries
                        .iter_mut()
                        .find(|e| e.key == *key && e.lock_id == id)
                    {
                        if confirm || e.claim == claim {
                            if e.until < until {
                                e.until = until;
                            }
                            return self.step(rec, true, Seen::Added);
                        }
                        if e.until <= now {
                            return Ok(Step::Keep(Seen::Check(vec![e.clone()])));
                        }
                        return Ok(Step::Keep(Seen::Taken));
                    }
                    let full = !rec.has_key(key) && rec.keys() >= limit;
                    let bloated = rec.entries.len() >= rec.keys().saturating_add(DUPLICATE_SLACK);
                    if full || bloated {
                        let unjudged = rec.unjudged(&verdicts, now);
                        if !unjudged.is_empty() {
                            return Ok(Step::Keep(Seen::Check(unjudged)));
                        }
                        if full {
                            let reached = rec.keys().saturating_add(1);
                            return self.step(rec, changed, Seen::Full(reached));
                        }
                    }
                    rec.entries.push(HeldEntry {
                        key: key.clone(),
                        lock_id: id,
                        claim,
                        until,
                    });
                    self.step(rec, true, Seen::Added)
                })
                .await?;
            match seen {
                Seen::Added => return Ok(()),
                Seen::Full(reached) => {
                    return Err(Error::QuotaExceeded {
                        tenant: self.tenant.to_string(),
                        resource: Resource::LocksHeld.as_str().to_string(),
                        limit: self.limit,
                        requested: u64::try_from(reached).unwrap_or(u64::MAX),
                        retry_after: None,
                    })
                }
                Seen::Check(stale) => verdicts.extend(self.check(stale).await?),
                Seen::Taken => {
                    return Err(match self.inner.inspect(key).await? {
                        Some(holder) => Error::LockHeld {
                            holder: Box::new(holder),
                        },
                        None => Error::precondition(format!(
                            "lock {key} is being acquired with lock id {id} by another request; try again"
                        )),
                    })
                }
                Seen::Count(_) => return Err(self.kept_changing()),
            }
        }
        Err(self.kept_changing())
    }

    /// The claim of the entry of `(key, id)`, if the record has one (a
    /// record that cannot be read has none: the free goes on).
    async fn claim_of(&self, key: &LockKey, id: LockId) -> Option<Uuid> {
        let obj = self.backend.get(&self.record).await.ok()??;
        let rec = self.decode(&obj).ok()?;
        rec.entries
            .iter()
            .find(|e| e.key == *key && e.lock_id == id)
            .map(|e| e.claim)
    }

    /// Removes the entry of `claim`, if it is there.
    async fn forget(&self, claim: Uuid) -> Result<()> {
        self.update(|current, _| {
            let Some(mut rec) = current else {
                return Ok(Step::Keep(Seen::Count(0)));
            };
            let before = rec.entries.len();
            rec.entries.retain(|e| e.claim != claim);
            let changed = rec.entries.len() != before;
            let count = Seen::Count(rec.keys());
            self.step(rec, changed, count)
        })
        .await
        .map(|_| ())
    }

    /// After a lease is freed or refused: its entry goes. A failure here
    /// only keeps the slot until the entry's `until`, when a prune drops
    /// it, so what already happened is reported as it went.
    async fn freed(&self, claim: Option<Uuid>) {
        if let Some(claim) = claim {
            let _ = self.forget(claim).await;
        }
    }

    /// Frees the lease `(key, id)` with `free` (release or force-unlock) and
    /// then removes the entry the record had for it *before* the free, so an
    /// acquire of the same id that comes after the free keeps its own.
    async fn free<F>(&self, key: &LockKey, id: LockId, free: F) -> Result<()>
    where
        F: std::future::Future<Output = Result<()>> + Send,
    {
        let claim = self.claim_of(key, id).await;
        free.await?;
        self.freed(claim).await;
        Ok(())
    }
}

#[async_trait]
impl<L: LockManager, B: StateBackend> LockManager for LimitedLocks<L, B> {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        req.validate()?;
        let id = req.lock_id.unwrap_or_else(LockId::new_random);
        let claim = Uuid::new_v4();
        let until = expiry(self.clock.now(), req.ttl);
        self.reserve(&req.key, id, claim, until, false).await?;
        let named = req.clone().lock_id(id);
        let lease = match self.inner.try_acquire(&named).await {
            Ok(lease) => lease,
            Err(e) => {
                // Only a definite refusal frees the slot now: after anything
                // else the lease may exist, and the entry waits for `until`.
                let refused = match &e {
                    // (held by this very id: the entry now stands for that lease)
                    Error::LockHeld { holder } => holder.lock_id != id,
                    e => matches!(
                        e.kind(),
                        ErrorKind::InvalidInput | ErrorKind::NotImplemented
                    ),
                };
                if refused {
                    self.freed(Some(claim)).await;
                }
                return Err(e);
            }
        };
        if lease.lock_id != id {
            // A manager that ignores `LockRequest::lock_id`: its lease has no
            // entry, so it must not stand.
            let _ = self.inner.release(&lease.key, lease.lock_id).await;
            self.freed(Some(claim)).await;
            return Err(Error::not_implemented(
                "a lock limit on a lock manager that ignores the requested lock id",
            ));
        }
        let now = self.clock.now();
        if now >= until && lease.expires > now {
            // Slower than its ttl: a prune may have judged the entry meanwhile.
            // A lease that cannot be confirmed must not stand.
            if let Err(e) = self.reserve(&req.key, id, claim, lease.expires, true).await {
                if self.inner.release(&lease.key, id).await.is_ok() {
                    self.freed(Some(claim)).await;
                }
                return Err(e);
            }
        }
        Ok(lease)
    }

    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        acquire_with_backoff(self, self.clock.as_ref(), &self.backoff, req, wait).await
    }

    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo> {
        self.inner.renew(key, lock_id, ttl).await
    }

    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.free(key, lock_id, self.inner.release(key, lock_id))
            .await
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        self.inner.inspect(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.inner.list(prefix).await
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.free(key, lock_id, self.inner.force_unlock(key, lock_id))
            .await
    }
}
