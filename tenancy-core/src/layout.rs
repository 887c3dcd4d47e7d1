//! Where a tenant's data lives on a shared store: the one place that formats
//! a tenant's state root and lock prefix.
//!
//! ```text
//! tenants/<id>/                  the tenant's own tree (tenant_root)
//! tenants/<id>/<version>/        its versioned state (state_root), e.g. tenants/acme/v1
//! tenant:<id>:<lock key>         its lock keys (lock_prefix)
//! locks/<lock key>               where a store-backed lock manager keeps them (LOCKS)
//! locks-held/<id>.json           the locks the tenant holds through the server,
//!                                counted against max_locks (LOCKS_HELD, locks_held)
//! ```
//!
//! The registry's own keys (records, key index, usage, archive) live in
//! `tenancy_state::registry`'s layout; scoped state (`TenantScoped`), tenant
//! locks (`TenantLocks`) and [`Tenant`](crate::Tenant) all derive their
//! prefixes from these functions, never from a stored copy.

use crate::error::Result;
use crate::keys::{StateKey, TenantId};

/// The prefix below which every tenant's own tree lives.
pub const TENANTS: &str = "tenants";

/// The prefix below which a store-backed lock manager keeps its lock
/// objects (`tenancy_lock::StoreLockManager`).
pub const LOCKS: &str = "locks";

/// The prefix of the per-tenant records of locks held, counted against
/// `max_locks` by `tenancy_lock::LimitedLocks`. Outside `tenants/<id>/`, so
/// a tenant that can write its own tree cannot change its count.
pub const LOCKS_HELD: &str = "locks-held";

/// `locks-held/<id>.json`: the record of the locks `id` holds through the
/// server (see `tenancy_lock::LimitedLocks`).
pub fn locks_held(id: &TenantId) -> Result<StateKey> {
    StateKey::new(format!("{LOCKS_HELD}/{id}.json"))
}

/// `tenants/<id>`: the tenant's own tree (config, versioned state).
pub fn tenant_root(id: &TenantId) -> Result<StateKey> {
    StateKey::new(format!("{TENANTS}/{id}"))
}

/// `tenants/<id>/<version>`: the root of the tenant's versioned state;
/// `version` must be one key segment (e.g. `v1`).
pub fn state_root(id: &TenantId, version: &str) -> Result<StateKey> {
    tenant_root(id)?.join(&StateKey::segment(version)?)
}

/// `tenant:<id>`: the prefix of the tenant's lock keys (joined with `:`).
pub fn lock_prefix(id: &TenantId) -> String {
    format!("tenant:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_prefixes() {
        let id = TenantId::new("acme").unwrap();
        assert_eq!(tenant_root(&id).unwrap().as_str(), "tenants/acme");
        assert_eq!(state_root(&id, "v1").unwrap().as_str(), "tenants/acme/v1");
        assert!(state_root(&id, "v1/x").is_err(), "a version is one segment");
        assert!(state_root(&id, "..").is_err());
        assert_eq!(lock_prefix(&id), "tenant:acme");
        assert_eq!(locks_held(&id).unwrap().as_str(), "locks-held/acme.json");
    }
}
