//! Where a tenant's data lives on a shared store: the one place that formats
//! a tenant's state root and lock prefix.
//!
//! ```text
//! tenants/<id>/                  the tenant's own tree (tenant_root)
//! tenants/<id>/<version>/        its versioned state (state_root), e.g. tenants/acme/v1
//! tenant:<id>:<lock key>         its lock keys (lock_prefix)
//! locks/<lock key>               where a store-backed lock manager keeps them (LOCKS)
//! stacks:<stack>:<env>           the (tenant) lock key of a stack environment
//! ```
//!
//! The registry's own keys (records, key index, usage, archive) live in
//! `tenancy_state::registry`'s layout; scoped state (`TenantScoped`), tenant
//! locks (`TenantLocks`) and [`Tenant`](crate::Tenant) all derive their
//! prefixes from these functions, never from a stored copy.

use crate::error::{Error, Result};
use crate::keys::{LockKey, StateKey, TenantId};

/// The prefix below which every tenant's own tree lives.
pub const TENANTS: &str = "tenants";

/// The prefix below which a store-backed lock manager keeps its lock
/// objects (`tenancy_lock::StoreLockManager`).
pub const LOCKS: &str = "locks";

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

/// The first segment of every stack environment's lock key.
pub const STACK_LOCK_PREFIX: &str = "stacks";

/// `stacks:<stack>:<env>`: the lock key of a stack environment (in the
/// tenant's lock name space), the one the server's stack routes and the
/// CLI take. Stack and environment names that cannot be lock key segments
/// (they contain `:`, `=` or `@`) are refused with a clear message.
pub fn stack_lock_key(stack: &str, env: &str) -> Result<LockKey> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !plain(stack) || !plain(env) {
        return Err(Error::invalid(format!(
            "stack {stack:?} env {env:?} cannot be locked: stack and env names used with locks may contain only A-Z a-z 0-9 . _ -"
        )));
    }
    LockKey::new(format!("{STACK_LOCK_PREFIX}:{stack}:{env}")).map_err(|e| {
        Error::invalid(format!(
            "stack {stack:?} env {env:?} cannot be locked: stack and env names used with locks may contain only A-Z a-z 0-9 . _ - ({e})"
        ))
    })
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
    }
}
