//! Runs the state conformance suite against core's `MemoryBackend`.

use tenancy_core::testkit::state::conformance;
use tenancy_core::MemoryBackend;

#[tokio::test]
async fn memory_backend_passes_the_state_suite() {
    let b = MemoryBackend::new();
    let report = conformance(&b).await;
    report.print_skips();
    report.assert_complete();
    assert!(report.passed.len() >= 10, "{:?}", report.passed);
}
