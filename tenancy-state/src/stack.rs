//! Stack state with history: `stacks/<stack>/<env>/state.json` plus
//! `stacks/<stack>/<env>/history/000001.json`..., with optimistic
//! concurrency by serial, rollback and retention.
//!
//! # Records
//!
//! `state.json` and every history entry hold the same JSON record:
//! `{"format":1,"serial":N,"saved_at":...,"write_id":...,"prev_id":...,
//! "rolled_back_from":...,"document":{...}}`. `write_id` is unique per save
//! and `prev_id` is the `write_id` of the record it replaced, so committed
//! records form a chain from `state.json` downwards.
//!
//! # Write order (a save is two backend calls)
//!
//! 1. **Claim**: create `history/<N+1>.json` with `PutMode::Create`. This is
//!    the compare-and-swap that serializes writers: of all saves based on
//!    serial N, exactly one creates entry N+1; the others get
//!    [`Error::Precondition`].
//! 2. **Commit**: write the same bytes to `state.json` with
//!    `PutMode::Update(version of state.json at serial N)` (`Create` for the
//!    first save). `state.json` is the commit point: a save is visible once,
//!    and only once, this write succeeds.
//!
//! The version of `state.json` at serial N comes from a small per-store cache
//! filled by [`StackStore::current`] and by saves; on a miss the save reads
//! `state.json` first (three calls).
//!
//! # Interrupted saves
//!
//! A save interrupted between the two steps leaves a *pending* entry N+1
//! while `state.json` is still at N. Readers never show it: `current` reads
//! only `state.json`, `history` and `version` show only entries on the chain
//! from `state.json` down (so neither pending entries above the current
//! serial nor stray entries left by stale writers appear). The next writer
//! based on N fails to create N+1, and **rolls the pending entry forward**
//! (writes its bytes to `state.json` with the same `Update` CAS) before
//! returning `Precondition`: the interrupted save is then committed, as if
//! its acknowledgement had been lost. Because every writer of `state.json`
//! at N+1 writes the same bytes (those of entry N+1) and all use CAS on the
//! version at N, state and history can never disagree.
//!
//! # Stale writers after pruning
//!
//! A writer with an old cached serial may claim an entry that retention
//! already deleted; its commit then fails (the version moved), it returns
//! `Precondition` and deletes its stray entry, which readers ignored anyway
//! (it is off the chain).
//!
//! # Retention
//!
//! [`StackStore::prune`] deletes committed entries older than the last
//! `keep` (the current one always stays; pending entries are left alone).
//! [`StackStore::with_retention`] deletes the entry leaving the window after
//! each save (one more call) and runs a full prune every 64 serials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenancy_core::{
    Clock, DeleteMode, Error, PutMode, Result, StateBackend, StateKey, SystemClock, Version,
};

/// The record format written by this version.
const FORMAT: u32 = 1;
/// The cache of `state.json` versions is cleared when it grows past this.
const CACHE_LIMIT: usize = 4096;
/// With retention, a full prune runs every this many serials (otherwise one
/// delete of the entry that just left the window).
const FULL_PRUNE_EVERY: u64 = 64;
/// Concurrent reads or deletes of history entries.
const PARALLEL: usize = 8;

/// What a save or rollback produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackVersion {
    /// The new serial (1 for the first save).
    pub serial: u64,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
}

/// A stored version of a stack's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSnapshot {
    /// Its serial.
    pub serial: u64,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
    /// The serial it restored, if it was written by a rollback.
    pub rolled_back_from: Option<u64>,
    /// The state document.
    pub document: Value,
}

/// One entry of a stack's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its serial.
    pub serial: u64,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
    /// Size of the stored record in bytes.
    pub size: u64,
    /// The serial it restored, if it was written by a rollback.
    pub rolled_back_from: Option<u64>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    format: u32,
    serial: u64,
    saved_at: DateTime<Utc>,
    write_id: &'a str,
    prev_id: Option<&'a str>,
    rolled_back_from: Option<u64>,
    document: &'a Value,
}

#[derive(Debug, Deserialize)]
struct Record {
    #[allow(dead_code)]
    format: u32,
    serial: u64,
    saved_at: DateTime<Utc>,
    write_id: String,
    prev_id: Option<String>,
    #[serde(default)]
    rolled_back_from: Option<u64>,
    document: Value,
}

impl Record {
    fn snapshot(self) -> StackSnapshot {
        StackSnapshot {
            serial: self.serial,
            saved_at: self.saved_at,
            rolled_back_from: self.rolled_back_from,
            document: self.document,
        }
    }

    fn entry(&self, size: usize) -> HistoryEntry {
        HistoryEntry {
            serial: self.serial,
            saved_at: self.saved_at,
            size: size as u64,
            rolled_back_from: self.rolled_back_from,
        }
    }
}

/// What this store last saw in one `state.json`.
#[derive(Debug, Clone)]
struct Seen {
    serial: u64,
    version: Version,
    write_id: String,
}

/// The keys of one stack environment.
struct Keys {
    name: String,
    state: StateKey,
    history: StateKey,
}

impl Keys {
    fn new(stack: &str, env: &str) -> Result<Keys> {
        let base = StateKey::new("stacks")?
            .join(&StateKey::segment(stack)?)?
            .join(&StateKey::segment(env)?)?;
        Ok(Keys {
            name: format!("{stack}/{env}"),
            state: base.child("state.json")?,
            history: base.child("history")?,
        })
    }

    fn entry(&self, serial: u64) -> Result<StateKey> {
        self.history.child(&format!("{serial:06}.json"))
    }
}

/// The serial of a history entry's key, if it is one.
fn serial_of(key: &StateKey) -> Option<u64> {
    let stem = key.file_name().strip_suffix(".json")?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Stack state with history on any [`StateBackend`], usually a
/// [`TenantScoped`](crate::TenantScoped) one. See the [module docs](self)
/// for the layout and the write order.
///
/// Stack and environment names are single key segments
/// ([`StateKey::segment`]).
#[derive(Debug)]
pub struct StackStore<B: StateBackend> {
    backend: B,
    retention: Option<usize>,
    clock: Arc<dyn Clock>,
    seen: Mutex<HashMap<(String, String), Seen>>,
}

fn stale(keys: &Keys, expected: Option<u64>, now: Option<u64>) -> Error {
    let expected = match expected {
        Some(n) => format!("serial {n}"),
        None => "a new stack".to_string(),
    };
    let now = match now {
        Some(n) => format!("it is at serial {n}"),
        None => "it has no state yet".to_string(),
    };
    Error::precondition(format!(
        "stack {} changed: the save expected {expected} but {now}; read it again and retry",
        keys.name
    ))
}

fn decode(key: &StateKey, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: key.to_string(),
        message: e.to_string(),
    })
}

impl<B: StateBackend> StackStore<B> {
    /// A stack store on `backend`, without automatic retention.
    pub fn new(backend: B) -> Self {
        StackStore {
            backend,
            retention: None,
            clock: Arc::new(SystemClock),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps only the last `keep` versions of each stack environment,
    /// pruning after every save: one extra delete per save, and a full
    /// [`StackStore::prune`] every 64 serials. `keep` of 0 is treated as 1
    /// (the current version always stays).
    pub fn with_retention(mut self, keep: usize) -> Self {
        self.retention = Some(keep.max(1));
        self
    }

    /// Uses `clock` for `saved_at` times (tests use a manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn seen_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, stack: &str, env: &str, seen: Seen) {
        let mut map = self.seen_lock();
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert((stack.to_string(), env.to_string()), seen);
    }

    fn forget(&self, stack: &str, env: &str) {
        self.seen_lock()
            .remove(&(stack.to_string(), env.to_string()));
    }

    fn recall(&self, stack: &str, env: &str, serial: u64) -> Option<Seen> {
        self.seen_lock()
            .get(&(stack.to_string(), env.to_string()))
            .filter(|s| s.serial == serial)
            .cloned()
    }

    async fn read_state(&self, keys: &Keys) -> Result<Option<(Record, Version, usize)>> {
        match self.backend.get(&keys.state).await? {
            None => Ok(None),
            Some(obj) => {
                let rec = decode(&keys.state, &obj.bytes)?;
                Ok(Some((rec, obj.version, obj.bytes.len())))
            }
        }
    }

    async fn read_entry(&self, keys: &Keys, serial: u64) -> Result<Option<(Record, usize)>> {
        let key = keys.entry(serial)?;
        match self.backend.get(&key).await? {
            None => Ok(None),
            Some(obj) => Ok(Some((decode(&key, &obj.bytes)?, obj.bytes.len()))),
        }
    }

    /// Saves `document` as the new state of `stack`/`env`. `expected` is the
    /// serial the caller read (`None`: the stack environment must be new).
    /// If it is stale the save fails with [`Error::Precondition`] and nothing
    /// is changed. Returns the new serial.
    pub async fn save(
        &self,
        stack: &str,
        env: &str,
        document: &Value,
        expected: Option<u64>,
    ) -> Result<StackVersion> {
        self.commit(stack, env, document, expected, None).await
    }

    async fn commit(
        &self,
        stack: &str,
        env: &str,
        document: &Value,
        expected: Option<u64>,
        rolled_back_from: Option<u64>,
    ) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        // the state.json the caller's serial refers to
        let base: Option<Seen> = match expected {
            None => None,
            Some(n) => match self.recall(stack, env, n) {
                Some(seen) => Some(seen),
                None => match self.read_state(&keys).await? {
                    Some((rec, version, _)) if rec.serial == n => {
                        let seen = Seen {
                            serial: n,
                            version,
                            write_id: rec.write_id,
                        };
                        self.remember(stack, env, seen.clone());
                        Some(seen)
                    }
                    Some((rec, version, _)) => {
                        self.remember(
                            stack,
                            env,
                            Seen {
                                serial: rec.serial,
                                version,
                                write_id: rec.write_id,
                            },
                        );
                        return Err(stale(&keys, expected, Some(rec.serial)));
                    }
                    None => return Err(stale(&keys, expected, None)),
                },
            },
        };
        let serial = match expected {
            None => 1,
            Some(n) => n
                .checked_add(1)
                .ok_or_else(|| Error::invalid(format!("serial {n} is too large")))?,
        };
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let saved_at = self.clock.now();
        let record = RecordOut {
            format: FORMAT,
            serial,
            saved_at,
            write_id: &write_id,
            prev_id: base.as_ref().map(|b| b.write_id.as_str()),
            rolled_back_from,
            document,
        };
        let bytes =
            Bytes::from(serde_json::to_vec(&record).map_err(|e| {
                Error::invalid(format!("cannot encode state of {}: {e}", keys.name))
            })?);
        let entry_key = keys.entry(serial)?;

        // 1. claim the serial
        match self
            .backend
            .put(&entry_key, bytes.clone(), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(Error::AlreadyExists { .. }) => {
                self.forget(stack, env);
                let now = self.roll_forward(&keys, expected).await?;
                return Err(stale(&keys, expected, now));
            }
            Err(e) => return Err(e),
        }

        // 2. commit
        let mode = match &base {
            None => PutMode::Create,
            Some(b) => PutMode::Update(b.version.clone()),
        };
        let done = StackVersion { serial, saved_at };
        match self.backend.put(&keys.state, bytes, mode).await {
            Ok(version) => {
                self.remember(
                    stack,
                    env,
                    Seen {
                        serial,
                        version,
                        write_id,
                    },
                );
            }
            Err(e) if e.is_conflict() => {
                self.forget(stack, env);
                // someone moved state.json: either they rolled this save
                // forward (it is committed), or our base was stale
                let (now, now_version, now_write_id, now_prev) =
                    match self.read_state(&keys).await? {
                        Some((rec, v, _)) => (Some(rec.serial), Some(v), rec.write_id, rec.prev_id),
                        None => (None, None, String::new(), None),
                    };
                let committed = match now {
                    Some(s) if s == serial => now_write_id == write_id,
                    Some(s) if s == serial + 1 => now_prev.as_deref() == Some(write_id.as_str()),
                    Some(s) if s > serial + 1 => match self.read_entry(&keys, serial + 1).await? {
                        Some((next, _)) => next.prev_id.as_deref() == Some(write_id.as_str()),
                        // the next entry was pruned, so ours is in the pruned
                        // range whether or not it was ever committed: remove
                        // it, and report the (unknowable) outcome as stale
                        None => false,
                    },
                    _ => false,
                };
                if !committed {
                    // our entry can never be committed (state.json has moved
                    // past its serial without it): remove the stray entry
                    let _ = self.backend.delete(&entry_key, DeleteMode::Any).await;
                    return Err(stale(&keys, expected, now));
                }
                if let (Some(s), Some(v)) = (now, now_version) {
                    self.remember(
                        stack,
                        env,
                        Seen {
                            serial: s,
                            version: v,
                            write_id: now_write_id,
                        },
                    );
                }
            }
            Err(e) => return Err(e),
        }

        if let Some(keep) = self.retention {
            self.retain(&keys, stack, env, serial, keep).await;
        }
        Ok(done)
    }

    /// Commits a pending history entry above the current serial (left by an
    /// interrupted or in-flight save), if there is one. Returns the serial
    /// `state.json` is at afterwards, as far as this call knows.
    async fn roll_forward(&self, keys: &Keys, expected: Option<u64>) -> Result<Option<u64>> {
        let current = self.read_state(keys).await?;
        let (base_serial, base_write_id, mode) = match (&current, expected) {
            (None, None) => (0, None, PutMode::Create),
            (Some((rec, v, _)), Some(n)) if rec.serial == n => {
                (n, Some(rec.write_id.clone()), PutMode::Update(v.clone()))
            }
            (cur, _) => return Ok(cur.as_ref().map(|(r, _, _)| r.serial)),
        };
        let key = keys.entry(base_serial + 1)?;
        let Some(obj) = self.backend.get(&key).await? else {
            return Ok(current.map(|(r, _, _)| r.serial));
        };
        let rec = decode(&key, &obj.bytes)?;
        if rec.serial != base_serial + 1 || rec.prev_id != base_write_id {
            // not based on the current state: a stray entry, never committed
            return Ok(current.map(|(r, _, _)| r.serial));
        }
        match self.backend.put(&keys.state, obj.bytes, mode).await {
            Ok(_) => Ok(Some(rec.serial)),
            Err(e) if e.is_conflict() => {
                // someone else committed it (or something newer) first
                Ok(self.read_state(keys).await?.map(|(r, _, _)| r.serial))
            }
            Err(e) => Err(e),
        }
    }

    async fn retain(&self, keys: &Keys, stack: &str, env: &str, serial: u64, keep: usize) {
        let keep = keep as u64;
        if serial.is_multiple_of(FULL_PRUNE_EVERY) {
            // best effort: the save is committed whatever happens here
            let _ = self.prune(stack, env, keep as usize).await;
        } else if serial > keep {
            if let Ok(old) = keys.entry(serial - keep) {
                let _ = self.backend.delete(&old, DeleteMode::Any).await;
            }
        }
    }

    /// The current state, or `None` if the stack environment has none. One backend call.
    pub async fn current(&self, stack: &str, env: &str) -> Result<Option<StackSnapshot>> {
        let keys = Keys::new(stack, env)?;
        match self.read_state(&keys).await? {
            None => {
                self.forget(stack, env);
                Ok(None)
            }
            Some((rec, version, _)) => {
                self.remember(
                    stack,
                    env,
                    Seen {
                        serial: rec.serial,
                        version,
                        write_id: rec.write_id.clone(),
                    },
                );
                Ok(Some(rec.snapshot()))
            }
        }
    }

    /// A committed version by serial; [`Error::NotFound`] if it does not
    /// exist or was pruned. One backend call for the current version,
    /// otherwise two or three.
    pub async fn version(&self, stack: &str, env: &str, serial: u64) -> Result<StackSnapshot> {
        let keys = Keys::new(stack, env)?;
        self.version_of(&keys, stack, env, serial).await
    }

    async fn version_of(
        &self,
        keys: &Keys,
        stack: &str,
        env: &str,
        serial: u64,
    ) -> Result<StackSnapshot> {
        let missing = || Error::not_found(format!("version {serial} of stack {}", keys.name));
        let Some((cur, version, _)) = self.read_state(keys).await? else {
            self.forget(stack, env);
            return Err(missing());
        };
        self.remember(
            stack,
            env,
            Seen {
                serial: cur.serial,
                version,
                write_id: cur.write_id.clone(),
            },
        );
        if serial == cur.serial {
            return Ok(cur.snapshot());
        }
        if serial == 0 || serial > cur.serial {
            return Err(missing());
        }
        // committed iff the next committed record points back at it
        let (entry, next_prev) = if serial + 1 == cur.serial {
            (self.read_entry(keys, serial).await?, cur.prev_id)
        } else {
            let (entry, next) = futures::try_join!(
                self.read_entry(keys, serial),
                self.read_entry(keys, serial + 1)
            )?;
            (entry, next.and_then(|(n, _)| n.prev_id))
        };
        match entry {
            Some((rec, _))
                if rec.serial == serial && next_prev.as_deref() == Some(rec.write_id.as_str()) =>
            {
                Ok(rec.snapshot())
            }
            _ => Err(missing()),
        }
    }

    /// The committed history, oldest first (empty if the stack environment
    /// has no state).
    pub async fn history(&self, stack: &str, env: &str) -> Result<Vec<HistoryEntry>> {
        let keys = Keys::new(stack, env)?;
        let Some((cur, _, cur_size)) = self.read_state(&keys).await? else {
            return Ok(Vec::new());
        };
        let serials: Vec<u64> = self
            .backend
            .list(Some(&keys.history))
            .try_filter_map(|e| futures::future::ready(Ok(serial_of(&e.key))))
            .try_filter(|s| futures::future::ready(*s < cur.serial))
            .try_collect()
            .await?;
        let keys_ref = &keys;
        let mut entries: HashMap<u64, (Record, usize)> = stream::iter(serials)
            .map(|s| async move { Ok::<_, Error>((s, self.read_entry(keys_ref, s).await?)) })
            .buffer_unordered(PARALLEL)
            .try_filter_map(|(s, e)| futures::future::ready(Ok(e.map(|e| (s, e)))))
            .try_collect()
            .await?;
        let mut out = vec![cur.entry(cur_size)];
        let mut expect = cur.prev_id.clone();
        let mut s = cur.serial;
        while s > 1 {
            s -= 1;
            match entries.remove(&s) {
                Some((rec, size))
                    if rec.serial == s && expect.as_deref() == Some(rec.write_id.as_str()) =>
                {
                    out.push(rec.entry(size));
                    expect = rec.prev_id.clone();
                }
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Writes a new version whose document equals committed version `to`
    /// (recording `rolled_back_from: to`). `expected` works as in
    /// [`StackStore::save`].
    pub async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        expected: Option<u64>,
    ) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        // reading the version also refreshes this store's view of state.json,
        // so the save that follows needs no extra read
        let old = self.version_of(&keys, stack, env, to).await?;
        self.commit(stack, env, &old.document, expected, Some(to))
            .await
    }

    /// Deletes history entries older than the last `keep` versions and
    /// returns how many it deleted. `keep` must be at least 1: the current
    /// version always stays. Pending entries above the current serial are
    /// left alone.
    pub async fn prune(&self, stack: &str, env: &str, keep: usize) -> Result<u64> {
        if keep == 0 {
            return Err(Error::invalid(
                "prune keeps at least 1 version (the current one)",
            ));
        }
        let keys = Keys::new(stack, env)?;
        let Some((cur, _, _)) = self.read_state(&keys).await? else {
            return Ok(0);
        };
        let Some(limit) = cur.serial.checked_sub(keep as u64) else {
            return Ok(0);
        };
        let old: Vec<StateKey> = self
            .backend
            .list(Some(&keys.history))
            .try_filter_map(|e| {
                let key = e.key;
                futures::future::ready(Ok(serial_of(&key).filter(|s| *s <= limit).map(|_| key)))
            })
            .try_collect()
            .await?;
        let backend = &self.backend;
        let deleted: Vec<()> = stream::iter(old)
            .map(|k| async move { backend.delete(&k, DeleteMode::Any).await })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        Ok(deleted.len() as u64)
    }

    /// Every stack environment with state, as sorted `(stack, env)` pairs.
    pub async fn stacks(&self) -> Result<Vec<(String, String)>> {
        let root = StateKey::new("stacks")?;
        let mut pairs: Vec<(String, String)> = self
            .backend
            .list(Some(&root))
            .try_filter_map(|e| {
                let segs: Vec<&str> = e.key.segments().collect();
                let pair = match segs.as_slice() {
                    ["stacks", stack, env, "state.json"] => {
                        Some((stack.to_string(), env.to_string()))
                    }
                    _ => None,
                };
                futures::future::ready(Ok(pair))
            })
            .try_collect()
            .await?;
        pairs.sort();
        pairs.dedup();
        Ok(pairs)
    }
}
