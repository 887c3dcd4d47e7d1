//! Runs the state conformance suite against core's `MemoryBackend`, one
//! test per check (`cargo test -p tenancy-core -- create_race`).

use tenancy_core::MemoryBackend;

tenancy_core::state_suite!(strict: async { Some(MemoryBackend::new()) });
