//! tenancy-lock: leased locks with fencing tokens, in memory and on any
//! `StateBackend`'s compare-and-swap, plus the tenant-namespacing wrapper
//! and a heartbeat guard for long operations.
//!
//! - [`MemoryLockManager`]: in-process locks.
//! - [`StoreLockManager`]: one object per lock at `locks/<key>` on any
//!   [`StateBackend`](tenancy_core::StateBackend) with compare-and-swap
//!   (memory, local files, S3), shared safely by many processes.
//! - [`TenantLocks`]: wraps any manager so a tenant only sees and touches
//!   keys under `tenant:<id>:`.
//! - [`LimitedLocks`]: wraps any manager so a tenant holds at most its
//!   limit of locks at once, counted atomically and crash-safely on a store.
//! - [`HeartbeatGuard`]: renews a lease every ttl/3 and reports its loss.
//! - [`Backoff`]: the retry schedule of `acquire(req, wait)`.
//! - [`holder_fence`]: whether a write under a lock id may go on, and the
//!   fencing token it records.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenancy_core::Result<()> {
//! use std::time::Duration;
//! use tenancy_core::{LockKey, LockManager, LockRequest, MemoryBackend};
//! use tenancy_lock::StoreLockManager;
//!
//! let locks = StoreLockManager::new(MemoryBackend::new());
//! let key = LockKey::stack_env("web", "prod")?;
//! let lease = locks
//!     .try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(60)).operation("apply"))
//!     .await?;
//! assert!(locks.try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(60))).await.is_err());
//! locks.release(&key, lease.lock_id).await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod fence;
mod heartbeat;
mod lease;
mod limit;
mod memory;
mod store;
mod tenant;

pub use backoff::acquire_with_backoff;
pub use fence::holder_fence;
pub use heartbeat::{HeartbeatGuard, HeartbeatState};
pub use limit::{HeldEntry, HeldRecord, LimitedLocks, DUPLICATE_SLACK, HELD_RECORD_FORMAT};
pub use memory::MemoryLockManager;
pub use store::{Freed, LockRecord, StoreLockManager, LOCKS_PREFIX, LOCK_RECORD_FORMAT};
/// The retry schedule of `acquire(req, wait)` (core's, re-exported for compatibility).
pub use tenancy_core::Backoff;
pub use tenant::TenantLocks;
