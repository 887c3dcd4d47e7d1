//! The state conformance suite, one test per check, on every backend
//! (memory, local files, object_store on `InMemory`, S3 via the test
//! server), and through `TenantScoped` and `Prefixed`: `cargo test -p tenancy-state -- create_race` runs that
//! check on all of them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tenancy_core::testkit::state::StateSuiteOptions;
use tenancy_core::MemoryBackend;
use tenancy_core::{StateBackend, TenantId};
use tenancy_state::{testing, LocalBackend, ObjectStoreBackend, Prefixed, TenantScoped};

fn scoped<B: StateBackend>(inner: B) -> TenantScoped<B> {
    TenantScoped::new(inner, &TenantId::new("acme").unwrap(), "v1").unwrap()
}

fn local() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    (dir, b)
}

/// S3 under a fresh prefix, or a loud skip (a failure in CI).
async fn s3() -> Option<Arc<dyn StateBackend>> {
    testing::s3_backend_or_skip("conformance::s3").await
}

/// Fewer race rounds on S3: each round is 16 requests to the test server.
fn s3_options() -> StateSuiteOptions {
    StateSuiteOptions {
        race_rounds: 10,
        ..StateSuiteOptions::default()
    }
}

mod memory {
    use super::*;
    tenancy_core::state_suite!(strict: async { Some(MemoryBackend::new()) });
}

mod memory_scoped {
    use super::*;
    tenancy_core::state_suite!(strict: async { Some(scoped(MemoryBackend::new())) });
}

mod memory_prefixed {
    use super::*;
    tenancy_core::state_suite!(strict: async {
        let root = tenancy_core::StateKey::new("root/p").unwrap();
        Some(Prefixed::new(MemoryBackend::new(), root))
    });
}

/// The object_store mapping (ETags, error kinds, listings) on object_store's
/// `InMemory`, with no server: like S3, no conditional delete.
mod object_store_in_memory {
    use super::*;
    tenancy_core::state_suite!(async {
        let store = Arc::new(object_store::memory::InMemory::new());
        Some(ObjectStoreBackend::new(store, "memory"))
    });
}

mod local_files {
    use super::*;
    tenancy_core::state_suite!(strict: async { Some(local()) });
}

mod local_files_scoped {
    use super::*;
    tenancy_core::state_suite!(strict: async {
        let (dir, b) = local();
        Some((dir, scoped(b)))
    });
}

/// S3 supports conditional create and update but not conditional delete
/// (object_store has no If-Match delete): that one check reports a skip.
mod s3 {
    use super::*;
    tenancy_core::state_suite!(s3(), s3_options());
}

mod s3_scoped {
    use super::*;
    tenancy_core::state_suite!(async { s3().await.map(scoped) }, s3_options());
}

#[tokio::test]
async fn s3_reports_exactly_conditional_delete_missing() {
    let Some(b) = s3().await else { return };
    let caps = b.capabilities();
    assert!(caps.conditional_create && caps.conditional_update && caps.list);
    assert!(!caps.conditional_delete);
    assert!(matches!(
        tenancy_core::testkit::state::conditional_delete(b.as_ref(), s3_options()).await,
        tenancy_core::testkit::Outcome::Skipped(_)
    ));
}

#[tokio::test]
async fn open_s3_url_probes_and_works() {
    // only runs when the test server is there (s3_backend_or_skip decides)
    if testing::s3_backend_or_skip("conformance::open_s3_url_probes_and_works")
        .await
        .is_none()
    {
        return;
    }
    let bucket = std::env::var("AWS_BUCKET").unwrap();
    let url = format!(
        "s3://{bucket}/open-{}/nested",
        uuid::Uuid::new_v4().simple()
    );
    let b = tenancy_state::open(&url).await.unwrap();
    assert_eq!(b.name(), "s3");
    let k = tenancy_core::StateKey::new("x/y").unwrap();
    b.put(&k, "1".into(), tenancy_core::PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        tenancy_core::StateBackendExt::list_keys(&b, None)
            .await
            .unwrap(),
        vec![k],
        "the probe object is not listed and the prefix is stripped"
    );
}

/// PostgreSQL in a fresh schema, or a loud skip (a failure in CI).
#[cfg(feature = "postgres")]
async fn postgres() -> Option<Arc<dyn StateBackend>> {
    testing::postgres_backend_or_skip("conformance::postgres").await
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    tenancy_core::state_suite!(strict: postgres());
}

#[cfg(feature = "postgres")]
mod postgres_scoped {
    use super::*;
    tenancy_core::state_suite!(strict: async { postgres().await.map(scoped) });
}
