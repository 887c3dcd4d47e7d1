//! The registry conformance suite, one test per check, on core's `MemoryBackend`.

use std::sync::Arc;

use tenancy_core::testkit::registry::RegistryFixture;
use tenancy_core::{ManualClock, MemoryBackend};
use tenancy_state::StoreRegistry;

tenancy_core::registry_suite!(strict: async {
    let clock = ManualClock::starting_now();
    let registry = StoreRegistry::new(Arc::new(MemoryBackend::new()))
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4);
    Some(RegistryFixture::new(registry, clock))
});
