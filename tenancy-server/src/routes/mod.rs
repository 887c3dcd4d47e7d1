//! The router: admin, tenant and open routes, and the layers around them.

pub(crate) mod admin;
pub(crate) mod admin_locks;
pub(crate) mod audit;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod open;
pub(crate) mod sessions;
pub(crate) mod stacks;
pub(crate) mod state_quota;
pub(crate) mod tenant;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app_state::AppState;
use crate::auth::{AuthenticatedTenant, TenantLabel};
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::metrics::Metrics;
use tenancy_core::Role;

/// Every route of the server as `(method, path)`, in axum's path syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants"),
    ("GET", "/v1/tenants/{id}"),
    ("PATCH", "/v1/tenants/{id}"),
    ("DELETE", "/v1/tenants/{id}"),
    ("POST", "/v1/tenants/{id}/suspend"),
    ("POST", "/v1/tenants/{id}/activate"),
    ("POST", "/v1/tenants/{id}/rotate"),
    ("GET", "/v1/tenants/{id}/stats"),
    ("GET", "/v1/admin/credential"),
    ("PUT", "/v1/admin/credential"),
    ("POST", "/v1/tenants/{id}/purge"),
    ("POST", "/v1/tenants/{id}/reservations"),
    ("GET", "/v1/tenants/{id}/reservations"),
    ("POST", "/v1/tenants/{id}/reservations/{reservation}/commit"),
    (
        "POST",
        "/v1/tenants/{id}/reservations/{reservation}/release",
    ),
    ("POST", "/v1/tenants/{id}/usage"),
    ("GET", "/v1/tenants/{id}/jobs"),
    ("GET", "/v1/tenants/{id}/workers"),
    ("POST", "/v1/admin/sessions"),
    ("GET", "/v1/admin/sessions"),
    ("GET", "/v1/admin/sessions/current"),
    ("DELETE", "/v1/admin/sessions/current"),
    ("DELETE", "/v1/admin/sessions/{id}"),
    ("GET", "/v1/tenants/{id}/sessions"),
    ("DELETE", "/v1/tenants/{id}/sessions/{session}"),
    ("DELETE", "/v1/tenants/{id}/stacks/{stack}/{env}/lock"),
    ("GET", "/v1/tenants/{id}/locks"),
    ("DELETE", "/v1/tenants/{id}/locks/{key}"),
    ("GET", "/v1/tenants/{id}/keys"),
    ("POST", "/v1/tenants/{id}/keys"),
    ("DELETE", "/v1/tenants/{id}/keys/{key_id}"),
    ("POST", "/v1/tenants/{id}/keys/{key_id}/rotate"),
    ("GET", "/v1/tenant"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/{id}"),
    ("GET", "/v1/state"),
    ("GET", "/v1/state/{*key}"),
    ("PUT", "/v1/state/{*key}"),
    ("DELETE", "/v1/state/{*key}"),
    ("GET", "/v1/locks/{key}"),
    ("POST", "/v1/locks/{key}"),
    ("PUT", "/v1/locks/{key}"),
    ("DELETE", "/v1/locks/{key}"),
    ("GET", "/v1/locks"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("POST", "/v1/jobs/{id}/complete"),
    ("POST", "/v1/jobs/{id}/fail"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("POST", "/v1/workers"),
    ("GET", "/v1/workers"),
    ("DELETE", "/v1/workers/{id}"),
    ("POST", "/v1/workers/{id}/claim"),
    ("GET", "/v1/stacks"),
    ("GET", "/v1/stacks/{stack}/{env}/state"),
    ("POST", "/v1/stacks/{stack}/{env}/state"),
    ("DELETE", "/v1/stacks/{stack}/{env}/state"),
    ("LOCK", "/v1/stacks/{stack}/{env}/lock"),
    ("UNLOCK", "/v1/stacks/{stack}/{env}/lock"),
    ("POST", "/v1/stacks/{stack}/{env}/lock"),
    ("DELETE", "/v1/stacks/{stack}/{env}/lock"),
    ("GET", "/v1/stacks/{stack}/{env}/history"),
    ("GET", "/v1/stacks/{stack}/{env}/history/{serial}"),
    ("POST", "/v1/stacks/{stack}/{env}/rollback"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys/current"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/keys/{key_id}/rotate"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/head"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/tenant/audit"),
];

/// The role a tenant route needs (`AuthenticatedTenant::role`): reads are
/// `viewer`'s; writes, locks, jobs and workers `operator`'s; the tenant's
/// keys, its audit trail and revoking another of its sessions `owner`'s. Logging in and
/// out, and reading one's own session and key, are anyone's (a key's session has
/// the key's role). The role guard applies it to every tenant route, so
/// no handler can forget it; a request beyond its role gets 403 naming
/// the role it needs, before the handler reads the body.
pub(crate) fn required_role(method: &str, route: &str) -> Role {
    match (method, route) {
        ("GET", "/v1/keys/current") => Role::Viewer,
        ("GET", "/v1/tenant/audit") => Role::Owner,
        (_, r) if r == "/v1/keys" || r.starts_with("/v1/keys/") => Role::Owner,
        ("GET", "/v1/sessions") | ("DELETE", "/v1/sessions/{id}") => Role::Owner,
        ("POST", "/v1/sessions") | (_, "/v1/sessions/current") => Role::Viewer,
        ("GET" | "HEAD", _) => Role::Viewer,
        _ => Role::Operator,
    }
}

/// The role guard of the tenant routes (see [`required_role`]).
async fn role_guard(req: Request, next: axum::middleware::Next) -> Response {
    let needed = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Role::Owner, |route| {
            required_role(req.method().as_str(), route.as_str())
        });
    if let Some(who) = req.extensions().get::<AuthenticatedTenant>() {
        if let Err(e) = who.require(needed) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// The admin routes, behind the admin bearer-token check.
fn admin_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(admin::create).get(admin::list))
        .route(
            "/v1/tenants/{id}",
            get(admin::get).patch(admin::update).delete(admin::delete),
        )
        .route("/v1/tenants/{id}/suspend", post(admin::suspend))
        .route("/v1/tenants/{id}/activate", post(admin::activate))
        .route("/v1/tenants/{id}/rotate", post(admin::rotate))
        .route("/v1/tenants/{id}/stats", get(admin::stats))
        .route(
            "/v1/admin/credential",
            get(admin::credential).put(admin::change_credential),
        )
        .route("/v1/tenants/{id}/purge", post(admin::purge))
        .route(
            "/v1/tenants/{id}/reservations",
            post(admin::reserve).get(admin::reservations),
        )
        .route(
            "/v1/tenants/{id}/reservations/{reservation}/commit",
            post(admin::commit),
        )
        .route(
            "/v1/tenants/{id}/reservations/{reservation}/release",
            post(admin::release),
        )
        .route("/v1/tenants/{id}/usage", post(admin::record_usage))
        .route("/v1/tenants/{id}/jobs", get(jobs::admin_list_jobs))
        .route("/v1/tenants/{id}/workers", get(jobs::admin_list_workers))
        .route(
            "/v1/admin/sessions",
            post(sessions::admin_login).get(sessions::admin_list),
        )
        .route(
            "/v1/admin/sessions/current",
            get(sessions::admin_current).delete(sessions::admin_logout),
        )
        .route("/v1/admin/sessions/{id}", delete(sessions::admin_revoke))
        .route("/v1/tenants/{id}/sessions", get(sessions::tenant_list))
        .route(
            "/v1/tenants/{id}/sessions/{session}",
            delete(sessions::tenant_revoke),
        )
        .route(
            "/v1/tenants/{id}/stacks/{stack}/{env}/lock",
            delete(stacks::admin_force_unlock),
        )
        .route("/v1/tenants/{id}/locks", get(admin_locks::list))
        .route(
            "/v1/tenants/{id}/locks/{key}",
            delete(admin_locks::force_unlock),
        )
        .route(
            "/v1/tenants/{id}/keys",
            get(keys::admin_list).post(keys::admin_create),
        )
        .route("/v1/tenants/{id}/keys/{key_id}", delete(keys::admin_revoke))
        .route(
            "/v1/tenants/{id}/keys/{key_id}/rotate",
            post(keys::admin_rotate),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/head", get(audit::head))
        .route("/v1/audit/verify", get(audit::verify))
        .route_layer(from_fn_with_state(state.clone(), admin::guard))
}

/// The tenant routes, behind the tenant layer.
fn tenant_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/tenant", get(tenant::me))
        .route("/v1/sessions", get(sessions::list_own))
        .route(
            "/v1/sessions/current",
            get(sessions::current_own).delete(sessions::logout),
        )
        .route("/v1/sessions/{id}", delete(sessions::revoke_own))
        .route("/v1/state", get(tenant::list_state))
        .route(
            "/v1/state/{*key}",
            get(tenant::get_state)
                .put(tenant::put_state)
                .delete(tenant::delete_state),
        )
        .route("/v1/locks", get(tenant::list_locks))
        .route(
            "/v1/locks/{key}",
            get(tenant::inspect_lock)
                .post(tenant::acquire_lock)
                .put(tenant::renew_lock)
                .delete(tenant::release_lock),
        )
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/complete", post(jobs::complete_job))
        .route("/v1/jobs/{id}/fail", post(jobs::fail_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route(
            "/v1/workers",
            post(jobs::register_worker).get(jobs::list_workers),
        )
        .route("/v1/workers/{id}", delete(jobs::delete_worker))
        .route("/v1/workers/{id}/claim", post(jobs::claim))
        .route("/v1/keys", get(keys::own_list).post(keys::own_create))
        .route("/v1/keys/current", get(keys::own_current))
        .route("/v1/keys/{key_id}", delete(keys::own_revoke))
        .route("/v1/keys/{key_id}/rotate", post(keys::own_rotate))
        .route("/v1/tenant/audit", get(audit::list_own))
        .merge(stack_routes(state))
        .route_layer(axum::middleware::from_fn(role_guard))
        .route_layer(state.auth().layer())
}

/// `POST /v1/sessions` (the tenant login), behind the tenant layer and, outside
/// it, the audit of the logins that layer refuses.
fn login_route(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(sessions::login))
        .route_layer(state.auth().layer())
        .route_layer(from_fn_with_state(state.clone(), audit::login_refusals))
}

/// The stack routes (Terraform's `http` backend), with their own body limit.
fn stack_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/stacks", get(stacks::list))
        .route(
            "/v1/stacks/{stack}/{env}/state",
            get(stacks::get_state)
                .post(stacks::save_state)
                .delete(stacks::delete_state),
        )
        .route("/v1/stacks/{stack}/{env}/lock", any(stacks::lock_route))
        .route("/v1/stacks/{stack}/{env}/history", get(stacks::history))
        .route(
            "/v1/stacks/{stack}/{env}/history/{serial}",
            get(stacks::version),
        )
        .route("/v1/stacks/{stack}/{env}/rollback", post(stacks::rollback))
        .layer(DefaultBodyLimit::max(state.config().stack_body_limit))
}

fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(open::healthz))
        .route("/readyz", get(open::readyz))
        .route("/openapi.json", get(open::openapi_json))
}

async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> ApiError {
    ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Gives an error response without a JSON body (made by a foreign layer:
/// a timeout, a 405) the standard JSON body, keeping its headers.
fn json_error_body(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return res;
    }
    let err = ApiError::from_status(status);
    let body = ErrorBody {
        error: ErrorDetail {
            code: err.code().to_string(),
            message: err.message().to_string(),
            holder: None,
            quota: None,
            expired_at: None,
        },
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return err.into_response();
    };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// What the edge layer needs: the metrics, the body limits (plain routes,
/// stack routes) and the timer anchor.
type EdgeState = (Arc<Metrics>, (usize, usize), Arc<TimerAnchor>);

/// The edge of every route, in one layer (each layer costs a boxed future):
/// refuses a declared or known-size body over the limit before any handler
/// runs (streamed bodies are cut by `DefaultBodyLimit`), gives every error a
/// JSON body, and counts the answer in the metrics.
async fn edge(
    axum::extract::State((metrics, (plain_limit, stack_limit), _wheel)): axum::extract::State<
        EdgeState,
    >,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::HttpBody as _;
    let route = req.extensions().get::<MatchedPath>().cloned();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let at_least = req.body().size_hint().lower();
    let limit = if req.uri().path().starts_with("/v1/stacks/") {
        stack_limit
    } else {
        plain_limit
    };
    let res = if declared.is_some_and(|n| n > limit as u64) || at_least > limit as u64 {
        ApiError::too_large(limit).into_response()
    } else {
        json_error_body(next.run(req).await)
    };
    let tenant = res.extensions().get::<TenantLabel>().map(TenantLabel::id);
    metrics.record_request(
        tenant,
        route.as_ref().map(MatchedPath::as_str),
        res.status().as_u16(),
    );
    res
}

/// Held by the router; the timer anchor task ends once the router is dropped.
#[derive(Debug)]
struct TimerAnchor;

/// Keeps one timer pending in tokio's timer wheel for as long as the router
/// lives, ticking every `period` (at most a second).
///
/// Why: every request arms a timer (the request timeout). When a worker
/// thread parks with *no* timer pending, tokio's time driver records no next
/// wake-up, and the next timer registered (by the next request, on another
/// worker) must unpark the driver: an eventfd write and a futex wake, a few
/// microseconds of kernel time per request, measured as ~0.8 extra `write` +
/// `futex` syscalls per request under wrk. With a timer always pending that
/// expires sooner than any request deadline, registering a request's timer
/// never moves the driver's next wake-up earlier, so nothing is unparked.
/// The cost is one wake-up per `period`. Without a runtime (a router built
/// outside tokio) nothing is spawned and timeouts still work, only slower.
fn spawn_timer_anchor(period: Duration) -> Arc<TimerAnchor> {
    let anchor = Arc::new(TimerAnchor);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&anchor);
        let period = period.clamp(Duration::from_millis(1), Duration::from_secs(1));
        rt.spawn(async move {
            while weak.strong_count() > 0 {
                tokio::time::sleep(period).await;
            }
        });
    }
    anchor
}

/// Request ids `<12 random hex>-<counter>`: unique per process start, and
/// cheap (no random number per request).
#[derive(Debug, Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut prefix = uuid::Uuid::new_v4().simple().to_string();
        prefix.truncate(12);
        RequestIds {
            prefix: Arc::from(prefix),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `<prefix>-<counter as 8+ lowercase hex digits>`, written into a
        // stack buffer: no `format!` machinery and no String per request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits = (16 - (n.leading_zeros() as usize) / 4).max(8);
        let mut buf = [0u8; 12 + 1 + 16];
        let prefix = self.prefix.as_bytes();
        let plen = prefix.len().min(12);
        buf[..plen].copy_from_slice(&prefix[..plen]);
        buf[plen] = b'-';
        for (i, slot) in buf[plen + 1..plen + 1 + digits].iter_mut().enumerate() {
            let shift = 4 * (digits - 1 - i);
            *slot = HEX[((n >> shift) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf[..plen + 1 + digits])
            .ok()
            .map(RequestId::new)
    }
}

/// The longest client request id that is kept.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 64;

/// True for a request id a client may choose: 1 to
/// [`MAX_REQUEST_ID_LEN`] characters of `[A-Za-z0-9._:-]`, so that it is
/// short and safe in every log line it is echoed into.
fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Drops a client's `x-request-id` unless it is exactly one safe id, so the
/// next layer makes one instead.
fn keep_only_a_safe_request_id(mut req: Request) -> Request {
    let headers = req.headers_mut();
    let mut given = headers.get_all(REQUEST_ID).iter();
    let keep = match (given.next(), given.next()) {
        (None, _) => return req,
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(REQUEST_ID);
    }
    req
}

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

fn request_span(req: &Request) -> tracing::Span {
    // Method, route template, path, request id and (recorded by the tenant
    // layer once it has authenticated the caller) the tenant id only: never
    // headers (they carry credentials) and never the query (it carries lock
    // ids).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", |m| m.as_str());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        path = req.uri().path(),
        request_id,
        tenant = tracing::field::Empty,
    )
}

/// The metrics listener's router: `GET /metrics` (Prometheus text) only,
/// every other path 404. Serve it apart from [`app`], on an address only
/// the scraper reaches: it names every tenant, its activity and its limits.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(open::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The whole API over `state`: admin, tenant and open routes with request
/// ids (a client's `x-request-id` is kept only when it is one id of at most
/// 64 characters of `[A-Za-z0-9._:-]`; else one is made), tracing,
/// metrics, JSON errors, the body limit and the request timeout.
pub fn app(state: AppState) -> Router {
    let config = state.config().clone();
    let metrics: Arc<Metrics> = state.metrics().clone();
    Router::new()
        .merge(admin_routes(&state))
        .merge(tenant_routes(&state))
        .merge(login_route(&state))
        .merge(open_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .map_request(keep_only_a_safe_request_id as fn(Request) -> Request)
                .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(from_fn_with_state(
                    (
                        metrics,
                        (config.body_limit, config.stack_body_limit),
                        spawn_timer_anchor(config.request_timeout / 2),
                    ),
                    edge,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    config.request_timeout,
                ))
                .layer(DefaultBodyLimit::max(config.body_limit)),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_request_ids_of_safe_characters_are_kept() {
        for ok in [
            "a",
            "req-42",
            "2026-12-01T12:00:00.5Z",
            "A_b.c:d-e",
            &"x".repeat(64),
        ] {
            assert!(is_safe_request_id(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "a/b",
            "<script>",
            "id\u{e9}",
            &"x".repeat(65),
        ] {
            assert!(!is_safe_request_id(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn request_ids_are_prefix_dash_hex_counter() {
        let mut ids = RequestIds::new();
        let req = axum::http::Request::new(());
        for n in [1u64, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            let Some(id) = ids.make_request_id(&req) else {
                panic!("no request id for {n}");
            };
            let expected = format!("{}-{n:08x}", ids.prefix);
            assert_eq!(id.header_value().to_str().ok(), Some(expected.as_str()));
        }
    }
}
