//! tenancy-server: a multi-tenant HTTP API on the tenancy crates, the
//! tenant middleware as a reusable tower layer, and (feature `client`) the
//! HTTP client of that API.
//!
//! With the default feature `server`:
//!
//! - [`app`] builds the whole router over an [`AppState`] (registry, the
//!   tenants' stores, caches, metrics), on memory, local files or S3.
//! - [`TenantAuthLayer`] (from [`TenantAuth::layer`]) authenticates tenant
//!   requests (`X-API-Key`, `Authorization: Bearer` or Basic, optional
//!   `X-Tenant-ID`; a tenant secret or a session token) with a
//!   SHA-256-keyed verification cache bound to the tenant's credential
//!   generation and status, applies the tenant's rate limit, and hands
//!   handlers an [`AuthenticatedTenant`]. Mount it in any axum app (see
//!   `examples/server_middleware.rs`).
//! - [`server`] has the binary's command line, bootstrap and graceful serve.
//!
//! With feature `client` (which builds without `server`: no axum, no hyper
//! server), [`client`] implements core's `LockManager` and
//! `TenantRegistry` over the API, with typed clients for sessions and the
//! tenant routes. [`views`], the JSON shapes of the API, are compiled in
//! both, so the server and its client share one definition.
//!
//! Only this crate knows HTTP; the domain lives in tenancy-core, -state and -lock.

#[cfg(feature = "server")]
mod app_state;
#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
mod blocking;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
mod extract;
#[cfg(feature = "server")]
mod jobs;
#[cfg(all(test, feature = "server"))]
mod jobs_crashes;
#[cfg(all(test, feature = "server"))]
mod jobs_races;
#[cfg(feature = "server")]
mod listener;
#[cfg(feature = "server")]
mod metrics;
#[cfg(feature = "server")]
mod openapi;
#[cfg(feature = "server")]
mod ratelimit;
#[cfg(feature = "server")]
mod reconcile;
#[cfg(feature = "server")]
mod routes;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod ttl;
pub mod views;
#[cfg(feature = "server")]
mod watched;

#[cfg(feature = "server")]
pub use app_state::{
    AppState, AppStateBuilder, ServerConfig, SharedStores, TenantStores, UsageCache,
};
#[cfg(feature = "server")]
pub use auth::{
    AdminAuth, AdminCaller, AuthConfig, AuthenticatedTenant, TenantAuth, TenantAuthLayer,
    TenantAuthService,
};
#[cfg(feature = "server")]
pub use blocking::TokioBlocking;
#[cfg(feature = "server")]
pub use error::{ApiError, ApiResult};
#[cfg(feature = "server")]
pub use ratelimit::RateInfo;
#[cfg(feature = "server")]
pub use routes::{app, metrics_app, ROUTES};

#[cfg(feature = "client")]
pub mod client;
