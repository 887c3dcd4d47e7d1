//! The open routes: health, readiness and the OpenAPI document, and the
//! metrics route that only the separate metrics listener serves.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tenancy_core::{TenantFilter, TenantStatus};

use crate::app_state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::views::Health;

/// Counts the tenants (all, and active ones) into the metrics.
async fn count_tenants(state: &AppState) {
    let now = state.clock().now();
    let mut total = 0u64;
    let mut active = 0u64;
    let mut stream = state.registry().list(TenantFilter::default());
    while let Some(item) = stream.next().await {
        match item {
            Ok(t) => {
                total += 1;
                if t.effective_status(now) == TenantStatus::Active {
                    active += 1;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count tenants for /metrics");
                return;
            }
        }
    }
    state.metrics().set_tenant_counts(total, active);
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "open", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The backend is reachable and the registry bootstrapped.
#[utoipa::path(get, path = "/readyz", tag = "open",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Health>> {
    match state.registry().is_bootstrapped().await {
        Ok(true) => Ok(axum::Json(Health {
            status: "ok".into(),
        })),
        Ok(false) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the registry is not bootstrapped",
        )),
        Err(e) => Err(ApiError::from(e).with_message("the storage backend is not reachable")),
    }
}

/// Prometheus metrics (text exposition format), on the metrics listener.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if state.metrics().tenant_counts_stale() {
        if state.metrics().has_tenant_counts() {
            // Re-count in the background (a listing of 100k tenants takes
            // seconds); this scrape shows the previous counts.
            if state.metrics().begin_tenant_count() {
                let state = state.clone();
                tokio::spawn(async move {
                    count_tenants(&state).await;
                    state.metrics().end_tenant_count();
                });
            }
        } else {
            count_tenants(&state).await;
        }
    }
    let body = state
        .metrics()
        .render(state.auth().stats(), state.auth().cached_keys());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "open",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| crate::openapi::document().to_string());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response()
}
