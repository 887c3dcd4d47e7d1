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
//!
//! # Plain JSON written by other tools
//!
//! A `state.json` or history entry that is JSON but not a record (it has no
//! `format` and `document` fields) was written by another tool: a
//! single-tenant tree copied in by `migrate` (`state.json` plus
//! `history/001.json`...), `aws s3 sync`, or a raw `PUT` through the
//! server's `/v1/state/` API. It is read as that stack's state, never as an
//! error:
//!
//! - a plain history entry's serial is the number in its name (`001.json` is
//!   version 1); entries named otherwise than `000001.json` are found by
//!   listing `history/`, so reading them costs one more call;
//! - a plain `state.json`'s serial is its document's `serial` (a positive
//!   integer, as in Terraform state) when that is above every history entry;
//!   otherwise it comes from the highest entry: that entry's serial when it
//!   holds the same bytes (a tool that keeps the current state in its
//!   history too, or the copy a save makes when it wraps plain JSON), one
//!   below it when it is a save claimed on top of this plain state and not
//!   yet committed, one above it otherwise. Working that out lists the stack
//!   environment and may read that entry (two or three calls);
//! - its `saved_at` is the object's modification time where the backend
//!   knows it;
//! - a plain record carries no chain: below one, every lower entry that
//!   decodes is shown;
//! - the next save **wraps it**: before claiming `N+1` it copies the plain
//!   `state.json` to `history/<N>.json` (`Create`; one more call, once), so
//!   version N stays in the history, and its record's `prev_id` is the plain
//!   record's id (`plain-<fnv64 of its bytes>`).
//!
//! # Damaged objects
//!
//! An object that is not JSON, or a record with missing fields, is damaged:
//! it hurts only itself.
//!
//! - [`StackStore::current`] and [`StackStore::save`] of a stack whose
//!   `state.json` is damaged fail with [`Error::Corrupt`].
//! - [`StackStore::history_report`] lists damaged objects in
//!   [`History::damaged`] and goes on: below a damaged entry (or a damaged
//!   `state.json`, whose serial is unknown) every lower entry that decodes is
//!   shown, as below plain JSON. [`StackStore::history`] returns the same
//!   entries without the damage report.
//! - [`StackStore::version`] reads an intact version whatever else is
//!   damaged (with a damaged `state.json` it walks the history from the
//!   highest entry).
//! - [`StackStore::restore`] writes an intact version over a damaged
//!   `state.json`, as `highest history entry + 1`, with an `Update` on the
//!   damaged object's version; [`StackStore::rollback`] needs a readable
//!   `state.json`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tenancy_core::{
    Clock, DeleteMode, Error, LockInfo, LockKey, Object, PutMode, Result, StateBackend, StateKey,
    SystemClock, Version,
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
/// How often an [`Expected::Latest`] save starts again after losing a race.
const LATEST_ROUNDS: u32 = 16;
/// A `state.json` this small may be a tombstone: [`StackStore::stacks`]
/// reads those (tombstone records are about 250 bytes).
const TOMBSTONE_MAX: u64 = 1024;

/// What a commit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Save,
    Rollback(u64),
    Delete,
}

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
    /// When it was saved (for plain JSON written by another tool: the
    /// object's modification time where the backend knows it).
    pub saved_at: Option<DateTime<Utc>>,
    /// The serial it restored, if it was written by a rollback.
    pub rolled_back_from: Option<u64>,
    /// True when it is plain JSON written by another tool, not yet wrapped
    /// in a record by a save (see the [module docs](self)).
    pub plain: bool,
    /// The state document.
    pub document: Value,
    /// True when this version is the deletion of the stack environment
    /// (only [`StackStore::history`] shows those).
    pub deleted: bool,
    /// The state document exactly as it was saved, byte for byte
    /// (whitespace and key order included).
    pub raw: Bytes,
    /// The fencing token of the lock the save was made under, if any.
    pub fence: Option<u64>,
}

/// One entry of a stack's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its serial.
    pub serial: u64,
    /// When it was saved (see [`StackSnapshot::saved_at`]).
    pub saved_at: Option<DateTime<Utc>>,
    /// Size of the stored object in bytes.
    pub size: u64,
    /// The serial it restored, if it was written by a rollback.
    pub rolled_back_from: Option<u64>,
    /// True for plain JSON written by another tool.
    pub plain: bool,
    /// True when this version is the deletion of the stack environment
    /// ([`StackStore::delete`]); rolling back to an older version restores it.
    pub deleted: bool,
    /// The fencing token of the lock the save was made under, if any.
    pub fence: Option<u64>,
}

/// A validated JSON state document, kept byte for byte as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDocument {
    text: Arc<str>,
}

impl StateDocument {
    /// Checks that `bytes` are one JSON value (surrounding whitespace is
    /// allowed and kept).
    pub fn from_bytes(bytes: &[u8]) -> Result<StateDocument> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::invalid("the state document is not UTF-8 JSON"))?;
        serde_json::from_str::<&RawValue>(text).map_err(|e| {
            Error::invalid(format!(
                "the state document is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Ok(StateDocument { text: text.into() })
    }

    /// The compact JSON of `value`.
    pub fn from_value(value: &Value) -> Result<StateDocument> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::invalid(format!("cannot encode the state document: {e}")))?;
        Ok(StateDocument { text: text.into() })
    }

    /// The document's bytes, exactly as given.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The JSON value and the whitespace around it.
    fn parts(&self) -> Result<(&str, &RawValue, &str)> {
        let core = serde_json::from_str::<&RawValue>(&self.text)
            .map_err(|e| Error::invalid(format!("the state document is not JSON: {e}")))?;
        let start = (core.get().as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize);
        let end = start + core.get().len();
        let lead = self.text.get(..start).unwrap_or("");
        let trail = self.text.get(end..).unwrap_or("");
        Ok((lead, core, trail))
    }
}

/// What a save expects the stack environment to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No state yet (or deleted).
    New,
    /// At this serial.
    Serial(u64),
    /// Whatever it is at: the save goes on top of the current version (the
    /// way Terraform's `http` backend saves, under its lock).
    Latest,
}

impl From<Option<u64>> for Expected {
    fn from(serial: Option<u64>) -> Self {
        serial.map_or(Expected::New, Expected::Serial)
    }
}

/// How a save is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// The version the save expects.
    pub expected: Expected,
    /// The fencing token of the lock the save is made under: refused with
    /// [`Error::Fenced`] when the current version was saved under a higher
    /// one. Recorded in the new version.
    pub fence: Option<u64>,
}

impl SaveOptions {
    /// A save expecting `expected`, not under a lock.
    pub fn new(expected: impl Into<Expected>) -> Self {
        SaveOptions {
            expected: expected.into(),
            fence: None,
        }
    }

    /// Made under a lock with this fencing token.
    pub fn fenced(mut self, token: Option<u64>) -> Self {
        self.fence = token;
        self
    }
}

/// A stored object of a stack that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// Its key (relative to the store's backend).
    pub key: StateKey,
    /// Its serial, for a history entry (`None` for `state.json`).
    pub serial: Option<u64>,
    /// Why it cannot be read.
    pub message: String,
}

/// A stack environment's history with the objects that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The readable versions, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Damaged objects, `state.json` first, then entries newest first.
    pub damaged: Vec<Damaged>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    format: u32,
    serial: u64,
    saved_at: DateTime<Utc>,
    write_id: &'a str,
    prev_id: Option<&'a str>,
    rolled_back_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    /// The whitespace before and after the document, when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    ws: Option<[&'a str; 2]>,
    document: &'a RawValue,
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
    #[serde(default)]
    fence: Option<u64>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    ws: Option<[String; 2]>,
    document: Box<RawValue>,
}

/// A stored `state.json` or history entry as read: a record, or plain JSON.
#[derive(Debug, Clone)]
struct Rec {
    serial: u64,
    saved_at: Option<DateTime<Utc>>,
    /// The record's `write_id`; `plain-<fnv64 of the bytes>` for plain JSON.
    id: String,
    /// The record's `prev_id`; `None` for plain JSON (no chain).
    prev_id: Option<String>,
    plain: bool,
    rolled_back_from: Option<u64>,
    fence: Option<u64>,
    /// A tombstone written by [`StackStore::delete`].
    deleted: bool,
    document: Value,
    /// The document exactly as saved.
    raw: StateDocument,
}

impl Rec {
    fn snapshot(self) -> StackSnapshot {
        StackSnapshot {
            serial: self.serial,
            saved_at: self.saved_at,
            rolled_back_from: self.rolled_back_from,
            plain: self.plain,
            document: self.document,
            deleted: self.deleted,
            raw: Bytes::copy_from_slice(self.raw.as_bytes()),
            fence: self.fence,
        }
    }

    fn entry(&self, size: usize) -> HistoryEntry {
        HistoryEntry {
            serial: self.serial,
            saved_at: self.saved_at,
            size: size as u64,
            rolled_back_from: self.rolled_back_from,
            plain: self.plain,
            deleted: self.deleted,
            fence: self.fence,
        }
    }

    /// How the chain goes on below this record.
    fn link(&self) -> Link {
        if self.plain {
            Link::Any
        } else {
            Link::Prev(self.prev_id.clone())
        }
    }

    /// True when `below` (the entry one serial lower) is on the chain below this record.
    fn accepts(&self, below: &Rec) -> bool {
        self.plain || self.prev_id.as_deref() == Some(below.id.as_str())
    }
}

/// How a history walk goes on below a record.
#[derive(Debug, Clone)]
enum Link {
    /// Only the entry one serial lower, with this id.
    Prev(Option<String>),
    /// Any lower entry that decodes (below plain JSON or a damaged object).
    Any,
}

/// What this store last saw in one `state.json`.
#[derive(Debug, Clone)]
struct Seen {
    serial: u64,
    version: Version,
    id: String,
    plain: bool,
    fence: Option<u64>,
    deleted: bool,
}

impl Seen {
    fn of(rec: &Rec, version: Version) -> Seen {
        Seen {
            serial: rec.serial,
            version,
            id: rec.id.clone(),
            plain: rec.plain,
            fence: rec.fence,
            deleted: rec.deleted,
        }
    }
}

/// The keys of one stack environment.
#[derive(Clone)]
struct Keys {
    name: String,
    dir: StateKey,
    state: StateKey,
    history: StateKey,
}

impl Keys {
    fn new(stack: &str, env: &str) -> Result<Keys> {
        let dir = StateKey::new("stacks")?
            .join(&StateKey::segment(stack)?)?
            .join(&StateKey::segment(env)?)?;
        Ok(Keys {
            name: format!("{stack}/{env}"),
            state: dir.child("state.json")?,
            history: dir.child("history")?,
            dir,
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
    stem.parse().ok().filter(|s| *s > 0)
}

/// One listed history entry.
#[derive(Debug, Clone)]
struct Listed {
    key: StateKey,
    modified: Option<DateTime<Utc>>,
}

/// A listing of one stack environment.
#[derive(Debug, Default)]
struct Scan {
    /// History entries by serial (the `000001.json` name preferred when two
    /// names give one serial).
    entries: BTreeMap<u64, Listed>,
    /// The modification time of `state.json`.
    state_modified: Option<DateTime<Utc>>,
}

impl Scan {
    fn top(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(0)
    }
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

fn corrupt(key: &StateKey, message: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: key.to_string(),
        message: message.to_string(),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Decodes a stored object: a record, or plain JSON (serial `entry_serial`
/// for a history entry; for `state.json` the document's `serial`, or 0 when
/// it has none, fixed up by the caller).
fn decode(key: &StateKey, bytes: &[u8], entry_serial: Option<u64>) -> Result<Rec> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))?;
    let ours = value
        .as_object()
        .is_some_and(|o| o.contains_key("format") && o.contains_key("document"));
    if ours {
        let mut value = value;
        let document = value
            .as_object_mut()
            .and_then(|o| o.remove("document"))
            .unwrap_or(Value::Null);
        let r: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))?;
        let raw = match &r.ws {
            None => r.document.get().to_string(),
            Some([lead, trail]) => format!("{lead}{}{trail}", r.document.get()),
        };
        return Ok(Rec {
            serial: r.serial,
            saved_at: Some(r.saved_at),
            id: r.write_id,
            prev_id: r.prev_id,
            plain: false,
            rolled_back_from: r.rolled_back_from,
            fence: r.fence,
            deleted: r.deleted,
            document,
            raw: StateDocument { text: raw.into() },
        });
    }
    let serial = entry_serial
        .or_else(|| value.get("serial").and_then(Value::as_u64))
        .unwrap_or(0);
    Ok(Rec {
        serial,
        saved_at: None,
        id: format!("plain-{:016x}", fnv1a(bytes)),
        prev_id: None,
        plain: true,
        rolled_back_from: None,
        fence: None,
        deleted: false,
        document: value,
        raw: StateDocument::from_bytes(bytes).map_err(|e| corrupt(key, e))?,
    })
}

/// What reading `state.json` found.
enum StateRead {
    Missing,
    Damaged(Version, Error),
    Intact(Rec, Object),
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

    /// The serial of a tombstone this store last saw in `state.json`.
    fn recall_deleted(&self, stack: &str, env: &str) -> Option<u64> {
        self.seen_lock()
            .get(&(stack.to_string(), env.to_string()))
            .filter(|s| s.deleted)
            .map(|s| s.serial)
    }

    fn recall(&self, stack: &str, env: &str, serial: u64) -> Option<Seen> {
        self.seen_lock()
            .get(&(stack.to_string(), env.to_string()))
            .filter(|s| s.serial == serial && !s.plain)
            .cloned()
    }

    /// Lists the stack environment: its history entries and `state.json`'s time.
    async fn scan(&self, keys: &Keys) -> Result<Scan> {
        let mut scan = Scan::default();
        let mut listing = self.backend.list(Some(&keys.dir));
        while let Some(e) = listing.next().await {
            let e = e?;
            if e.key == keys.state {
                scan.state_modified = e.last_modified;
                continue;
            }
            if e.key
                .strip_prefix(&keys.history)
                .map(|k| k.segments().count())
                != Some(1)
            {
                continue;
            }
            let Some(serial) = serial_of(&e.key) else {
                continue;
            };
            let canonical = keys.entry(serial).ok().as_ref() == Some(&e.key);
            let listed = Listed {
                key: e.key,
                modified: e.last_modified,
            };
            match scan.entries.get(&serial) {
                Some(old) if !canonical && keys.entry(serial).ok().as_ref() == Some(&old.key) => {}
                Some(old) if !canonical && old.key.as_str() <= listed.key.as_str() => {}
                _ => {
                    scan.entries.insert(serial, listed);
                }
            }
        }
        Ok(scan)
    }

    /// Reads `state.json`. A plain one gets its serial and time from a
    /// listing of the stack environment.
    async fn read(&self, keys: &Keys) -> Result<StateRead> {
        let Some(obj) = self.backend.get(&keys.state).await? else {
            return Ok(StateRead::Missing);
        };
        match decode(&keys.state, &obj.bytes, None) {
            Err(e) => Ok(StateRead::Damaged(obj.version, e)),
            Ok(mut rec) => {
                if rec.plain {
                    let scan = self.scan(keys).await?;
                    rec.serial = self.plain_serial(&scan, &rec, &obj.bytes).await?;
                    rec.saved_at = scan.state_modified;
                }
                Ok(StateRead::Intact(rec, obj))
            }
        }
    }

    /// The serial of a plain `state.json` (see the [module docs](self)):
    /// its document's `serial` when that is above every history entry; else
    /// the highest entry's serial when that entry holds the same bytes (a
    /// tool that keeps the current state in its history too, or the copy a
    /// save makes when it wraps plain JSON), one below it when that entry is
    /// a save claimed on top of this plain state and not yet committed, and
    /// one above it otherwise.
    async fn plain_serial(&self, scan: &Scan, rec: &Rec, bytes: &Bytes) -> Result<u64> {
        let top = scan.top();
        if rec.serial > top {
            return Ok(rec.serial);
        }
        let Some(listed) = scan.entries.get(&top) else {
            return Ok(1);
        };
        match self.backend.get(&listed.key).await? {
            Some(obj) if obj.bytes == *bytes => Ok(top),
            Some(obj) => match decode(&listed.key, &obj.bytes, Some(top)) {
                Ok(pending) if !pending.plain && pending.prev_id.as_deref() == Some(&rec.id) => {
                    Ok(top.saturating_sub(1).max(1))
                }
                _ => Ok(top + 1),
            },
            None => Ok(top + 1),
        }
    }

    /// `state.json`, or `None`; a damaged one is [`Error::Corrupt`].
    async fn read_state(&self, keys: &Keys) -> Result<Option<(Rec, Object)>> {
        match self.read(keys).await? {
            StateRead::Missing => Ok(None),
            StateRead::Damaged(_, e) => Err(e),
            StateRead::Intact(rec, obj) => Ok(Some((rec, obj))),
        }
    }

    async fn read_key(&self, key: &StateKey, serial: u64) -> Result<Option<(Rec, usize)>> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(obj) => Ok(Some((
                decode(key, &obj.bytes, Some(serial))?,
                obj.bytes.len(),
            ))),
        }
    }

    /// The entry `history/<serial>.json` under its usual name only.
    async fn read_entry(&self, keys: &Keys, serial: u64) -> Result<Option<(Rec, usize)>> {
        self.read_key(&keys.entry(serial)?, serial).await
    }

    /// The entry of `serial` under any name (`000001.json`, else a listing
    /// for names such as `001.json` that other tools write).
    async fn find_entry(&self, keys: &Keys, serial: u64) -> Result<Option<(Rec, usize)>> {
        if let Some(found) = self.read_entry(keys, serial).await? {
            return Ok(Some(found));
        }
        let scan = self.scan(keys).await?;
        match scan.entries.get(&serial) {
            Some(l) if Some(&l.key) != keys.entry(serial).ok().as_ref() => {
                let mut found = self.read_key(&l.key, serial).await?;
                if let Some((rec, _)) = &mut found {
                    if rec.plain {
                        rec.saved_at = l.modified;
                    }
                }
                Ok(found)
            }
            _ => Ok(None),
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
        let doc = StateDocument::from_value(document)?;
        self.save_document(stack, env, &doc, SaveOptions::new(expected))
            .await
    }

    /// Saves `doc` (kept byte for byte) as the new state of `stack`/`env`,
    /// checked as `opts` says: a stale [`Expected`] serial is
    /// [`Error::Precondition`]; a `fence` below the token recorded in the
    /// current version is [`Error::Fenced`]. A deleted stack environment
    /// counts as [`Expected::New`] and goes on from its tombstone's serial.
    pub async fn save_document(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        opts: SaveOptions,
    ) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        self.write(&keys, stack, env, doc, opts, Kind::Save).await
    }

    /// Deletes the stack environment: writes a tombstone version on top of
    /// the current one (a compare-and-swap like a save, so it is fenced and
    /// checked the same way; [`Expected::New`] is not accepted). The history
    /// is kept until pruned, so a rollback to an older version restores it;
    /// [`StackStore::current`] and [`StackStore::stacks`] no longer show it.
    /// [`Error::NotFound`] when it has no state (or is already deleted).
    pub async fn delete(&self, stack: &str, env: &str, opts: SaveOptions) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        if opts.expected == Expected::New {
            return Err(Error::invalid(
                "a delete expects a serial or the latest version, not a new stack",
            ));
        }
        let doc = StateDocument {
            text: "null".into(),
        };
        self.write(&keys, stack, env, &doc, opts, Kind::Delete)
            .await
    }

    /// Resolves `opts.expected` and commits, retrying a lost race for
    /// [`Expected::Latest`].
    async fn write(
        &self,
        keys: &Keys,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        opts: SaveOptions,
        kind: Kind,
    ) -> Result<StackVersion> {
        let gone = || Error::not_found(format!("no state for stack {}", keys.name));
        match opts.expected {
            Expected::Serial(n) => {
                if kind == Kind::Delete {
                    if let Some(seen) = self.recall(stack, env, n) {
                        if seen.deleted {
                            return Err(gone());
                        }
                    }
                }
                self.commit(keys, stack, env, doc, Some(n), opts.fence, kind)
                    .await
            }
            Expected::New => {
                if let Some(tomb) = self.recall_deleted(stack, env) {
                    return self
                        .commit(keys, stack, env, doc, Some(tomb), opts.fence, kind)
                        .await;
                }
                match self
                    .commit(keys, stack, env, doc, None, opts.fence, kind)
                    .await
                {
                    Err(e @ Error::Precondition { .. }) => match self.read_state(keys).await? {
                        Some((rec, obj)) if rec.deleted => {
                            self.remember(stack, env, Seen::of(&rec, obj.version));
                            self.commit(keys, stack, env, doc, Some(rec.serial), opts.fence, kind)
                                .await
                        }
                        _ => Err(e),
                    },
                    other => other,
                }
            }
            Expected::Latest => {
                for _ in 0..LATEST_ROUNDS {
                    let base = match self.read_state(keys).await? {
                        Some((rec, obj)) => {
                            self.remember(stack, env, Seen::of(&rec, obj.version));
                            if rec.deleted && kind == Kind::Delete {
                                return Err(gone());
                            }
                            Some(rec.serial)
                        }
                        None if kind == Kind::Delete => return Err(gone()),
                        None => None,
                    };
                    match self
                        .commit(keys, stack, env, doc, base, opts.fence, kind)
                        .await
                    {
                        Err(Error::Precondition { .. }) => continue,
                        other => return other,
                    }
                }
                Err(Error::precondition(format!(
                    "stack {} kept changing during {LATEST_ROUNDS} attempts; try again",
                    keys.name
                )))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        keys: &Keys,
        serial: u64,
        write_id: &str,
        prev_id: Option<&str>,
        rolled_back_from: Option<u64>,
        fence: Option<u64>,
        deleted: bool,
        doc: &StateDocument,
    ) -> Result<(Bytes, DateTime<Utc>)> {
        let saved_at = self.clock.now();
        let (lead, document, trail) = doc.parts()?;
        let record = RecordOut {
            format: FORMAT,
            serial,
            saved_at,
            write_id,
            prev_id,
            rolled_back_from,
            fence,
            deleted,
            ws: (!lead.is_empty() || !trail.is_empty()).then_some([lead, trail]),
            document,
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::invalid(format!("cannot encode state of {}: {e}", keys.name)))?;
        Ok((Bytes::from(bytes), saved_at))
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        keys: &Keys,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        expected: Option<u64>,
        fence: Option<u64>,
        kind: Kind,
    ) -> Result<StackVersion> {
        let keys = keys.clone();
        // the state.json the caller's serial refers to
        let base: Option<Seen> = match expected {
            None => None,
            Some(n) => match self.recall(stack, env, n) {
                Some(seen) => Some(seen),
                None => match self.read_state(&keys).await? {
                    Some((rec, obj)) if rec.serial == n => {
                        let seen = Seen::of(&rec, obj.version.clone());
                        self.remember(stack, env, seen.clone());
                        if rec.plain {
                            // wrap it: keep the plain version in the history
                            match self
                                .backend
                                .put(&keys.entry(n)?, obj.bytes, PutMode::Create)
                                .await
                            {
                                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Some(seen)
                    }
                    Some((rec, obj)) => {
                        self.remember(stack, env, Seen::of(&rec, obj.version));
                        return Err(stale(&keys, expected, Some(rec.serial)));
                    }
                    None => return Err(stale(&keys, expected, None)),
                },
            },
        };
        if let Some(b) = &base {
            if kind == Kind::Delete && b.deleted {
                return Err(Error::not_found(format!(
                    "no state for stack {}",
                    keys.name
                )));
            }
            if let (Some(mine), Some(recorded)) = (fence, b.fence) {
                if recorded > mine {
                    return Err(Error::Fenced {
                        what: format!(
                            "stack {} was saved under fencing token {recorded}, newer than this lock's {mine}: the lease was lost to another holder; nothing was written",
                            keys.name
                        ),
                    });
                }
            }
        }
        let rolled_back_from = match kind {
            Kind::Rollback(to) => Some(to),
            _ => None,
        };
        let serial = match expected {
            None => 1,
            Some(n) => n
                .checked_add(1)
                .ok_or_else(|| Error::invalid(format!("serial {n} is too large")))?,
        };
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let (bytes, saved_at) = self.encode(
            &keys,
            serial,
            &write_id,
            base.as_ref().map(|b| b.id.as_str()),
            rolled_back_from,
            fence,
            kind == Kind::Delete,
            doc,
        )?;
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
                        id: write_id,
                        plain: false,
                        fence,
                        deleted: kind == Kind::Delete,
                    },
                );
            }
            Err(e) if e.is_conflict() => {
                self.forget(stack, env);
                // someone moved state.json: either they rolled this save
                // forward (it is committed), or our base was stale
                let now = match self.read(&keys).await? {
                    StateRead::Intact(rec, obj) => Some((rec, obj.version)),
                    _ => None,
                };
                let committed = match &now {
                    Some((rec, _)) if rec.plain => false,
                    Some((rec, _)) if rec.serial == serial => rec.id == write_id,
                    Some((rec, _)) if rec.serial == serial + 1 => {
                        rec.prev_id.as_deref() == Some(write_id.as_str())
                    }
                    Some((rec, _)) if rec.serial > serial + 1 => {
                        match self.read_entry(&keys, serial + 1).await {
                            Ok(Some((next, _))) => {
                                next.prev_id.as_deref() == Some(write_id.as_str())
                            }
                            // the next entry was pruned (or is damaged), so
                            // ours is in the pruned range whether or not it
                            // was ever committed: remove it, and report the
                            // (unknowable) outcome as stale
                            _ => false,
                        }
                    }
                    _ => false,
                };
                let now_serial = now.as_ref().map(|(r, _)| r.serial);
                if !committed {
                    // our entry can never be committed (state.json has moved
                    // past its serial without it): remove the stray entry
                    let _ = self.backend.delete(&entry_key, DeleteMode::Any).await;
                    return Err(stale(&keys, expected, now_serial));
                }
                if let Some((rec, version)) = now {
                    self.remember(stack, env, Seen::of(&rec, version));
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
        let (base_serial, base_id, mode) = match (&current, expected) {
            (None, None) => (0, None, PutMode::Create),
            (Some((rec, obj)), Some(n)) if rec.serial == n => (
                n,
                Some(rec.id.clone()),
                PutMode::Update(obj.version.clone()),
            ),
            (cur, _) => return Ok(cur.as_ref().map(|(r, _)| r.serial)),
        };
        let key = keys.entry(base_serial + 1)?;
        let Some(obj) = self.backend.get(&key).await? else {
            return Ok(current.map(|(r, _)| r.serial));
        };
        let rec = decode(&key, &obj.bytes, Some(base_serial + 1))?;
        if rec.plain || rec.serial != base_serial + 1 || rec.prev_id != base_id {
            // not based on the current state: a stray entry, never committed
            return Ok(current.map(|(r, _)| r.serial));
        }
        match self.backend.put(&keys.state, obj.bytes, mode).await {
            Ok(_) => Ok(Some(rec.serial)),
            Err(e) if e.is_conflict() => {
                // someone else committed it (or something newer) first
                Ok(self.read_state(keys).await?.map(|(r, _)| r.serial))
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

    /// The current state, or `None` if the stack environment has none. One
    /// backend call (two or three for plain JSON written by another tool);
    /// [`Error::Corrupt`] when `state.json` is damaged.
    pub async fn current(&self, stack: &str, env: &str) -> Result<Option<StackSnapshot>> {
        let keys = Keys::new(stack, env)?;
        match self.read_state(&keys).await? {
            None => {
                self.forget(stack, env);
                Ok(None)
            }
            Some((rec, obj)) => {
                self.remember(stack, env, Seen::of(&rec, obj.version));
                Ok((!rec.deleted).then(|| rec.snapshot()))
            }
        }
    }

    /// A committed version by serial; [`Error::NotFound`] if it does not
    /// exist or was pruned, [`Error::Corrupt`] if that version is damaged.
    /// One backend call for the current version, otherwise two or three;
    /// works with a damaged `state.json` (then it reads the whole history).
    pub async fn version(&self, stack: &str, env: &str, serial: u64) -> Result<StackSnapshot> {
        let keys = Keys::new(stack, env)?;
        let snap = self.version_of(&keys, stack, env, serial).await?;
        if snap.deleted {
            return Err(Error::not_found(format!(
                "version {serial} of stack {} is its deletion; pick an older version",
                keys.name
            )));
        }
        Ok(snap)
    }

    async fn version_of(
        &self,
        keys: &Keys,
        stack: &str,
        env: &str,
        serial: u64,
    ) -> Result<StackSnapshot> {
        let missing = || Error::not_found(format!("version {serial} of stack {}", keys.name));
        let cur = match self.read(keys).await? {
            StateRead::Missing => {
                self.forget(stack, env);
                return Err(missing());
            }
            StateRead::Damaged(..) => {
                self.forget(stack, env);
                return self
                    .version_in_walk(keys, serial)
                    .await?
                    .ok_or_else(missing);
            }
            StateRead::Intact(cur, obj) => {
                self.remember(stack, env, Seen::of(&cur, obj.version));
                cur
            }
        };
        if serial == cur.serial {
            return Ok(cur.snapshot());
        }
        if serial == 0 || serial > cur.serial {
            return Err(missing());
        }
        // committed iff the next committed record points back at it
        let Some((entry, _)) = self
            .find_entry(keys, serial)
            .await?
            .filter(|(e, _)| e.serial == serial)
        else {
            return Err(missing());
        };
        let next_ok = if serial + 1 == cur.serial {
            cur.accepts(&entry)
        } else {
            match self.find_entry(keys, serial + 1).await {
                Ok(Some((next, _))) if next.accepts(&entry) => true,
                // a gap or a damaged entry above: only the full walk can tell
                Ok(_) | Err(Error::Corrupt { .. }) => {
                    return self
                        .version_in_walk(keys, serial)
                        .await?
                        .ok_or_else(missing);
                }
                Err(e) => return Err(e),
            }
        };
        if next_ok {
            Ok(entry.snapshot())
        } else {
            Err(missing())
        }
    }

    /// Finds `serial` on the chain by walking the whole history.
    async fn version_in_walk(&self, keys: &Keys, serial: u64) -> Result<Option<StackSnapshot>> {
        let (chain, _) = self.walk(keys).await?;
        Ok(chain
            .into_iter()
            .find(|(r, _)| r.serial == serial)
            .map(|(r, _)| r.snapshot()))
    }

    /// The committed history, newest first, and the damaged objects.
    async fn walk(&self, keys: &Keys) -> Result<(Vec<(Rec, usize)>, Vec<Damaged>)> {
        let mut damaged = Vec::new();
        let cur = match self.read(keys).await? {
            StateRead::Missing => return Ok((Vec::new(), damaged)),
            StateRead::Damaged(_, e) => {
                damaged.push(Damaged {
                    key: keys.state.clone(),
                    serial: None,
                    message: e.to_string(),
                });
                None
            }
            StateRead::Intact(rec, obj) => Some((rec, obj.bytes.len())),
        };
        let scan = self.scan(keys).await?;
        let below = cur.as_ref().map_or(u64::MAX, |(r, _)| r.serial);
        let wanted: Vec<(u64, Listed)> = scan
            .entries
            .range(..below)
            .map(|(s, l)| (*s, l.clone()))
            .collect();
        let mut read: BTreeMap<u64, std::result::Result<(Rec, usize), Error>> =
            stream::iter(wanted)
                .map(|(s, l)| async move {
                    let got = match self.read_key(&l.key, s).await {
                        Ok(Some((mut rec, size))) => {
                            if rec.plain {
                                rec.saved_at = l.modified;
                            }
                            Some(Ok((rec, size)))
                        }
                        Ok(None) => None,
                        Err(e @ Error::Corrupt { .. }) => Some(Err(e)),
                        Err(e) => return Err(e),
                    };
                    Ok::<_, Error>((s, got))
                })
                .buffer_unordered(PARALLEL)
                .try_filter_map(|(s, got)| futures::future::ready(Ok(got.map(|g| (s, g)))))
                .try_collect()
                .await?;
        let mut chain = Vec::new();
        let (mut link, mut s) = match cur {
            Some((rec, size)) => {
                let link = rec.link();
                let s = rec.serial;
                chain.push((rec, size));
                (link, s)
            }
            None => (Link::Any, u64::MAX),
        };
        while let Some((&serial, _)) = read.range(..s).next_back() {
            let Some(item) = read.remove(&serial) else {
                break;
            };
            let next = serial + 1 == s;
            match (&link, item) {
                (Link::Prev(_), _) if !next => break,
                (Link::Prev(p), Ok((rec, size))) => {
                    if rec.serial != serial || p.as_deref() != Some(rec.id.as_str()) {
                        break;
                    }
                    link = rec.link();
                    chain.push((rec, size));
                }
                (Link::Any, Ok((rec, size))) => {
                    if rec.serial != serial {
                        break;
                    }
                    link = rec.link();
                    chain.push((rec, size));
                }
                (_, Err(e)) => {
                    let key = scan
                        .entries
                        .get(&serial)
                        .map(|l| l.key.clone())
                        .unwrap_or_else(|| keys.history.clone());
                    damaged.push(Damaged {
                        key,
                        serial: Some(serial),
                        message: e.to_string(),
                    });
                    link = Link::Any;
                }
            }
            s = serial;
        }
        Ok((chain, damaged))
    }

    /// The committed history, oldest first (empty if the stack environment
    /// has no state). Damaged objects are left out; see
    /// [`StackStore::history_report`].
    pub async fn history(&self, stack: &str, env: &str) -> Result<Vec<HistoryEntry>> {
        Ok(self.history_report(stack, env).await?.entries)
    }

    /// The committed history, oldest first, and the objects of the stack
    /// environment that cannot be read (see the [module docs](self)).
    pub async fn history_report(&self, stack: &str, env: &str) -> Result<History> {
        let keys = Keys::new(stack, env)?;
        let (chain, damaged) = self.walk(&keys).await?;
        let mut entries: Vec<HistoryEntry> = chain.iter().map(|(r, n)| r.entry(*n)).collect();
        entries.reverse();
        Ok(History { entries, damaged })
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
        self.rollback_with(stack, env, to, SaveOptions::new(expected))
            .await
    }

    /// [`StackStore::rollback`] checked as `opts` says (see
    /// [`StackStore::save_document`]); also undoes a delete.
    pub async fn rollback_with(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        opts: SaveOptions,
    ) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        // reading the version also refreshes this store's view of state.json,
        // so the save that follows needs no extra read
        let old = self.version(stack, env, to).await?;
        let doc = StateDocument::from_bytes(&old.raw)?;
        self.write(&keys, stack, env, &doc, opts, Kind::Rollback(to))
            .await
    }

    /// Writes version `to` over a damaged `state.json` (see the
    /// [module docs](self)): the new version is one above the highest
    /// history entry and replaces the damaged object only if nobody changed
    /// it meanwhile ([`Error::Precondition`] otherwise). Refused with
    /// [`Error::Precondition`] when `state.json` is readable (use
    /// [`StackStore::rollback`]) and [`Error::NotFound`] when there is none.
    pub async fn restore(&self, stack: &str, env: &str, to: u64) -> Result<StackVersion> {
        let keys = Keys::new(stack, env)?;
        self.forget(stack, env);
        let damaged_version = match self.read(&keys).await? {
            StateRead::Missing => {
                return Err(Error::not_found(format!(
                    "no state for stack {}",
                    keys.name
                )))
            }
            StateRead::Intact(rec, _) => {
                return Err(Error::precondition(format!(
                "the state of stack {} is readable (version {}); roll it back instead of restoring",
                keys.name, rec.serial
            )))
            }
            StateRead::Damaged(v, _) => v,
        };
        let (chain, _) = self.walk(&keys).await?;
        let Some((old, _)) = chain.iter().find(|(r, _)| r.serial == to) else {
            return Err(Error::not_found(format!(
                "version {to} of stack {}",
                keys.name
            )));
        };
        let top = self.scan(&keys).await?.top();
        let prev = chain
            .first()
            .filter(|(r, _)| r.serial == top)
            .map(|(r, _)| r.id.clone());
        let serial = top
            .checked_add(1)
            .ok_or_else(|| Error::invalid(format!("serial {top} is too large")))?;
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let (bytes, saved_at) = self.encode(
            &keys,
            serial,
            &write_id,
            prev.as_deref(),
            Some(to),
            old.fence,
            false,
            &old.raw,
        )?;
        let entry_key = keys.entry(serial)?;
        let changed = || {
            Error::precondition(format!(
                "stack {} changed while it was being restored; look at it again and retry",
                keys.name
            ))
        };
        match self
            .backend
            .put(&entry_key, bytes.clone(), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(Error::AlreadyExists { .. }) => return Err(changed()),
            Err(e) => return Err(e),
        }
        match self
            .backend
            .put(&keys.state, bytes, PutMode::Update(damaged_version))
            .await
        {
            Ok(_) => Ok(StackVersion { serial, saved_at }),
            Err(e) if e.is_conflict() => {
                let _ = self.backend.delete(&entry_key, DeleteMode::Any).await;
                Err(changed())
            }
            Err(e) => Err(e),
        }
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
        let Some((cur, _)) = self.read_state(&keys).await? else {
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
    /// Deleted ones ([`StackStore::delete`]) are left out: a `state.json`
    /// small enough to be a tombstone is read to tell.
    pub async fn stacks(&self) -> Result<Vec<(String, String)>> {
        let root = StateKey::new("stacks")?;
        let found: Vec<(String, String, StateKey, u64)> = self
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
                futures::future::ready(Ok(pair.map(|(s, v)| (s, v, e.key, e.size))))
            })
            .try_collect()
            .await?;
        let backend = &self.backend;
        let mut pairs: Vec<(String, String)> = stream::iter(found)
            .map(|(stack, env, key, size)| async move {
                if size > TOMBSTONE_MAX {
                    return Ok::<_, Error>(Some((stack, env)));
                }
                let live = match backend.get(&key).await? {
                    None => false,
                    // a damaged one is shown (as damaged) by the callers
                    Some(obj) => decode(&key, &obj.bytes, None).map_or(true, |r| !r.deleted),
                };
                Ok(live.then_some((stack, env)))
            })
            .buffer_unordered(PARALLEL)
            .try_filter_map(|p| futures::future::ready(Ok(p)))
            .try_collect()
            .await?;
        pairs.sort();
        pairs.dedup();
        Ok(pairs)
    }

    /// Every stack environment with live state ([`StackStore::stacks`]),
    /// with its current serial and save time (or why its `state.json`
    /// cannot be read) and the holder of its lock among `held` (the
    /// tenant's held locks): what `tenancy state list` and the server's
    /// `GET /v1/stacks` show.
    pub async fn listing(&self, held: &[LockInfo]) -> Result<Vec<ListedStack>> {
        let mut out = Vec::new();
        for (stack, env) in self.stacks().await? {
            let current = match self.current(&stack, &env).await {
                Ok(Some(c)) => Ok((c.serial, c.saved_at)),
                // deleted meanwhile: a tombstone, not listed
                Ok(None) => continue,
                Err(e @ Error::Corrupt { .. }) => Err(e.to_string()),
                Err(e) => return Err(e),
            };
            let key = LockKey::stack_env(&stack, &env).ok();
            let locked_by = held.iter().find(|l| Some(&l.key) == key.as_ref()).cloned();
            out.push(ListedStack {
                stack,
                env,
                current,
                locked_by,
            });
        }
        Ok(out)
    }
}

/// One stack environment of [`StackStore::listing`].
#[derive(Debug, Clone, PartialEq)]
pub struct ListedStack {
    /// The stack.
    pub stack: String,
    /// The environment.
    pub env: String,
    /// Its current serial and save time, or why its state cannot be read.
    pub current: std::result::Result<(u64, Option<DateTime<Utc>>), String>,
    /// The holder of its lock, if it is locked.
    pub locked_by: Option<LockInfo>,
}
