//! `StoreLockManager`: leased locks stored as one object per lock on any
//! `StateBackend`, written only with compare-and-swap.
//!
//! # Layout
//!
//! The lock `k` lives at `locks/<k>` (lock keys are valid state-key segments).
//! A key longer than one segment allows (255 bytes) lives under its hash, in
//! the place of its *group*, the key's first two `:`-separated parts (for a
//! tenant's key `tenant:<id>:...` that is `tenant:<id>`, the tenant's lock
//! prefix): `locks/=<group>/sha256-<hex of the key>`. A long key with fewer
//! than three parts, or whose group does not fit a segment, has no group and
//! lives in the shared place `locks/=sha256-<hex>`. `=` cannot start a lock
//! key, so none of these names collides with a short key (nor with each
//! other: a group contains `:`), and the record inside names the full key.
//!
//! `list(prefix)` lists the names below `locks/` and reads only the objects
//! that can hold a matching key: short keys whose names start with the
//! prefix, long keys of a group compatible with the prefix (one is a prefix
//! of the other), and the shared `=sha256-` objects (their names do not tell
//! the key). So a tenant's listing reads none of another tenant's lock
//! objects. A damaged object fails a list only if its key matches the
//! prefix: a shared long-key object that does not decode counts by its `key`
//! field if that can still be read, and otherwise only for the empty prefix.
//!
//! ## The move of long keys out of the shared place
//!
//! Before groups, every long key lived at `locks/=sha256-<hex>`, so every
//! tenant's listing read every tenant's long-key objects. Such a *legacy*
//! object of a grouped key is moved to its group's place: the new place is
//! created with the legacy bytes (`Create`; `AlreadyExists` means another
//! process moved it first) and the legacy object is then deleted. This
//! manager never writes a legacy object, so its bytes are frozen and copying
//! them loses nothing (a store shared with a manager of an older version must
//! not run both at once: the old one writes the legacy place). The move runs
//!
//! - on first touch: an operation on a grouped long key that this manager
//!   does not remember reads the legacy place first (one more `get`, usually
//!   answered "missing") and moves what it finds, so a key's fencing token
//!   carries on across the move;
//! - in one go: [`StoreLockManager::migrate_long_keys`] moves every legacy
//!   object (the server runs it at start), after which no listing reads a
//!   legacy object again. A crash between the two writes leaves both copies:
//!   the next move deletes the legacy one, and `list` shows the key once.
//!
//! The object is a small JSON [`LockRecord`]: the key, the last fencing token
//! handed out, and the holder (`null` when free). It is **never deleted**:
//! release and force-unlock write a free record that keeps the token, so the
//! fencing token strictly increases for a key for as long as the store lives.
//!
//! # Protocol
//!
//! - acquire: read; if free or expired, `Update(version)` (or `Create` for a
//!   key never locked) with `token + 1`. Of several contenders on the same
//!   version exactly one write succeeds; the others re-read and see the
//!   winner (`LockHeld`).
//! - renew / release / force-unlock: read, check the holder's lock id, write
//!   with `Update(version)`; a lost CAS re-reads and decides again.
//!
//! The manager remembers the version it last wrote or read for each key, so
//! an uncontended re-acquire, renew or release is one conditional write. A
//! stale memory only costs a failed CAS and a fallback read: it can never
//! make a write succeed that the store would refuse.
//!
//! Expiry compares the stored `expires` with this manager's clock, so the
//! clocks of processes sharing a store should agree to well within a TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenancy_core::keys::MAX_SEGMENT_LEN;
use tenancy_core::lock::validate_ttl;
use tenancy_core::{
    Backoff, Clock, DeleteMode, Error, LockId, LockInfo, LockKey, LockManager, LockRequest, Object,
    PutMode, Result, Retry, StateBackend, StateBackendExt, StateKey, Step, SystemClock, Updated,
    Version,
};

use crate::backoff::acquire_with_backoff;
use crate::lease::{classify, expired, expiry, foreign, new_lease, not_held, Holder};

/// The folder of the lock objects (core's `layout::LOCKS`).
pub const LOCKS_PREFIX: &str = tenancy_core::layout::LOCKS;

/// The current [`LockRecord::format`].
pub const LOCK_RECORD_FORMAT: u32 = 1;

/// How often one call re-reads after losing a compare-and-swap before giving up.
const MAX_CAS_ROUNDS: u32 = 32;

/// How many keys the version memory keeps before it starts over.
const CACHE_CAP: usize = 4096;

/// How many lock objects `list` reads at once.
const LIST_CONCURRENCY: usize = 16;

/// The stored form of one lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The record format, [`LOCK_RECORD_FORMAT`].
    pub format: u32,
    /// The full lock key.
    pub key: LockKey,
    /// The last fencing token handed out for this key (0 if none yet).
    pub fencing_token: u64,
    /// The current lease, or `None` when the lock is free.
    pub holder: Option<LockInfo>,
    /// How the last lease ended, when it was released or force-unlocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed: Option<Freed>,
}

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freed {
    /// The lease that ended.
    pub lock_id: LockId,
    /// When.
    pub at: DateTime<Utc>,
    /// `release` or `force-unlock`.
    pub by: String,
}

#[derive(Debug, Clone)]
struct Cached {
    version: Version,
    record: LockRecord,
}

/// Leased locks on any [`StateBackend`] that supports compare-and-swap
/// (memory, local files, S3, ...). See the [module docs](self) for the
/// layout and the protocol.
#[derive(Debug)]
pub struct StoreLockManager<B: StateBackend> {
    backend: B,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    cache: Mutex<HashMap<LockKey, Arc<Cached>>>,
}

impl<B: StateBackend> StoreLockManager<B> {
    /// A manager storing its locks on `backend`, on the system clock with the
    /// default backoff.
    ///
    /// A backend without compare-and-swap is accepted here, but every lock
    /// call then fails with [`Error::NotImplemented`]; use
    /// [`StoreLockManager::try_new`] to refuse it up front.
    pub fn new(backend: B) -> Self {
        StoreLockManager {
            backend,
            clock: Arc::new(SystemClock),
            backoff: Backoff::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Like [`StoreLockManager::new`], but refuses a backend whose
    /// capabilities lack compare-and-swap with [`Error::NotImplemented`].
    pub fn try_new(backend: B) -> Result<Self> {
        let m = Self::new(backend);
        m.check_cas()?;
        Ok(m)
    }

    /// Reads time (expiry, backoff sleeps) from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `backoff` between the retries of `acquire`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The backend the locks live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The object key of the lock `key`: `locks/<key>`, or for a key longer
    /// than one state-key segment `locks/=<group>/sha256-<hex>` (the group is
    /// the key's first two `:`-separated parts) or, without a group,
    /// `locks/=sha256-<hex>`. See the [module docs](self).
    pub fn object_key(key: &LockKey) -> Result<StateKey> {
        let k = key.as_str();
        if k.len() <= MAX_SEGMENT_LEN {
            return StateKey::new(format!("{LOCKS_PREFIX}/{k}"));
        }
        let digest = Sha256::digest(k.as_bytes());
        match long_key_group(k) {
            Some(group) => StateKey::new(format!("{LOCKS_PREFIX}/={group}/sha256-{digest:x}")),
            None => StateKey::new(format!("{LOCKS_PREFIX}/=sha256-{digest:x}")),
        }
    }

    /// Where a long key with a group lived before groups
    /// (`locks/=sha256-<hex>`); `None` for a short key or one without a group,
    /// whose place never changed.
    pub fn legacy_object_key(key: &LockKey) -> Result<Option<StateKey>> {
        let k = key.as_str();
        if k.len() <= MAX_SEGMENT_LEN || long_key_group(k).is_none() {
            return Ok(None);
        }
        let digest = Sha256::digest(k.as_bytes());
        StateKey::new(format!("{LOCKS_PREFIX}/=sha256-{digest:x}")).map(Some)
    }

    /// Moves the legacy object of `key`, if there is one, to its group's
    /// place (see the [module docs](self)). Returns whether it moved one.
    async fn move_legacy(&self, key: &LockKey) -> Result<bool> {
        let Some(legacy) = Self::legacy_object_key(key)? else {
            return Ok(false);
        };
        let Some(old) = self.backend.get(&legacy).await? else {
            return Ok(false);
        };
        // Refuse to move what is not this key's record.
        Self::decode(key, &legacy, &old.bytes)?;
        let new = Self::object_key(key)?;
        match self.backend.put(&new, old.bytes, PutMode::Create).await {
            Ok(_) => {}
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        self.forget(key);
        match self.backend.delete(&legacy, DeleteMode::Any).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Moves an operation's key out of the shared place on first touch: a
    /// grouped long key this manager does not remember.
    async fn touch(&self, key: &LockKey) -> Result<()> {
        if key.as_str().len() > MAX_SEGMENT_LEN && self.cached(key).is_none() {
            self.move_legacy(key).await?;
        }
        Ok(())
    }

    /// Moves every legacy long-key object (`locks/=sha256-<hex>` of a key
    /// that has a group) to its group's place, and returns how many it
    /// moved. Objects that do not decode, and long keys without a group,
    /// stay where they are. Safe to run while other managers of this
    /// version work on the store, and to run again.
    pub async fn migrate_long_keys(&self) -> Result<usize> {
        self.check_cas()?;
        let root = StateKey::new(LOCKS_PREFIX)?;
        let legacy: Vec<StateKey> = self
            .backend
            .list(Some(&root))
            .try_filter(|e| {
                let shared = e
                    .key
                    .strip_prefix(&root)
                    .is_some_and(|n| n.as_str().starts_with("=sha256-"));
                futures::future::ready(shared)
            })
            .map_ok(|e| e.key)
            .try_collect()
            .await?;
        let mut moved = 0;
        for obj in legacy {
            let Some(o) = self.backend.get(&obj).await? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<LockRecord>(&o.bytes) else {
                continue;
            };
            if Self::legacy_object_key(&record.key)?.as_ref() != Some(&obj) {
                continue;
            }
            if self.move_legacy(&record.key).await? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Reads the stored record of `key` (free or held, expired or not), for
    /// admins and debugging.
    pub async fn record(&self, key: &LockKey) -> Result<Option<LockRecord>> {
        self.check_cas()?;
        self.touch(key).await?;
        let obj = Self::object_key(key)?;
        Ok(self.read(key, &obj).await?.map(|(r, _)| r))
    }

    fn check_cas(&self) -> Result<()> {
        if self.backend.capabilities().supports_cas() {
            Ok(())
        } else {
            Err(Error::not_implemented(format!(
                "locks on the {} backend: it cannot do compare-and-swap writes",
                self.backend.name()
            )))
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<LockKey, Arc<Cached>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, key: &LockKey) -> Option<Arc<Cached>> {
        self.cache().get(key).cloned()
    }

    fn remember(&self, key: &LockKey, version: Version, record: LockRecord) {
        let mut cache = self.cache();
        if cache.len() >= CACHE_CAP && !cache.contains_key(key) {
            cache.clear();
        }
        cache.insert(key.clone(), Arc::new(Cached { version, record }));
    }

    fn forget(&self, key: &LockKey) {
        self.cache().remove(key);
    }

    fn decode(key: &LockKey, obj: &StateKey, bytes: &[u8]) -> Result<LockRecord> {
        let record: LockRecord = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: format!("lock object {obj}"),
            message: e.to_string(),
        })?;
        if record.key != *key {
            return Err(Error::Corrupt {
                what: format!("lock object {obj}"),
                message: format!("it holds lock {} instead of {key}", record.key),
            });
        }
        if record.format != LOCK_RECORD_FORMAT {
            return Err(Error::Corrupt {
                what: format!("lock object {obj}"),
                message: format!(
                    "record format {} is not the supported {LOCK_RECORD_FORMAT}",
                    record.format
                ),
            });
        }
        Ok(record)
    }

    /// The record of the lock object `obj` (a name below [`LOCKS_PREFIX`]) if
    /// its key starts with `prefix`, for `list`. An object whose key does not
    /// match is `None` even when it is damaged, so one tenant's broken record
    /// never fails another tenant's list. A long-key object that does not
    /// decode is attributed by the `key` field if that can still be read,
    /// else by its group; a shared one that does not even name its key
    /// matches only the empty prefix.
    fn listed(obj: &StateKey, bytes: &[u8], prefix: &str) -> Result<Option<LockRecord>> {
        let name = obj.as_str().rsplit('/').next().unwrap_or_default();
        // `locks/<name>`: a short key, unless the name starts with `=`.
        let short = obj.segments().count() == 2 && !name.starts_with('=');
        if short {
            // A short key: the name is the key and already matched the prefix.
            let key = LockKey::new(name).map_err(|e| Error::Corrupt {
                what: format!("lock object {obj}"),
                message: format!("its name is not a lock key: {e}"),
            })?;
            return Self::decode(&key, obj, bytes).map(Some);
        }
        match serde_json::from_slice::<LockRecord>(bytes) {
            Ok(record) if !record.key.as_str().starts_with(prefix) => Ok(None),
            Ok(record) => {
                let key = record.key.clone();
                if Self::object_key(&key)? != *obj
                    && Self::legacy_object_key(&key)?.as_ref() != Some(obj)
                {
                    return Err(Error::Corrupt {
                        what: format!("lock object {obj}"),
                        message: format!("it holds lock {key}, which is stored elsewhere"),
                    });
                }
                Self::decode(&key, obj, bytes).map(Some)
            }
            Err(e) => {
                #[derive(Deserialize)]
                struct KeyOnly {
                    key: String,
                }
                // A group's object already matched the prefix by its group.
                let matches = match serde_json::from_slice::<KeyOnly>(bytes) {
                    Ok(k) => k.key.starts_with(prefix),
                    Err(_) => prefix.is_empty() || obj.segments().count() == 3,
                };
                if matches {
                    Err(Error::Corrupt {
                        what: format!("lock object {obj}"),
                        message: e.to_string(),
                    })
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Reads and remembers the record of `key`.
    async fn read(&self, key: &LockKey, obj: &StateKey) -> Result<Option<(LockRecord, Version)>> {
        match self.backend.get(obj).await? {
            None => {
                self.forget(key);
                Ok(None)
            }
            Some(o) => {
                let record = Self::decode(key, obj, &o.bytes)?;
                self.remember(key, o.version.clone(), record.clone());
                Ok(Some((record, o.version)))
            }
        }
    }

    /// Writes `record` with `mode`, remembering the new version on success
    /// and forgetting the key on any failure.
    async fn write(
        &self,
        key: &LockKey,
        obj: &StateKey,
        record: LockRecord,
        mode: PutMode,
    ) -> Result<()> {
        match self.backend.put(obj, encode(key, &record)?, mode).await {
            Ok(version) => {
                self.remember(key, version, record);
                Ok(())
            }
            Err(e) => {
                self.forget(key);
                Err(e)
            }
        }
    }

    /// One read-modify-write of the lock object with core's CAS-retry
    /// primitive: `f` sees the current record (remembered as it is read) and
    /// decides the next one; the written record is remembered, and any
    /// failure forgets the key.
    async fn update<T, F>(&self, key: &LockKey, obj: &StateKey, mut f: F) -> Result<T>
    where
        T: Send,
        F: FnMut(Option<LockRecord>, DateTime<Utc>) -> Result<(LockRecord, T)> + Send,
    {
        self.touch(key).await?;
        let what = format!("lock {key}");
        let retry = Retry::new(self.clock.as_ref(), &what).attempts(MAX_CAS_ROUNDS);
        // A refusal decided on a record just read keeps that record in memory.
        let mut refused = false;
        let step = |current: Option<&Object>| {
            let record = match current {
                None => {
                    self.forget(key);
                    None
                }
                Some(o) => {
                    let record = Self::decode(key, obj, &o.bytes)?;
                    self.remember(key, o.version.clone(), record.clone());
                    Some(record)
                }
            };
            let (next, out) = f(record, self.clock.now()).inspect_err(|_| refused = true)?;
            Ok(Step::Write(encode(key, &next)?, (next, out)))
        };
        match self.backend.update_with(obj, retry, step).await {
            Ok(Updated {
                value: (record, out),
                version: Some(version),
                ..
            }) => {
                self.remember(key, version, record);
                Ok(out)
            }
            Ok(_) => Err(Error::backend(
                self.backend.name(),
                format!("a write of lock {key} returned no version"),
            )),
            Err(e) => {
                if !refused {
                    self.forget(key);
                }
                Err(e)
            }
        }
    }

    /// Renews (`Some(ttl)`) or frees (`None`) the lease `lock_id` on `key`.
    async fn change(
        &self,
        key: &LockKey,
        lock_id: LockId,
        ttl: Option<Duration>,
        action: &str,
    ) -> Result<Option<LockInfo>> {
        self.check_cas()?;
        if let Some(ttl) = ttl {
            validate_ttl(ttl)?;
        }
        let obj = Self::object_key(key)?;
        // Fast path: what we remember says the lease is ours: one CAS. Any
        // other answer from memory may be old, so it is decided on a fresh read.
        if let Some(c) = self.cached(key) {
            let now = self.clock.now();
            if let Holder::Mine(h) = classify(c.record.holder.as_ref(), lock_id) {
                if ttl.is_none() || !h.is_expired(now) {
                    let (next, result) =
                        changed(c.record.clone(), h.clone(), lock_id, ttl, action, now);
                    match self
                        .write(key, &obj, next, PutMode::Update(c.version.clone()))
                        .await
                    {
                        Ok(()) => return Ok(result),
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.update(key, &obj, |record, now| {
            let record = record.ok_or_else(|| not_held(key, lock_id, action))?;
            let holder = match classify(record.holder.as_ref(), lock_id) {
                Holder::Mine(h) if ttl.is_some() && h.is_expired(now) => {
                    return Err(expired(key, h))
                }
                Holder::Mine(h) => h.clone(),
                Holder::Free => return Err(not_held(key, lock_id, action)),
                Holder::Other(h) => return Err(foreign(key, lock_id, h, action)),
            };
            Ok(changed(record, holder, lock_id, ttl, action, now))
        })
        .await
    }
}

/// The record after renewing (`Some(ttl)`) or freeing (`None`) `holder`'s
/// lease, and what the caller gets back.
fn changed(
    record: LockRecord,
    mut holder: LockInfo,
    lock_id: LockId,
    ttl: Option<Duration>,
    action: &str,
    now: DateTime<Utc>,
) -> (LockRecord, Option<LockInfo>) {
    match ttl {
        Some(ttl) => {
            holder.expires = expiry(now, ttl);
            holder.last_heartbeat = now;
            (
                LockRecord {
                    holder: Some(holder.clone()),
                    ..record
                },
                Some(holder),
            )
        }
        None => (
            LockRecord {
                holder: None,
                freed: Some(Freed {
                    lock_id,
                    at: now,
                    by: action.to_string(),
                }),
                ..record
            },
            None,
        ),
    }
}

/// The record that takes the lock from `prev_token` (0 for a never-used key).
fn taken(req: &LockRequest, prev_token: u64, now: DateTime<Utc>) -> Result<(LockRecord, LockInfo)> {
    let token = prev_token
        .checked_add(1)
        .ok_or_else(|| Error::invalid(format!("fencing token of lock {} overflowed", req.key)))?;
    let lease = new_lease(req, now, token);
    let record = LockRecord {
        format: LOCK_RECORD_FORMAT,
        key: req.key.clone(),
        fencing_token: token,
        holder: Some(lease.clone()),
        freed: None,
    };
    Ok((record, lease))
}

/// The group of a long lock key: its first two `:`-separated parts, when
/// it has at least three and they fit one state-key segment after the `=`.
fn long_key_group(key: &str) -> Option<&str> {
    let mut colons = key.match_indices(':').map(|(i, _)| i);
    colons.next()?;
    let end = colons.next()?;
    (end < MAX_SEGMENT_LEN).then(|| &key[..end])
}

/// May the lock object named `name` (below `locks/`) hold a key that
/// starts with `prefix`?
fn may_hold(name: &str, prefix: &str) -> bool {
    match name.split_once('/') {
        // A short key: the name is the key. Or the shared long-key place.
        None => {
            name.starts_with("=sha256-") || (!name.starts_with('=') && name.starts_with(prefix))
        }
        // A group's long key: every key in `=<group>/` starts with `<group>:`.
        Some((dir, file)) => match dir.strip_prefix('=') {
            Some(group) if !file.contains('/') && file.starts_with("sha256-") => {
                let head = format!("{group}:");
                head.starts_with(prefix) || prefix.starts_with(&head)
            }
            _ => false,
        },
    }
}

fn encode(key: &LockKey, record: &LockRecord) -> Result<Bytes> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| Error::invalid(format!("cannot encode lock {key}: {e}")))
}

#[async_trait]
impl<B: StateBackend> LockManager for StoreLockManager<B> {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        req.validate()?;
        self.check_cas()?;
        let key = &req.key;
        let obj = Self::object_key(key)?;

        // Fast path: the version we last saw is free or expired: one CAS.
        if let Some(c) = self.cached(key) {
            let now = self.clock.now();
            if c.record.holder.as_ref().is_none_or(|h| h.is_expired(now)) {
                let (record, lease) = taken(req, c.record.fencing_token, now)?;
                match self
                    .write(key, &obj, record, PutMode::Update(c.version.clone()))
                    .await
                {
                    Ok(()) => return Ok(lease),
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.update(key, &obj, |current, now| {
            if let Some(h) = current
                .as_ref()
                .and_then(|r| r.holder.as_ref())
                .filter(|h| !h.is_expired(now))
            {
                return Err(Error::LockHeld {
                    holder: Box::new(h.clone()),
                });
            }
            taken(req, current.map_or(0, |r| r.fencing_token), now)
        })
        .await
    }

    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        acquire_with_backoff(self, self.clock.as_ref(), &self.backoff, req, wait).await
    }

    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo> {
        self.change(key, lock_id, Some(ttl), "renew")
            .await?
            .ok_or_else(|| not_held(key, lock_id, "renew"))
    }

    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.change(key, lock_id, None, "release").await.map(|_| ())
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        self.check_cas()?;
        self.touch(key).await?;
        let obj = Self::object_key(key)?;
        let now = self.clock.now();
        Ok(self
            .read(key, &obj)
            .await?
            .and_then(|(r, _)| r.holder)
            .filter(|h| !h.is_expired(now)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.check_cas()?;
        let root = StateKey::new(LOCKS_PREFIX)?;
        let entries: Vec<StateKey> = self
            .backend
            .list(Some(&root))
            .map_ok(|e| e.key)
            .try_collect()
            .await?;
        // Names tell the key or its group, except in the shared long-key place.
        let candidates: Vec<StateKey> = entries
            .into_iter()
            .filter(|obj| {
                obj.strip_prefix(&root)
                    .is_some_and(|name| may_hold(name.as_str(), prefix))
            })
            .collect();
        let now = self.clock.now();
        let backend = &self.backend;
        let mut held: Vec<LockInfo> = stream::iter(candidates)
            .map(|obj| async move {
                let Some(o) = backend.get(&obj).await? else {
                    return Ok(None);
                };
                Ok::<_, Error>(
                    Self::listed(&obj, &o.bytes, prefix)?
                        .and_then(|r| r.holder)
                        .filter(|h| !h.is_expired(now)),
                )
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_filter_map(|h| async move { Ok(h) })
            .try_collect()
            .await?;
        // A crash in the middle of a move leaves a key in both places.
        held.sort_by(|a, b| a.key.cmp(&b.key));
        held.dedup_by(|a, b| a.key == b.key);
        Ok(held)
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.change(key, lock_id, None, "force-unlock")
            .await
            .map(|_| ())
    }
}
