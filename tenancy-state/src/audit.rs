//! The audit trail: append-only, hash-chained logs of who did what, one per
//! tenant and one for admin actions, on any [`StateBackend`].
//!
//! # Layout
//!
//! ```text
//! audit/admin/entries/<seq, 20 digits>.json          the admin log
//! audit/tenants/<id>/entries/<seq, 20 digits>.json   a tenant's log
//! audit/.../tip.json                                 a hint: a recent sequence number
//! audit/.../cut.json                                 where `prune` cut the chain
//! ```
//!
//! Outside `tenants/<id>/`, so a tenant that can write its own tree cannot
//! touch its log.
//!
//! # Protocol
//!
//! - **Append** writes entry N+1 with [`PutMode::Create`], holding the
//!   SHA-256 of entry N's stored bytes (`prev`; 64 zeros for the first).
//!   Two writers can never both write entry N+1: the loser reads the
//!   winner's entry and tries N+2 on top of it, so the chain never forks.
//!   The tail is found from the hint (rewritten every [`TIP_EVERY`]
//!   appends, never trusted beyond a starting point) by reading forward
//!   until an entry is missing, so an append costs one conditional write;
//!   a log remembers the last entry it appended per chain, so its next
//!   append there is that one write and no read (another writer's entry in
//!   between makes it a lost race: read forward, try again).
//! - **Verify** reads the chain in order and reports every entry that was
//!   modified (its bytes no longer hash to the next entry's `prev`, or do
//!   not decode), missing (a gap in the numbers) or moved (an entry whose
//!   recorded number is not the one of its key), and where. Given a
//!   [`Head`] recorded earlier and kept outside the store (`tenancy audit
//!   head`), it also detects a rewrite of the whole chain, as CloudTrail's
//!   digest files do.
//! - **Prune** records the hash it cuts at (`cut.json`: the first kept
//!   number and the hash of the last removed entry) before it deletes, so
//!   the rest stays verifiable.
//!
//! Entries never hold a secret, hash or session token: callers pass ids,
//! names and outcomes only ([`NewEntry`]).

use std::sync::Arc;

use crate::memo::Memo;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
pub use tenancy_core::audit::{
    Actor, Entry, Filter, Head, NewEntry, Outcome, Problem, ProblemKind, Scope, Verification,
};
use tenancy_core::credentials::sha256_hex;
use tenancy_core::{
    Clock, DeleteMode, Error, PutMode, Result, StateBackend, StateKey, SystemClock,
};

/// The top-level prefix of every audit log.
pub const AUDIT: &str = "audit";

/// The tip hint is rewritten every this many appends.
pub const TIP_EVERY: u64 = 8;

/// The `prev` of the first entry of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const FORMAT: u32 = 1;
const APPEND_ATTEMPTS: u32 = 64;

/// Where a log lives (the layout in the module docs).
trait ScopeKeys {
    fn root(&self) -> Result<StateKey>;
    fn entries(&self) -> Result<StateKey>;
    fn entry(&self, seq: u64) -> Result<StateKey>;
    fn tip(&self) -> Result<StateKey>;
    fn cut(&self) -> Result<StateKey>;
}

impl ScopeKeys for Scope {
    fn root(&self) -> Result<StateKey> {
        match self {
            Scope::Admin => StateKey::new(format!("{AUDIT}/admin")),
            Scope::Tenant(id) => StateKey::new(format!("{AUDIT}/tenants/{id}")),
        }
    }

    fn entries(&self) -> Result<StateKey> {
        self.root()?.child("entries")
    }

    fn entry(&self, seq: u64) -> Result<StateKey> {
        self.entries()?.child(&format!("{seq:020}.json"))
    }

    fn tip(&self) -> Result<StateKey> {
        self.root()?.child("tip.json")
    }

    fn cut(&self) -> Result<StateKey> {
        self.root()?.child("cut.json")
    }
}

/// The stored shape of an entry (the domain type is [`Entry`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    seq: u64,
    at: DateTime<Utc>,
    actor: Actor,
    action: String,
    target: String,
    via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    outcome: Outcome,
    #[serde(default)]
    detail: serde_json::Value,
    prev: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tip {
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cut {
    /// The first entry kept.
    seq: u64,
    /// The hash of the last entry removed.
    prev: String,
    /// When the cut was made.
    at: DateTime<Utc>,
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Entry> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: format!("audit entry {seq}"),
        message: e.to_string(),
    })?;
    Ok(entry_of(r, bytes))
}

/// The entry a record stored as `bytes` is.
fn entry_of(r: Record, bytes: &[u8]) -> Entry {
    Entry {
        seq: r.seq,
        at: r.at,
        actor: r.actor,
        action: r.action,
        target: r.target,
        via: r.via,
        request_id: r.request_id,
        outcome: r.outcome,
        detail: r.detail,
        prev: r.prev,
        hash: sha256_hex(bytes),
    }
}

/// The number of an entry key (`.../entries/00000000000000000042.json`).
fn seq_of(key: &StateKey) -> Option<u64> {
    key.as_str()
        .rsplit('/')
        .next()?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The audit logs on one backend.
#[derive(Debug, Clone)]
pub struct AuditLog<B: StateBackend> {
    backend: B,
    clock: Arc<dyn Clock>,
    /// The last entry this process appended or found per log (shared by
    /// clones): the next append tries right after it, with no read.
    tails: Arc<Memo<Scope, (u64, String)>>,
}

/// Logs whose tail is remembered at most.
const REMEMBERED_TAILS: usize = 100_000;

impl<B: StateBackend> AuditLog<B> {
    /// The logs on `backend`, on the system clock.
    pub fn new(backend: B) -> Self {
        AuditLog {
            backend,
            clock: Arc::new(SystemClock),
            tails: Arc::new(Memo::new(REMEMBERED_TAILS)),
        }
    }

    fn remembered(&self, scope: &Scope) -> Option<(u64, String)> {
        self.tails.read(scope, |t| t.cloned())
    }

    fn remember(&self, scope: &Scope, seq: u64, hash: &str) {
        self.tails.write(scope, |_| (seq, hash.to_string()));
    }

    /// Stamps entries with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, key: &StateKey) -> Result<Option<T>> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(o) => serde_json::from_slice(&o.bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    what: key.to_string(),
                    message: e.to_string(),
                }),
        }
    }

    /// The last entry's number and hash (for an empty chain: the floor and
    /// the cut's or the genesis link), read forward from the tip hint, and
    /// the floor (the number before the first kept entry).
    async fn tail(&self, scope: &Scope) -> Result<(u64, String, u64)> {
        let cut: Option<Cut> = self.read_json(&scope.cut()?).await?;
        let floor = cut.as_ref().map_or(0, |c| c.seq.saturating_sub(1));
        let hint = self
            .read_json::<Tip>(&scope.tip()?)
            .await?
            .map_or(0, |t| t.seq);
        // A hint past the entries (pruned or lost) is no starting point.
        let from_hint = match hint {
            n if n > floor => self
                .backend
                .get(&scope.entry(n)?)
                .await?
                .map(|o| (n, sha256_hex(&o.bytes))),
            _ => None,
        };
        let start = from_hint.as_ref().map_or(floor, |(n, _)| *n);
        let (seq, hash) = match self.forward(scope, start).await?.or(from_hint) {
            Some(last) => last,
            None => (floor, cut.map_or_else(|| GENESIS.to_string(), |c| c.prev)),
        };
        Ok((seq, hash, floor))
    }

    /// The last entry after number `from` (reading forward until one is
    /// missing), or `None` when there is none after it.
    async fn forward(&self, scope: &Scope, from: u64) -> Result<Option<(u64, String)>> {
        let mut seq = from;
        let mut last = None;
        while let Some(o) = self.backend.get(&scope.entry(seq + 1)?).await? {
            seq += 1;
            last = Some((seq, sha256_hex(&o.bytes)));
        }
        Ok(last)
    }

    /// Appends `entry` to `scope`'s chain: one conditional write on top of
    /// the current tail; on a lost race, on top of the winner.
    pub async fn append(&self, scope: &Scope, entry: NewEntry) -> Result<Entry> {
        let (mut seq, mut prev) = match self.remembered(scope) {
            Some(tail) => tail,
            None => {
                let (seq, prev, _) = self.tail(scope).await?;
                (seq, prev)
            }
        };
        for _ in 0..APPEND_ATTEMPTS {
            let record = Record {
                format: FORMAT,
                seq: seq + 1,
                at: self.clock.now(),
                actor: entry.actor.clone(),
                action: entry.action.clone(),
                target: entry.target.clone(),
                via: entry.via.clone(),
                request_id: entry.request_id.clone(),
                outcome: entry.outcome,
                detail: entry.detail.clone(),
                prev: prev.clone(),
            };
            let bytes =
                Bytes::from(serde_json::to_vec(&record).map_err(|e| {
                    Error::invalid(format!("an audit entry that is not JSON: {e}"))
                })?);
            match self
                .backend
                .put(&scope.entry(record.seq)?, bytes.clone(), PutMode::Create)
                .await
            {
                Ok(_) => {
                    if record.seq.is_multiple_of(TIP_EVERY) {
                        let tip = serde_json::to_vec(&Tip { seq: record.seq })
                            .map_err(|e| Error::invalid(e.to_string()))?;
                        // A hint only: a lost or stale one costs reads, never correctness.
                        let _ = self
                            .backend
                            .put(&scope.tip()?, Bytes::from(tip), PutMode::Overwrite)
                            .await;
                    }
                    let appended = entry_of(record, &bytes);
                    self.remember(scope, appended.seq, &appended.hash);
                    return Ok(appended);
                }
                Err(Error::AlreadyExists { .. }) => {
                    // Other writers took this number (and maybe more):
                    // chain onto the last of their entries.
                    match self.forward(scope, record.seq - 1).await? {
                        Some((s, p)) => {
                            seq = s;
                            prev = p;
                        }
                        None => {
                            let (s, p, _) = self.tail(scope).await?;
                            seq = s;
                            prev = p;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::precondition(format!(
            "the {scope} audit log kept changing under concurrent writers ({APPEND_ATTEMPTS} attempts); try again"
        )))
    }

    /// Every entry key of `scope` with its number, in order.
    async fn keys(&self, scope: &Scope) -> Result<Vec<(u64, StateKey)>> {
        let prefix = scope.entries()?;
        let mut keys = Vec::new();
        let mut listing = self.backend.list(Some(&prefix));
        while let Some(e) = listing.next().await {
            let e = e?;
            if let Some(n) = seq_of(&e.key) {
                keys.push((n, e.key));
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// `scope`'s entries that pass `filter`, oldest first. An entry that
    /// cannot be read is an error naming it (`verify` reports all of them).
    pub async fn list(&self, scope: &Scope, filter: &Filter) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for (n, key) in self.keys(scope).await? {
            let Some(o) = self.backend.get(&key).await? else {
                continue;
            };
            let e = decode(n, &o.bytes)?;
            if filter.since.is_some_and(|t| e.at < t) {
                continue;
            }
            if let Some(a) = &filter.action {
                let hit = if a.ends_with('.') {
                    e.action.starts_with(a.as_str())
                } else {
                    &e.action == a
                };
                if !hit {
                    continue;
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The head of `scope`'s chain (`None` while it is empty).
    pub async fn head(&self, scope: &Scope) -> Result<Option<Head>> {
        let (seq, hash, floor) = self.tail(scope).await?;
        Ok((seq > floor).then_some(Head { seq, hash }))
    }

    /// Checks the whole chain of `scope` (and, given `expected`, that the
    /// head recorded then is still in it, unchanged).
    pub async fn verify(&self, scope: &Scope, expected: Option<&Head>) -> Result<Verification> {
        let cut: Option<Cut> = self.read_json(&scope.cut()?).await?;
        let first = cut.as_ref().map_or(1, |c| c.seq.max(1));
        let mut link = cut.map_or_else(|| GENESIS.to_string(), |c| c.prev);
        let mut problems = Vec::new();
        let mut want = first;
        let mut entries = 0;
        let mut head = None;
        let mut hashes = std::collections::HashMap::new();
        // After an entry already reported, its successor's link is not a
        // second finding.
        let mut prev_bad = false;
        for (n, key) in self.keys(scope).await? {
            if n < first {
                continue;
            }
            let Some(o) = self.backend.get(&key).await? else {
                continue;
            };
            entries += 1;
            if n > want {
                let gap = if n == want + 1 {
                    format!("entry {want} is missing")
                } else {
                    format!("entries {want} to {} are missing", n - 1)
                };
                problems.push(Problem {
                    seq: want,
                    kind: ProblemKind::Missing,
                    message: gap,
                });
                // the next entry cannot link to what is gone
                link = String::new();
            }
            let hash = sha256_hex(&o.bytes);
            let reported = problems.len();
            match decode(n, &o.bytes) {
                Err(e) => problems.push(Problem {
                    seq: n,
                    kind: ProblemKind::Modified,
                    message: format!("entry {n} does not decode: {e}"),
                }),
                Ok(e) => {
                    if e.seq != n {
                        problems.push(Problem {
                            seq: n,
                            kind: ProblemKind::Moved,
                            message: format!(
                                "the entry stored as number {n} says it is number {}: entries were swapped or moved",
                                e.seq
                            ),
                        });
                    } else if !prev_bad && !link.is_empty() && e.prev != link {
                        let before = n.saturating_sub(1);
                        problems.push(Problem {
                            seq: before.max(first),
                            kind: ProblemKind::Modified,
                            message: if n == first {
                                format!("entry {n} does not link to the start of the chain: it or the cut was modified")
                            } else {
                                format!("entry {before} was modified: its hash is not the link entry {n} holds")
                            },
                        });
                    }
                }
            }
            prev_bad = problems.len() > reported;
            hashes.insert(n, hash.clone());
            link = hash.clone();
            head = Some(Head { seq: n, hash });
            want = n + 1;
        }
        if let Some(h) = expected {
            match hashes.get(&h.seq) {
                Some(found) if *found == h.hash => {}
                Some(_) => problems.push(Problem {
                    seq: h.seq,
                    kind: ProblemKind::Rewritten,
                    message: format!(
                        "entry {} is not the one the recorded head names: the chain was rewritten",
                        h.seq
                    ),
                }),
                None if h.seq < first => {}
                None => problems.push(Problem {
                    seq: h.seq,
                    kind: ProblemKind::Rewritten,
                    message: format!(
                        "entry {} of the recorded head is not in the chain: it was cut short or rewritten",
                        h.seq
                    ),
                }),
            }
        }
        Ok(Verification {
            entries,
            first,
            head,
            problems,
        })
    }

    /// Removes `scope`'s entries older than `before`, keeping the newest
    /// entry always, after recording the cut (the first kept number and
    /// the hash of the last removed entry). Returns how many were removed.
    pub async fn prune(&self, scope: &Scope, before: DateTime<Utc>) -> Result<u64> {
        let keys = self.keys(scope).await?;
        let mut cut_at = None;
        for (i, (n, key)) in keys.iter().enumerate() {
            if i + 1 == keys.len() {
                break; // the newest stays: it is the head
            }
            let Some(o) = self.backend.get(key).await? else {
                continue;
            };
            let e = decode(*n, &o.bytes)?;
            if e.at >= before {
                break;
            }
            cut_at = Some((*n, sha256_hex(&o.bytes)));
        }
        let Some((last_removed, prev)) = cut_at else {
            return Ok(0);
        };
        let cut = Cut {
            seq: last_removed + 1,
            prev,
            at: self.clock.now(),
        };
        let bytes = serde_json::to_vec(&cut).map_err(|e| Error::invalid(e.to_string()))?;
        self.backend
            .put(&scope.cut()?, Bytes::from(bytes), PutMode::Overwrite)
            .await?;
        let mut removed = 0;
        for (n, key) in keys {
            if n > last_removed {
                break;
            }
            match self.backend.delete(&key, DeleteMode::Any).await {
                Ok(()) => removed += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
