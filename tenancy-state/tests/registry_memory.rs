//! Runs the registry conformance suite on core's `MemoryBackend`.

use std::sync::Arc;

use tenancy_core::testkit::registry::conformance_with_clock;
use tenancy_core::{ManualClock, MemoryBackend};
use tenancy_state::StoreRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_registry_passes_the_registry_suite() {
    let clock = ManualClock::starting_now();
    let registry = StoreRegistry::new(Arc::new(MemoryBackend::new()))
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4);
    let report = conformance_with_clock(&registry, &clock).await;
    report.print_skips();
    report.assert_complete();
}
