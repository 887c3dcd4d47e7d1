//! The `max_stacks` quota of stack state: the one counting the CLI (direct
//! mode) and the server's stack routes both use.
//!
//! # Protocol
//!
//! A stack is counted once, whatever its number of environments, and the
//! count is owned by a **marker** `stack-quota/<stack>` in the tenant's
//! scope that names the reservation it was counted with.
//!
//! - **First save of a stack environment** (it has no state, or was
//!   deleted): if the stack's marker exists, the stack is counted already.
//!   Else, if another environment of the stack has live state (a stack
//!   written before markers existed, or migrated: counted then), the marker
//!   is created without a reservation. Else one `stacks` unit is reserved
//!   (over the limit: [`Error::QuotaExceeded`], nothing written), the marker
//!   is created with `Create` (exactly one of concurrent first savers of one
//!   stack wins; the others release their reservation: N environments of a
//!   new stack saved at once count one stack), the reservation is
//!   committed, and only then the state is saved. A save that fails after
//!   that deletes the marker and gives the unit back.
//! - **Delete** of a stack environment writes its tombstone
//!   ([`StackStore::delete`]); when no environment of the stack has live
//!   state any more, the marker is deleted (conditionally where the backend
//!   can) and the unit given back by releasing the reservation it names
//!   (committed stack reservations stay listed in the usage record; a stack
//!   counted before markers gives back an unlisted unit).
//!
//! The **current document** of each stack environment also counts against
//! the plan's `state_bytes` (its size) and `state_objects` (one per stack
//! environment), exactly like an object of the state API: a save reserves
//! the growth (and one object for a new environment) before it writes,
//! commits after, and gives a shrink back; a delete gives its size and the
//! object back; a refused save stores nothing (429 `quota_exceeded`).
//! History is not counted (it is bounded by retention where one is set).
//!
//! # Bounds
//!
//! - A crash between creating the marker and committing its reservation
//!   lets the pending reservation expire: the stack is then counted by its
//!   marker but not by the usage counter (one stack under the truth per
//!   crash at that point). A crash between a delete and its give-back keeps
//!   one unit counted for a stack that has no state.
//! - A delete of a stack's last environment racing the first save of
//!   another environment of the same stack can leave that stack uncounted;
//!   concurrent deletes of the last two environments of a stack on a
//!   backend without conditional deletes (S3) can both give its unit back.

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tenancy_core::StateBackendExt as _;
use tenancy_core::{
    Account, DeleteMode, Error, PutMode, Reservation, Resource, Result, StateBackend, StateKey,
    Tenant, TenantRegistry,
};
use uuid::Uuid;

use crate::stack::{Expected, SaveOptions, StackStore, StackVersion, StateDocument};

/// The top-level name of the stack markers in a tenant's scope.
pub const MARKER_PREFIX: &str = "stack-quota";

/// How often a write on top of the latest version starts again after
/// losing a race (each round is accounted afresh).
const LATEST_ROUNDS: u32 = 16;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The reservation the stack was counted with (`None`: counted before
    /// markers existed).
    reservation: Option<Uuid>,
    created_at: chrono::DateTime<Utc>,
}

fn marker_key(stack: &str) -> Result<StateKey> {
    StateKey::new(MARKER_PREFIX)?.join(&StateKey::segment(stack)?)
}

fn len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// `opts` with [`Expected::Latest`] pinned to the version just read.
fn pinned(opts: SaveOptions, current: Option<u64>) -> SaveOptions {
    match (opts.expected, current) {
        (Expected::Latest, None) => SaveOptions {
            expected: Expected::New,
            ..opts
        },
        (Expected::Latest, Some(serial)) => SaveOptions {
            expected: Expected::Serial(serial),
            ..opts
        },
        _ => opts,
    }
}

/// One tenant's stack store with its quota: every write of the CLI and the
/// server's stack routes goes through here (see the [module docs](self)).
#[derive(Debug)]
pub struct StackQuota<'a, B: StateBackend> {
    store: &'a StackStore<B>,
    registry: &'a dyn TenantRegistry,
    tenant: &'a Tenant,
}

impl<'a, B: StateBackend> StackQuota<'a, B> {
    /// The quota of `tenant` (whose scoped store `store` is) in `registry`.
    pub fn new(
        store: &'a StackStore<B>,
        registry: &'a dyn TenantRegistry,
        tenant: &'a Tenant,
    ) -> Self {
        StackQuota {
            store,
            registry,
            tenant,
        }
    }

    /// Saves `doc` at `stack`/`env` like [`StackStore::save_document`],
    /// counting a new stack against `max_stacks` and the document against
    /// `state_bytes` and `state_objects`.
    pub async fn save(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        opts: SaveOptions,
    ) -> Result<StackVersion> {
        self.retrying(opts, || self.save_once(stack, env, doc, None, opts))
            .await
    }

    /// Rolls `stack`/`env` back to version `to` like
    /// [`StackStore::rollback_with`], counted like a save of that version's
    /// document (a deleted stack environment comes back counted).
    pub async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        opts: SaveOptions,
    ) -> Result<StackVersion> {
        let old = self.store.version(stack, env, to).await?;
        let doc = StateDocument::from_bytes(&old.raw)?;
        self.retrying(opts, || self.save_once(stack, env, &doc, Some(to), opts))
            .await
    }

    /// Deletes `stack`/`env` like [`StackStore::delete`], gives its
    /// document's bytes and object back and, when no environment of the
    /// stack has state any more, its `max_stacks` unit. Returns the
    /// tombstone's version and whether the stack's unit was given back.
    pub async fn delete(
        &self,
        stack: &str,
        env: &str,
        opts: SaveOptions,
    ) -> Result<(StackVersion, bool)> {
        let (gone, size) = self
            .retrying(opts, || async {
                let cur =
                    self.store.current(stack, env).await?.ok_or_else(|| {
                        Error::not_found(format!("no state for stack {stack}/{env}"))
                    })?;
                let v = self
                    .store
                    .delete(stack, env, pinned(opts, Some(cur.serial)))
                    .await?;
                Ok((v, len(&cur.raw)))
            })
            .await?;
        let account = Account::new(self.registry, &self.tenant.id);
        account.give_back(Resource::StateBytes, size).await?;
        account.give_back(Resource::StateObjects, 1).await?;
        let given_back = self.uncount_stack(stack, env).await?;
        Ok((gone, given_back))
    }

    /// Runs `write`, again on top of the latest version after a lost race
    /// when `opts` expects [`Expected::Latest`].
    async fn retrying<T, F, Fut>(&self, opts: SaveOptions, mut write: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let latest = opts.expected == Expected::Latest;
        let mut round = 0;
        loop {
            round += 1;
            match write().await {
                Err(Error::Precondition { .. }) if latest && round < LATEST_ROUNDS => continue,
                other => return other,
            }
        }
    }

    /// One accounted save (or rollback to `rollback_to`, whose document
    /// `doc` is): read the current version, reserve what the new document
    /// adds, write expecting exactly that version, settle.
    async fn save_once(
        &self,
        stack: &str,
        env: &str,
        doc: &StateDocument,
        rollback_to: Option<u64>,
        opts: SaveOptions,
    ) -> Result<StackVersion> {
        let cur = self.store.current(stack, env).await?;
        let opts = pinned(opts, cur.as_ref().map(|c| c.serial));
        let (old_len, new_len) = (cur.as_ref().map_or(0, |c| len(&c.raw)), len(doc.as_bytes()));
        let mut account = Account::new(self.registry, &self.tenant.id);
        let reserved = async {
            account
                .reserve(Resource::StateBytes, new_len.saturating_sub(old_len))
                .await?;
            account
                .reserve(Resource::StateObjects, u64::from(cur.is_none()))
                .await?;
            if cur.is_none() {
                self.count_stack(stack, env).await
            } else {
                Ok(None)
            }
        }
        .await;
        let counted = match reserved {
            Ok(counted) => counted,
            Err(e) => {
                account.release_all().await?;
                return Err(e);
            }
        };
        let saved = match rollback_to {
            None => self.store.save_document(stack, env, doc, opts).await,
            Some(to) => self.store.rollback_with(stack, env, to, opts).await,
        };
        if saved.is_ok() {
            account.commit_all().await?;
            account
                .give_back(Resource::StateBytes, old_len.saturating_sub(new_len))
                .await?;
            return saved;
        }
        account.release_all().await?;
        if let Some((marker, r)) = counted {
            // Best effort: a failure here leaves one unit counted for a
            // stack without state (the bound in the module docs).
            if self
                .store
                .backend()
                .delete(&marker, DeleteMode::Any)
                .await
                .is_ok()
            {
                let _ = self.registry.release(&r).await;
            }
        }
        saved
    }

    /// Counts `stack` if it is not counted yet; returns the marker and the
    /// reservation when this call counted it.
    async fn count_stack(&self, stack: &str, env: &str) -> Result<Option<(StateKey, Reservation)>> {
        let (registry, tenant) = (self.registry, self.tenant);
        let backend = self.store.backend();
        let key = marker_key(stack)?;
        if backend.get(&key).await?.is_some() {
            return Ok(None);
        }
        let encode = |reservation: Option<Uuid>| -> Result<Bytes> {
            let m = Marker {
                reservation,
                created_at: Utc::now(),
            };
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .map_err(|e| Error::invalid(format!("cannot encode the stack marker: {e}")))
        };
        let pairs = self.store.stacks().await?;
        if pairs.iter().any(|(s, e)| s == stack && e != env) {
            // counted when it was first saved (before markers) or migrated
            return match backend.put(&key, encode(None)?, PutMode::Create).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        // The stacks that exist count too, whatever the counter says (a
        // migration with --force may have gone over the limit).
        let existing = pairs
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        let limit = tenant.limits().max_stacks;
        if existing >= limit {
            return Err(Error::QuotaExceeded {
                tenant: tenant.id.to_string(),
                resource: Resource::Stacks.as_str().into(),
                limit,
                requested: existing + 1,
                retry_after: None,
            });
        }
        let r = match registry.reserve(&tenant.id, Resource::Stacks, 1).await {
            Ok(r) => r,
            // Concurrent first savers of this same stack may hold the
            // capacity: if one of them has counted it meanwhile, this save
            // is not the stack's first any more (and the save reports any
            // conflict).
            Err(e @ Error::QuotaExceeded { .. }) => {
                return match backend.get(&key).await? {
                    Some(_) => Ok(None),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = backend
            .put(&key, encode(Some(r.id))?, PutMode::Create)
            .await
        {
            let _ = registry.release(&r).await;
            return match e {
                // a concurrent first saver of this stack counted it
                Error::AlreadyExists { .. } => Ok(None),
                e => Err(e),
            };
        }
        if let Err(e) = registry.commit(&r).await {
            let _ = backend.delete(&key, DeleteMode::Any).await;
            let _ = registry.release(&r).await;
            return Err(e);
        }
        Ok(Some((key, r)))
    }

    /// Gives `stack`'s unit back when no environment of it has state any
    /// more (`env` was just deleted); returns whether it did.
    async fn uncount_stack(&self, stack: &str, env: &str) -> Result<bool> {
        let live = self.store.stacks().await?;
        if live.iter().any(|(s, e)| s == stack && e != env) {
            return Ok(false);
        }
        let backend = self.store.backend();
        let key = marker_key(stack)?;
        let unit = |id: Option<Uuid>| Reservation {
            id: id.unwrap_or_else(Uuid::new_v4),
            tenant: self.tenant.id.clone(),
            resource: Resource::Stacks,
            amount: 1,
            created_at: Utc::now(),
        };
        let Some(marker) = backend.get(&key).await? else {
            // never counted through a marker: a stack saved before markers
            // existed (or migrated) was counted then, so its unit goes back too
            self.registry.release(&unit(None)).await?;
            return Ok(true);
        };
        // The unit goes back through the reservation that took it (a
        // committed stack reservation stays listed in the usage record).
        let counted_with = serde_json::from_slice::<Marker>(&marker.bytes)
            .ok()
            .and_then(|m| m.reservation);
        match backend.delete_if_unchanged(&key, marker.version).await {
            Ok(()) => {}
            // a concurrent delete of the last environment gave it back
            Err(e) if e.is_conflict() || e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
        self.registry.release(&unit(counted_with)).await?;
        Ok(true)
    }
}
