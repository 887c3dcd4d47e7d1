//! Runnable examples of embedding tenancy; see the `[[example]]` targets.
