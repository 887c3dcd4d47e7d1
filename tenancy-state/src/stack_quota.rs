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
use tenancy_core::{
    DeleteMode, Error, PutMode, Reservation, Resource, Result, StateBackend, StateKey, Tenant,
    TenantRegistry,
};
use uuid::Uuid;

use crate::stack::{Expected, SaveOptions, StackStore, StackVersion, StateDocument};

/// The top-level name of the stack markers in a tenant's scope.
pub const MARKER_PREFIX: &str = "stack-quota";

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

/// True when an environment of `stack` other than `except` has live state.
async fn other_live_env<B: StateBackend>(
    store: &StackStore<B>,
    stack: &str,
    except: &str,
) -> Result<bool> {
    Ok(store
        .stacks()
        .await?
        .iter()
        .any(|(s, e)| s == stack && e != except))
}

/// Saves `doc` at `stack`/`env` like [`StackStore::save_document`],
/// counting a new stack against the tenant's `max_stacks` (see the
/// [module docs](self)).
pub async fn save_counted<B: StateBackend>(
    store: &StackStore<B>,
    registry: &dyn TenantRegistry,
    tenant: &Tenant,
    stack: &str,
    env: &str,
    doc: &StateDocument,
    opts: SaveOptions,
) -> Result<StackVersion> {
    // A save on top of the latest version reads it once here; the save
    // then expects exactly that version (and starts again on top of the
    // latest if it lost a race meanwhile).
    let (maybe_new, pinned) = match opts.expected {
        Expected::Serial(_) => (false, opts),
        Expected::New => (true, opts),
        Expected::Latest => match store.current(stack, env).await? {
            None => (
                true,
                SaveOptions {
                    expected: Expected::New,
                    ..opts
                },
            ),
            Some(cur) => (
                false,
                SaveOptions {
                    expected: Expected::Serial(cur.serial),
                    ..opts
                },
            ),
        },
    };
    let counted = if maybe_new {
        count_stack(store, registry, tenant, stack, env).await?
    } else {
        None
    };
    let saved = match store.save_document(stack, env, doc, pinned).await {
        Err(Error::Precondition { .. }) if opts.expected == Expected::Latest => {
            store.save_document(stack, env, doc, opts).await
        }
        other => other,
    };
    if let (Err(_), Some((marker, r))) = (&saved, counted) {
        // Best effort: a failure here leaves one unit counted for a
        // stack without state (the bound in the module docs).
        if store
            .backend()
            .delete(&marker, DeleteMode::Any)
            .await
            .is_ok()
        {
            let _ = registry.release(&r).await;
        }
    }
    saved
}

/// Counts `stack` if it is not counted yet; returns the marker and the
/// reservation when this call counted it.
async fn count_stack<B: StateBackend>(
    store: &StackStore<B>,
    registry: &dyn TenantRegistry,
    tenant: &Tenant,
    stack: &str,
    env: &str,
) -> Result<Option<(StateKey, Reservation)>> {
    let backend = store.backend();
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
    let pairs = store.stacks().await?;
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
        // Concurrent first savers of this same stack may hold the capacity:
        // if one of them has counted it meanwhile, this save is not the
        // stack's first any more (and the save reports any conflict).
        Err(e @ Error::QuotaExceeded { .. }) => {
            return match backend.get(&key).await? {
                Some(_) => Ok(None),
                None => Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    match backend
        .put(&key, encode(Some(r.id))?, PutMode::Create)
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let _ = registry.release(&r).await;
            return match e {
                // a concurrent first saver of this stack counted it
                Error::AlreadyExists { .. } => Ok(None),
                e => Err(e),
            };
        }
    }
    if let Err(e) = registry.commit(&r).await {
        let _ = backend.delete(&key, DeleteMode::Any).await;
        let _ = registry.release(&r).await;
        return Err(e);
    }
    Ok(Some((key, r)))
}

/// Deletes `stack`/`env` like [`StackStore::delete`] and, when no
/// environment of the stack has state any more, gives its `max_stacks`
/// unit back (see the [module docs](self)). Returns the tombstone's
/// version and whether the stack's unit was given back.
pub async fn delete_counted<B: StateBackend>(
    store: &StackStore<B>,
    registry: &dyn TenantRegistry,
    tenant: &Tenant,
    stack: &str,
    env: &str,
    opts: SaveOptions,
) -> Result<(StackVersion, bool)> {
    let gone = store.delete(stack, env, opts).await?;
    if other_live_env(store, stack, env).await? {
        return Ok((gone, false));
    }
    let backend = store.backend();
    let key = marker_key(stack)?;
    let unit = |id: Option<Uuid>| Reservation {
        id: id.unwrap_or_else(Uuid::new_v4),
        tenant: tenant.id.clone(),
        resource: Resource::Stacks,
        amount: 1,
        created_at: Utc::now(),
    };
    let Some(marker) = backend.get(&key).await? else {
        // never counted through a marker: a stack saved before markers
        // existed (or migrated) was counted then, so its unit goes back too
        registry.release(&unit(None)).await?;
        return Ok((gone, true));
    };
    // The unit goes back through the reservation that took it (a committed
    // stack reservation stays listed in the usage record).
    let counted_with = serde_json::from_slice::<Marker>(&marker.bytes)
        .ok()
        .and_then(|m| m.reservation);
    let mode = if backend.capabilities().conditional_delete {
        DeleteMode::IfVersion(marker.version)
    } else {
        DeleteMode::Any
    };
    match backend.delete(&key, mode).await {
        Ok(()) => {}
        // a concurrent delete of the last environment gave it back
        Err(e) if e.is_conflict() || e.is_not_found() => return Ok((gone, false)),
        Err(e) => return Err(e),
    }
    registry.release(&unit(counted_with)).await?;
    Ok((gone, true))
}
