//! Conformance suites that every implementation of the three traits runs
//! (cargo feature `testkit`).
//!
//! Suites panic on the first violated expectation, like `assert!`, with a
//! message naming the check. Checks that a backend's [`Capabilities`] rule
//! out are not passed silently: they are listed in [`SuiteReport::skipped`]
//! with the reason, and callers print them (see [`SuiteReport::print_skips`]).
//!
//! [`Capabilities`]: crate::state::Capabilities

pub mod lock;
pub mod registry;
pub mod state;

/// What a suite ran and what it skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SuiteReport {
    /// The suite's name.
    pub suite: String,
    /// Checks that ran and passed.
    pub passed: Vec<String>,
    /// Checks skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl SuiteReport {
    pub(crate) fn new(suite: &str) -> Self {
        SuiteReport {
            suite: suite.into(),
            ..Default::default()
        }
    }

    pub(crate) fn pass(&mut self, check: &str) {
        self.passed.push(check.into());
    }

    pub(crate) fn skip(&mut self, check: &str, why: &str) {
        self.skipped.push((check.into(), why.into()));
    }

    /// Prints skipped checks to stderr, loudly; test code calls this.
    pub fn print_skips(&self) {
        for (check, why) in &self.skipped {
            eprintln!("SKIPPED {}::{check}: {why}", self.suite);
        }
    }

    /// Panics if any check was skipped (for backends that claim full support).
    pub fn assert_complete(&self) {
        assert!(
            self.skipped.is_empty(),
            "{}: skipped checks: {:?}",
            self.suite,
            self.skipped
        );
    }
}

/// A fresh, unique key prefix for one suite run (`tk-<uuid>`), so runs on a
/// shared bucket never see each other's objects.
pub fn unique_prefix() -> crate::keys::StateKey {
    crate::keys::StateKey::new(format!("tk-{}", uuid::Uuid::new_v4().simple()))
        .expect("a uuid prefix is a valid key")
}
