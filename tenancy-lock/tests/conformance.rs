//! The lock conformance suite, one test per check, on every manager and
//! backend, directly and through `TenantLocks`:
//! `cargo test -p tenancy-lock -- renew` runs that check on all of them.

use std::sync::Arc;

use tenancy_core::testkit::lock::LockFixture;
use tenancy_core::{LockManager, ManualClock, MemoryBackend, StateBackend, TenantId};
use tenancy_lock::{MemoryLockManager, StoreLockManager, TenantLocks};
use tenancy_state::testing::s3_backend_or_skip;
use tenancy_state::{LocalBackend, ObjectStoreBackend};

fn store<B: StateBackend>(backend: B, clock: &ManualClock) -> StoreLockManager<B> {
    StoreLockManager::new(backend).with_clock(Arc::new(clock.clone()))
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

/// `globex`'s view of `inner`, on which `acme` already holds a lock: the
/// suite must hold for one tenant while another works on the same manager.
async fn beside_acme<L: LockManager + 'static>(
    inner: Arc<L>,
    clock: ManualClock,
) -> LockFixture<TenantLocks<Arc<L>>> {
    let acme = TenantLocks::new(Arc::clone(&inner), tenant("acme"));
    let key = tenancy_core::LockKey::new("tk-neighbour").expect("key");
    acme.try_acquire(&tenancy_core::LockRequest::new(
        key,
        std::time::Duration::from_secs(3600),
    ))
    .await
    .expect("acme's lock");
    LockFixture::new(TenantLocks::new(inner, tenant("globex")), clock)
}

fn local_backend() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = LocalBackend::open(dir.path()).expect("local backend");
    (dir, backend)
}

async fn s3() -> Option<Arc<dyn StateBackend>> {
    s3_backend_or_skip("tenancy-lock conformance on s3").await
}

mod memory_manager {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let locks = MemoryLockManager::new().with_clock(Arc::new(clock.clone()));
        Some(LockFixture::new(locks, clock))
    });
}

mod memory_manager_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let inner = Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone())));
        Some(beside_acme(inner, clock).await)
    });
}

mod store_manager_on_core_memory_backend {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        Some(LockFixture::new(store(MemoryBackend::new(), &clock), clock))
    });
}

mod store_manager_on_core_memory_backend_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let inner = Arc::new(store(MemoryBackend::new(), &clock));
        Some(beside_acme(inner, clock).await)
    });
}

/// Each manager remembers versions of its own; the suite still holds when
/// calls alternate between two managers on the same store.
mod two_store_managers_sharing_one_backend {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let backend = Arc::new(MemoryBackend::new());
        let a = store(Arc::clone(&backend), &clock);
        let b = store(backend, &clock);
        Some(LockFixture::new(Alternating::new(a, b), clock))
    });
}

/// object_store's `InMemory` through `ObjectStoreBackend`: the ETag mapping
/// the S3 runs use, without a server.
fn object_store_in_memory() -> ObjectStoreBackend {
    ObjectStoreBackend::new(Arc::new(object_store::memory::InMemory::new()), "memory")
}

mod store_manager_on_object_store_in_memory {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        Some(LockFixture::new(
            store(object_store_in_memory(), &clock),
            clock,
        ))
    });
}

mod store_manager_on_object_store_in_memory_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let inner = Arc::new(store(object_store_in_memory(), &clock));
        Some(beside_acme(inner, clock).await)
    });
}

mod store_manager_on_local_files {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let (dir, backend) = local_backend();
        Some(LockFixture::new(store(backend, &clock), clock).guarded(dir))
    });
}

mod store_manager_on_local_files_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let (dir, backend) = local_backend();
        let inner = Arc::new(store(backend, &clock));
        Some(beside_acme(inner, clock).await.guarded(dir))
    });
}

async fn postgres() -> Option<Arc<dyn StateBackend>> {
    tenancy_state::testing::postgres_backend_or_skip("tenancy-lock conformance on postgres").await
}

mod store_manager_on_postgres {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let backend = postgres().await?;
        Some(LockFixture::new(store(backend, &clock), clock))
    });
}

mod store_manager_on_postgres_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let inner = Arc::new(store(postgres().await?, &clock));
        Some(beside_acme(inner, clock).await)
    });
}

mod store_manager_on_s3 {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let backend = s3().await?;
        Some(LockFixture::new(store(backend, &clock), clock))
    });
}

mod store_manager_on_s3_through_tenant_locks {
    use super::*;
    tenancy_core::lock_suite!(async {
        let clock = ManualClock::starting_now();
        let inner = Arc::new(store(s3().await?, &clock));
        Some(beside_acme(inner, clock).await)
    });
}

/// A manager that sends each call to one of two managers in turn.
#[derive(Debug)]
struct Alternating<A, B> {
    a: A,
    b: B,
    n: std::sync::atomic::AtomicUsize,
}

impl<A, B> Alternating<A, B> {
    fn new(a: A, b: B) -> Self {
        Alternating {
            a,
            b,
            n: Default::default(),
        }
    }

    fn pick(&self) -> bool {
        self.n
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(2)
    }
}

#[async_trait::async_trait]
impl<A: LockManager, B: LockManager> LockManager for Alternating<A, B> {
    async fn try_acquire(
        &self,
        req: &tenancy_core::LockRequest,
    ) -> tenancy_core::Result<tenancy_core::LockInfo> {
        if self.pick() {
            self.a.try_acquire(req).await
        } else {
            self.b.try_acquire(req).await
        }
    }
    async fn acquire(
        &self,
        req: &tenancy_core::LockRequest,
        wait: std::time::Duration,
    ) -> tenancy_core::Result<tenancy_core::LockInfo> {
        if self.pick() {
            self.a.acquire(req, wait).await
        } else {
            self.b.acquire(req, wait).await
        }
    }
    async fn renew(
        &self,
        key: &tenancy_core::LockKey,
        id: tenancy_core::LockId,
        ttl: std::time::Duration,
    ) -> tenancy_core::Result<tenancy_core::LockInfo> {
        if self.pick() {
            self.a.renew(key, id, ttl).await
        } else {
            self.b.renew(key, id, ttl).await
        }
    }
    async fn release(
        &self,
        key: &tenancy_core::LockKey,
        id: tenancy_core::LockId,
    ) -> tenancy_core::Result<()> {
        if self.pick() {
            self.a.release(key, id).await
        } else {
            self.b.release(key, id).await
        }
    }
    async fn inspect(
        &self,
        key: &tenancy_core::LockKey,
    ) -> tenancy_core::Result<Option<tenancy_core::LockInfo>> {
        if self.pick() {
            self.a.inspect(key).await
        } else {
            self.b.inspect(key).await
        }
    }
    async fn list(&self, prefix: &str) -> tenancy_core::Result<Vec<tenancy_core::LockInfo>> {
        if self.pick() {
            self.a.list(prefix).await
        } else {
            self.b.list(prefix).await
        }
    }
    async fn force_unlock(
        &self,
        key: &tenancy_core::LockKey,
        id: tenancy_core::LockId,
    ) -> tenancy_core::Result<()> {
        if self.pick() {
            self.a.force_unlock(key, id).await
        } else {
            self.b.force_unlock(key, id).await
        }
    }
}
