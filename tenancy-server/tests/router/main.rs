//! Router tests through `oneshot`, one module per section: open routes,
//! the admin API, tenant auth and its cache, state with ETags, locks, jobs
//! and workers with quotas, and limits and metrics (rate limits, bodies,
//! timeouts, the OpenAPI document).
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod audit;
mod auth;
mod jobs;
mod keys;
mod limits;
mod locks;
mod open;
mod sessions;
mod stacks;
mod state;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{harness, harness_on, harness_with, ADMIN};
use serde_json::{json, Value};
use tenancy_core::{Clock, MemoryBackend, StateBackend, StateKey};
use tenancy_server::{AuthConfig, ServerConfig};
