//! Conformance suites that every implementation of the three traits runs
//! (cargo feature `testkit`), and a fault-injection wrapper for tests.
//!
//! Each suite is a module of public async functions, **one per check**
//! ([`state`], [`lock`], [`registry`]); every check builds its own fixture
//! data (fresh keys, ids and prefixes), so checks run in any order and in
//! parallel. A macro turns a suite into one `#[tokio::test]` per check for
//! a given fixture constructor, like OpenDAL's behaviour tests, so
//! `cargo test -- create_race` runs one check and one failure hides no
//! other:
//!
//! ```
//! // tests/conformance.rs of a crate with its own backend (dev-dependencies:
//! // tenancy-core with feature "testkit", and tokio); MemoryBackend stands in
//! // for yours. This makes `my_backend::round_trip`, `my_backend::create_race`...
//! mod my_backend {
//!     // a fresh, empty backend per check; `None` skips (e.g. no server)
//!     tenancy_core::state_suite!(strict: async { Some(tenancy_core::MemoryBackend::new()) });
//! }
//! # fn main() {}
//! ```
//!
//! A check panics on the first violated expectation, like `assert!`, with a
//! message naming it. A check that a backend's [`Capabilities`] rule out is
//! not passed silently: it returns [`Outcome::Skipped`] with the reason,
//! which the generated test prints as a `SKIPPED` line (or fails on, with
//! `strict:`, for implementations that claim full support).
//!
//! [`HookBackend`] wraps any backend with a capability override, a hook
//! that runs before each operation (to fail it or to interleave another
//! writer at a chosen moment) and a delay, instead of hand-written doubles.
//!
//! [`Capabilities`]: crate::state::Capabilities

mod hook;
pub mod lock;
pub mod registry;
pub mod state;

pub use hook::{HookBackend, HookFn, Op};

/// How one check ended (a violated expectation panics instead).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// The check ran and held.
    Passed,
    /// The check did not apply; the reason says why (e.g. a capability the
    /// backend reports it lacks).
    Skipped(String),
}

impl Outcome {
    /// A skip with its reason.
    pub fn skipped(why: impl Into<String>) -> Self {
        Outcome::Skipped(why.into())
    }
}

/// Reports a check's outcome from a generated test: a skip is written to
/// stderr as `SKIPPED <check>: <why>`, or panics when `strict`.
#[doc(hidden)]
pub fn finish(check: &str, outcome: Outcome, strict: bool) {
    if let Outcome::Skipped(why) = outcome {
        assert!(
            !strict,
            "{check} was skipped ({why}), but this implementation claims full support"
        );
        // Straight to stderr: the harness captures print output of passing tests.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {check}: {why}");
    }
}

/// A fresh, unique key prefix for one check (`tk-<uuid>`), so checks on a
/// shared bucket never see each other's objects.
pub fn unique_prefix() -> crate::keys::StateKey {
    crate::keys::StateKey::new(format!("tk-{}", uuid::Uuid::new_v4().simple()))
        .expect("a uuid prefix is a valid key")
}

/// One `#[tokio::test]` per listed check of a suite module.
#[doc(hidden)]
#[macro_export]
macro_rules! __testkit_tests {
    ($suite:ident, $strict:expr, $fixture:ident => $args:tt, $make:expr, [$($check:ident),* $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some($fixture) = ($make).await else {
                    return;
                };
                let outcome = $crate::testkit::$suite::$check $args.await;
                $crate::testkit::finish(
                    concat!(module_path!(), "::", stringify!($check)),
                    outcome,
                    $strict,
                );
            }
        )*
    };
}
