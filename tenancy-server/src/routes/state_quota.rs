//! Quota accounting of the server's state API: every object a tenant keeps
//! through `/v1/state` counts against its plan's `state_bytes` and
//! `state_objects` limits, exactly, under concurrency.
//!
//! # Protocol
//!
//! The counters live in the tenant's usage record (`registry-usage/<id>.yaml`,
//! written with compare-and-swap like every quota); committed state
//! reservations are not listed there, their amount stays in the counter.
//! A write is accounted against the exact object it replaces:
//!
//! 1. **Read** the current object (its size and version).
//! 2. **Reserve the growth**: `new - old` bytes when the object grows, and one
//!    object when it is new. Over a limit the request is answered 429
//!    `quota_exceeded` naming the resource, and nothing is written.
//! 3. **Write conditionally on what was read** (`Update(version)`, or `Create`
//!    when absent), so the size difference is the real one: a concurrent
//!    writer makes this write fail, the reservations are released, and a
//!    plain `PUT` starts again at 1 (an `If-Match` / `If-None-Match` write
//!    answers 412 as before).
//! 4. **Settle**: commit the reservations; a shrink (`old - new` bytes) is
//!    given back with a release of a fresh reservation id (exactly once,
//!    never more than the counter holds beyond pending reservations).
//!
//! A `DELETE` reads the object, deletes it conditionally on its version
//! (where the backend can) and gives back its size and one object. A failed
//! or refused write takes nothing: every reservation is released on failure.
//! Each accounted write runs in its own task, so a client that disconnects
//! or a request timeout never stops it between the write and the settle.
//!
//! # Bounds
//!
//! - **Crash** between the write and the settle: the pending reservation
//!   expires after the reservation TTL and gives its growth back, so the
//!   counter is *below* the stored bytes by at most the growth of the writes
//!   in flight (each at most the body limit). A crash between a delete and
//!   its give-back leaves the counter *above* by at most the deleted sizes in
//!   flight. The job reconciler does not recount state (a listing races with
//!   writes in flight and cannot be made exact without a lock per tenant);
//!   the drift is bounded by what was in flight at the crash.
//! - **S3** has no conditional delete: two concurrent `DELETE`s of one object
//!   both give its size back (the counter ends below the truth by that size).
//! - The server's own `_server/` records are not counted. Stack state
//!   (`/v1/stacks/...`) counts its current documents the same way, in
//!   `tenancy_state::stack_quota`.

use std::sync::Arc;

use bytes::Bytes;
use tenancy_core::StateBackendExt as _;
use tenancy_core::{
    Account, Error, PutMode, Resource, Result, StateBackend, StateKey, TenantId, TenantRegistry,
    Version,
};

/// How often a plain `PUT` starts again after losing a race to another writer.
const MAX_ROUNDS: u32 = 16;

/// What a client asked a write to be conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// No condition (`PUT` without `If-*`).
    Any,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>` (or `*`, resolved to the current version).
    At(Version),
}

/// How an accounted write ended.
#[derive(Debug)]
pub(crate) enum Written {
    /// Stored: the new version, and whether the object is new.
    Stored(Version, bool),
    /// The condition the client gave does not hold.
    Precondition(&'static str),
}

fn len(b: &Bytes) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

/// Writes `bytes` at `key` with the [protocol](self).
pub(crate) async fn put(
    registry: Arc<dyn TenantRegistry>,
    tenant: TenantId,
    store: Arc<dyn StateBackend>,
    key: StateKey,
    bytes: Bytes,
    want: Want,
) -> Result<Written> {
    let new_len = len(&bytes);
    let mut account = Account::new(&*registry, &tenant);
    for _ in 0..MAX_ROUNDS {
        let current = store.get(&key).await?;
        let mode = match (&want, &current) {
            (Want::Absent, Some(_)) => return Ok(Written::Precondition("exists")),
            (Want::At(_), None) => return Ok(Written::Precondition("absent")),
            (Want::At(v), Some(o)) if *v != o.version => {
                return Ok(Written::Precondition("version"))
            }
            (_, None) => PutMode::Create,
            (_, Some(o)) => PutMode::Update(o.version.clone()),
        };
        let old_len = current.as_ref().map_or(0, |o| len(&o.bytes));
        let is_new = current.is_none();
        let reserved = async {
            account
                .reserve(Resource::StateBytes, new_len.saturating_sub(old_len))
                .await?;
            account
                .reserve(Resource::StateObjects, u64::from(is_new))
                .await
        }
        .await;
        if let Err(e) = reserved {
            account.release_all().await?;
            return Err(e);
        }
        match store.put(&key, bytes.clone(), mode).await {
            Ok(version) => {
                account.commit_all().await?;
                account
                    .give_back(Resource::StateBytes, old_len.saturating_sub(new_len))
                    .await?;
                return Ok(Written::Stored(version, is_new));
            }
            Err(e) => {
                account.release_all().await?;
                if !e.is_conflict() {
                    return Err(e);
                }
                match want {
                    Want::Any => continue,
                    Want::Absent => return Ok(Written::Precondition("exists")),
                    Want::At(_) => return Ok(Written::Precondition("version")),
                }
            }
        }
    }
    Err(Error::precondition(format!(
        "state key {key} kept changing during {MAX_ROUNDS} attempts; try again"
    )))
}

/// Deletes `key`, which was read as `current`, conditionally on that
/// version where the backend can, and gives its size and the object back.
pub(crate) async fn delete(
    registry: Arc<dyn TenantRegistry>,
    tenant: TenantId,
    store: Arc<dyn StateBackend>,
    key: StateKey,
    current: tenancy_core::Object,
) -> Result<()> {
    store
        .delete_if_unchanged(&key, current.version.clone())
        .await?;
    let account = Account::new(&*registry, &tenant);
    account
        .give_back(Resource::StateBytes, len(&current.bytes))
        .await?;
    account.give_back(Resource::StateObjects, 1).await
}
