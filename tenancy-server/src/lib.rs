//! tenancy-server: a multi-tenant HTTP API on the tenancy crates, and the
//! tenant middleware as a reusable tower layer.
//!
//! - [`app`] builds the whole router over an [`AppState`] (registry, the
//!   tenants' stores, caches, metrics), on memory, local files or S3.
//! - [`TenantAuthLayer`] (from [`TenantAuth::layer`]) authenticates tenant
//!   requests (`X-API-Key` or `Authorization: Bearer`, optional
//!   `X-Tenant-ID`) with a SHA-256-keyed verification cache bound to the
//!   tenant's credential generation and status, applies the tenant's rate
//!   limit, and hands handlers an [`AuthenticatedTenant`]. Mount it in any
//!   axum app (see `examples/server_middleware.rs`).
//! - [`server`] has the binary's command line, bootstrap and graceful serve.
//!
//! Only this crate knows HTTP; the domain lives in tenancy-core, -state and -lock.

mod app_state;
mod auth;
mod blocking;
mod error;
mod extract;
mod jobs;
#[cfg(test)]
mod jobs_crashes;
#[cfg(test)]
mod jobs_races;
mod listener;
mod metrics;
mod openapi;
mod ratelimit;
mod reconcile;
mod routes;
pub mod server;
mod ttl;
mod views;
mod watched;

pub use app_state::{
    AppState, AppStateBuilder, ServerConfig, SharedStores, TenantStores, UsageCache,
};
pub use auth::{
    AdminAuth, AdminCaller, AuthConfig, AuthenticatedTenant, TenantAuth, TenantAuthLayer,
    TenantAuthService,
};
pub use blocking::TokioBlocking;
pub use error::{ApiError, ApiResult};
pub use ratelimit::RateInfo;
pub use routes::{app, metrics_app, ROUTES};
