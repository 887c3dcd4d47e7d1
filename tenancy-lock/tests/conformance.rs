//! The lock conformance suite on every manager and backend, directly and
//! through `TenantLocks`.

use std::sync::Arc;

use tenancy_core::testkit::lock::conformance;
use tenancy_core::{LockManager, ManualClock, MemoryBackend, StateBackend, TenantId};
use tenancy_lock::{MemoryLockManager, StoreLockManager, TenantLocks};
use tenancy_state::testing::s3_backend_or_skip;
use tenancy_state::ObjectBackend;

async fn run(locks: &dyn LockManager, clock: &ManualClock) {
    let report = conformance(locks, clock).await;
    report.print_skips();
    report.assert_complete();
}

fn store<B: StateBackend>(backend: B, clock: &ManualClock) -> StoreLockManager<B> {
    StoreLockManager::new(backend).with_clock(Arc::new(clock.clone()))
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

#[tokio::test]
async fn memory_manager() {
    let clock = ManualClock::starting_now();
    run(
        &MemoryLockManager::new().with_clock(Arc::new(clock.clone())),
        &clock,
    )
    .await;
}

#[tokio::test]
async fn memory_manager_through_tenant_locks() {
    let clock = ManualClock::starting_now();
    let inner = Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone())));
    run(
        &TenantLocks::new(Arc::clone(&inner), tenant("acme")),
        &clock,
    )
    .await;
    run(&TenantLocks::new(inner, tenant("globex")), &clock).await;
}

#[tokio::test]
async fn store_manager_on_core_memory_backend() {
    let clock = ManualClock::starting_now();
    run(&store(MemoryBackend::new(), &clock), &clock).await;
}

#[tokio::test]
async fn store_manager_on_core_memory_backend_through_tenant_locks() {
    let clock = ManualClock::starting_now();
    let inner = Arc::new(store(MemoryBackend::new(), &clock));
    run(
        &TenantLocks::new(Arc::clone(&inner), tenant("acme")),
        &clock,
    )
    .await;
    run(&TenantLocks::new(inner, tenant("globex")), &clock).await;
}

#[tokio::test]
async fn two_store_managers_sharing_one_backend() {
    // Each manager remembers versions of its own; the suite still holds
    // when calls alternate between two managers on the same store.
    let clock = ManualClock::starting_now();
    let backend = Arc::new(MemoryBackend::new());
    let a = store(Arc::clone(&backend), &clock);
    let b = store(backend, &clock);
    run(&Alternating::new(a, b), &clock).await;
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

#[tokio::test]
async fn store_manager_on_object_memory_backend() {
    let clock = ManualClock::starting_now();
    run(&store(ObjectBackend::memory(), &clock), &clock).await;
    let inner = Arc::new(store(ObjectBackend::memory(), &clock));
    run(&TenantLocks::new(inner, tenant("acme")), &clock).await;
}

#[tokio::test]
async fn store_manager_on_local_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let backend = ObjectBackend::local(dir.path()).expect("local backend");
    run(&store(backend.clone(), &clock), &clock).await;
    let inner = Arc::new(store(backend, &clock));
    run(
        &TenantLocks::new(Arc::clone(&inner), tenant("acme")),
        &clock,
    )
    .await;
    run(&TenantLocks::new(inner, tenant("globex")), &clock).await;
}

#[tokio::test]
async fn store_manager_on_s3() {
    let Some(backend) = s3_backend_or_skip("tenancy-lock conformance on s3").await else {
        return;
    };
    let clock = ManualClock::starting_now();
    run(&store(Arc::clone(&backend), &clock), &clock).await;
    let inner = Arc::new(store(backend, &clock));
    run(&TenantLocks::new(inner, tenant("acme")), &clock).await;
}
