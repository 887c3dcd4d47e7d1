//! The state conformance suite on every `ObjectBackend` (memory, local
//! files, S3 via the test server) and on each wrapped in `TenantScoped`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tenancy_core::testkit::state::{conformance, conformance_with, StateSuiteOptions};
use tenancy_core::testkit::SuiteReport;
use tenancy_core::{StateBackend, TenantId};
use tenancy_state::{testing, ObjectBackend, TenantScoped};

fn scoped<B: StateBackend>(inner: B) -> TenantScoped<B> {
    TenantScoped::new(inner, &TenantId::new("acme").unwrap(), "v1").unwrap()
}

fn complete(report: SuiteReport) {
    report.print_skips();
    report.assert_complete();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory() {
    complete(conformance(&ObjectBackend::memory()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_scoped() {
    complete(conformance(&scoped(ObjectBackend::memory())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_with_root_prefix() {
    let b = ObjectBackend::memory()
        .with_prefix(&tenancy_core::StateKey::new("root/p").unwrap())
        .unwrap();
    complete(conformance(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local() {
    let dir = tempfile::tempdir().unwrap();
    complete(conformance(&ObjectBackend::local(dir.path()).unwrap()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_scoped() {
    let dir = tempfile::tempdir().unwrap();
    complete(conformance(&scoped(ObjectBackend::local(dir.path()).unwrap())).await);
}

fn s3_options() -> StateSuiteOptions {
    StateSuiteOptions {
        race_rounds: 10,
        ..StateSuiteOptions::default()
    }
}

/// S3 supports conditional create and update but not conditional delete
/// (object_store has no If-Match delete): exactly that one check is skipped.
fn s3_report(report: SuiteReport) {
    report.print_skips();
    let skipped: Vec<&str> = report.skipped.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(skipped, vec!["conditional_delete"], "{report:?}");
    for check in ["create_race", "update_race", "list", "update"] {
        assert!(
            report.passed.iter().any(|p| p == check),
            "{check} did not run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3() {
    let Some(b) = testing::s3_backend_or_skip("conformance::s3").await else {
        return;
    };
    s3_report(conformance_with(&b, s3_options()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_scoped() {
    let Some(b) = testing::s3_backend_or_skip("conformance::s3_scoped").await else {
        return;
    };
    let b: Arc<dyn StateBackend> = b;
    s3_report(conformance_with(&scoped(b), s3_options()).await);
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
