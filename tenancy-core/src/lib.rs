//! tenancy-core: the domain types, the three traits (`StateBackend`,
//! `LockManager`, `TenantRegistry`), the one `Error`, credentials, sessions,
//! the pure rules (plans, limits, lifecycle, quota windows, tenant layout),
//! the compare-and-swap retry primitive and its backoff, and the
//! conformance testkit of the tenancy toolkit.
//!
//! This crate does no I/O of its own: storage is always reached through a
//! [`StateBackend`] that the caller supplies (see `tenancy-state` for the
//! backends and the registry stored on them). [`memory::MemoryBackend`] is a
//! pure in-process backend for tests and embedding.
//!
//! ```
//! use tenancy_core::{StateKey, TenantId};
//! assert!(StateKey::new("stacks/web/prod/state.json").is_ok());
//! assert!(StateKey::new("../etc/passwd").is_err());
//! assert!(TenantId::new("acme").is_ok());
//! ```

pub mod apikey;
pub mod audit;
pub mod backoff;
pub mod clock;
pub mod credentials;
pub mod error;
pub mod keys;
pub mod layout;
pub mod lock;
pub mod memory;
pub mod quota;
pub mod registry;
pub mod session;
pub mod state;
pub mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use apikey::{ApiKey, Caller, CreatedApiKey, KeyId, KeyStatus, NewApiKey, Role, RotatedApiKey};
pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use credentials::Secret;
pub use error::{Error, ErrorKind, Result};
pub use keys::{LockKey, StateKey, TenantId};
pub use lock::{LockId, LockInfo, LockManager, LockManagerExt, LockRequest};
pub use memory::MemoryBackend;
pub use registry::{
    Account, CreatedTenant, ListedReservation, NewTenant, Reservation, TenantFilter,
    TenantRegistry, TenantRegistryExt, TenantUpdate, UsageEvent,
};
pub use session::{
    AuthenticatedSession, IssuedSession, ServerSession, Session, SessionId, SessionKind,
    SessionOwner,
};
pub use state::{
    Capabilities, DeleteMode, ListEntry, Object, PutMode, Retry, StateBackend, StateBackendExt,
    Step, Updated, Version, GET_MANY_CONCURRENCY,
};
pub use tenant::{
    CredentialInfo, LimitOverrides, Limits, Plan, Resource, StorageInfo, Tenant, TenantStatus,
    Usage,
};

/// The version of tenancy, recorded in locks and manifests.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
