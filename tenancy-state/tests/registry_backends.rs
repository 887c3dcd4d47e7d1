//! The registry suite and the registry's races on tenancy-state's backends:
//! local files and S3 (moto via scripts/test.sh; skipped loudly without it,
//! a failure in CI).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;

use bytes::Bytes;
use tenancy_core::testkit::registry::RegistryFixture;
use tenancy_core::{
    Error, LimitOverrides, ManualClock, NewTenant, PutMode, Resource, Secret, StateBackend,
    StateKey, TenantFilter, TenantId, TenantRegistry, TenantRegistryExt,
};
use tenancy_state::StoreRegistry;
use tenancy_state::{testing, LocalBackend};

fn registry(backend: Arc<dyn StateBackend>) -> (Arc<StoreRegistry>, ManualClock) {
    let clock = ManualClock::starting_now();
    let r = StoreRegistry::new(backend)
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4);
    (Arc::new(r), clock)
}

fn fixture(backend: Arc<dyn StateBackend>) -> RegistryFixture<Arc<StoreRegistry>> {
    let (r, clock) = registry(backend);
    RegistryFixture::new(r, clock)
}

/// 64 reservations from 64 tasks through two registry instances (two
/// replicas) on one store against a limit of 10: exactly 10 succeed.
async fn quota_race(backend: Arc<dyn StateBackend>) {
    let (a, _) = registry(backend.clone());
    let (b, _) = registry(backend);
    a.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let id = TenantId::new("racer").unwrap();
    a.create(NewTenant {
        limits: LimitOverrides {
            max_concurrent_jobs: Some(10),
            ..Default::default()
        },
        ..NewTenant::new(id.clone())
    })
    .await
    .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let r = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { r.reserve(&id, Resource::ConcurrentJobs, 1).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::QuotaExceeded { .. }) => {}
            Err(e) => panic!("reservation failed: {e}"),
        }
    }
    assert_eq!(ok, 10, "exactly 10 of 64 reservations succeed");
    assert_eq!(a.usage(&id).await.unwrap().jobs_active, 10);
}

/// A half-written record names its tenant; the others keep working.
async fn half_written(backend: Arc<dyn StateBackend>) {
    let (r, _) = registry(backend.clone());
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let ok = r
        .create(NewTenant::new(TenantId::new("fine").unwrap()))
        .await
        .unwrap();
    r.create(NewTenant::new(TenantId::new("torn").unwrap()))
        .await
        .unwrap();
    let key = StateKey::new("registry/torn.yaml").unwrap();
    let full = backend.get(&key).await.unwrap().unwrap();
    backend
        .put(
            &key,
            full.bytes.slice(..full.bytes.len() / 3),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    match r.get(&TenantId::new("torn").unwrap()).await {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("torn"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    r.authenticate_key(&ok.secret).await.unwrap();
    let (tenants, errors) = r.list_partial(TenantFilter::default()).await;
    assert_eq!(tenants.len(), 1);
    assert_eq!(errors.len(), 1);
    backend
        .put(&key, Bytes::from_static(b""), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(matches!(
        r.get(&TenantId::new("torn").unwrap()).await,
        Err(Error::Corrupt { .. })
    ));
}

fn local() -> (Arc<dyn StateBackend>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn StateBackend> = Arc::new(LocalBackend::open(dir.path()).unwrap());
    (b, dir)
}

/// The registry suite, one test per check, on local files.
mod local_files {
    use super::*;
    tenancy_core::registry_suite!(strict: async {
        let (b, dir) = local();
        Some(fixture(b).guarded(dir))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files_quota_race() {
    let (b, _dir) = local();
    quota_race(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files_half_written_record() {
    let (b, _dir) = local();
    half_written(b).await;
}

/// The registry suite, one test per check, on S3 (each check under a fresh prefix).
mod s3 {
    use super::*;
    tenancy_core::registry_suite!(strict: async {
        let b = testing::s3_backend_or_skip("registry suite on s3").await?;
        Some(fixture(b))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_quota_race() {
    if let Some(b) = testing::s3_backend_or_skip("s3_quota_race").await {
        quota_race(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_half_written_record() {
    if let Some(b) = testing::s3_backend_or_skip("s3_half_written_record").await {
        half_written(b).await;
    }
}

/// The registry suite, one test per check, on PostgreSQL (each check in a fresh schema).
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    tenancy_core::registry_suite!(strict: async {
        let b = testing::postgres_backend_or_skip("registry suite on postgres").await?;
        Some(fixture(b))
    });
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_quota_race() {
    if let Some(b) = testing::postgres_backend_or_skip("postgres_quota_race").await {
        quota_race(b).await;
    }
}
