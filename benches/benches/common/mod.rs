//! The shared stores a bench measures beside memory and local files: S3 (the
//! moto server of `scripts/s3-server.sh`) and PostgreSQL
//! (`scripts/postgres-server.sh`), each only when its variables are set, so
//! that one run puts every backend side by side.
//!
//! Open them on the runtime that will drive the bench: their connection
//! pools run tasks on the runtime that made them.

use std::sync::Arc;

use tenancy_core::StateBackend;
use tokio::runtime::Runtime;

/// S3 and PostgreSQL backends, each in a fresh prefix or schema, for those
/// whose test servers are configured (a loud `SKIPPED` line otherwise).
pub(crate) fn shared_stores(
    rt: &Runtime,
    bench: &str,
) -> Vec<(&'static str, Arc<dyn StateBackend>)> {
    let mut out = Vec::new();
    if let Some(b) = rt.block_on(tenancy_state::testing::s3_backend_or_skip(bench)) {
        out.push(("s3", b));
    }
    if let Some(b) = rt.block_on(tenancy_state::testing::postgres_backend_or_skip(bench)) {
        out.push(("postgres", b));
    }
    out
}
