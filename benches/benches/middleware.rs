//! The tenant middleware's own cost per request, through direct router calls
//! (no network), on the cache-hit path: SHA-256 of the key, one map lookup,
//! the status and expiry check, the tenant's rate-limit bucket, the request
//! extension, the tenant label and the `x-ratelimit-*` headers.
//!
//! Run: `cargo bench -p tenancy-benches --bench middleware`.
//!
//! - `authenticate_cache_hit`: `TenantAuth::authenticate` alone, with the
//!   tenant's primary secret; `authenticate_cache_hit_named_key` the same
//!   with a named API key, and `..._expiring` with a key that has an
//!   expiry (checked against the clock on every request).
//! - `bare_router` vs `authed_router`: the same handler without and with
//!   `TenantAuth::layer()`; the difference is the layer's whole cost.
//! - `authed_router_no_ratelimit`: the layer with rate limiting off.
//! - `passthrough_layer`: an empty `from_fn` layer, the floor any tower
//!   layer pays (boxed future, service clone).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::middleware::{from_fn, Next};
use axum::routing::get;
use axum::Router;
use criterion::Criterion;
use tenancy_core::{
    LimitOverrides, MemoryBackend, NewTenant, Secret, SystemClock, TenantId, TenantRegistry,
};
use tenancy_server::{AuthConfig, TenantAuth};
use tenancy_state::StoreRegistry;
use tower::ServiceExt;

async fn handler() -> &'static str {
    "ok"
}

async fn passthrough(req: AxumRequest, next: Next) -> axum::response::Response {
    next.run(req).await
}

fn request(key: &str) -> Request<Body> {
    Request::builder()
        .uri("/x")
        .header("x-api-key", key)
        .body(Body::empty())
        .expect("a request")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (registry, key) = rt.block_on(async {
        let registry =
            Arc::new(StoreRegistry::new(Arc::new(MemoryBackend::new())).with_bcrypt_cost(4));
        registry
            .bootstrap(&Secret::new("bench-admin-password"))
            .await
            .expect("bootstrap");
        let mut new = NewTenant::new(TenantId::new("bench").expect("id"));
        // No 429s during the bench: the bucket is checked, never empty.
        new.limits = LimitOverrides {
            requests_per_second: Some(1_000_000_000),
            burst: Some(1_000_000_000),
            ..LimitOverrides::default()
        };
        let created = registry.create(new).await.expect("create");
        let mut named = Vec::new();
        for (name, expires_at) in [
            ("bench", None),
            (
                "bench-expiring",
                Some(
                    tenancy_core::Clock::now(&SystemClock)
                        + tenancy_core::clock::chrono_duration(std::time::Duration::from_secs(
                            86_400,
                        )),
                ),
            ),
        ] {
            let key = registry
                .create_key(
                    &created.tenant.id,
                    tenancy_core::NewApiKey {
                        name: name.into(),
                        role: tenancy_core::Role::Viewer,
                        expires_at,
                    },
                )
                .await
                .expect("a named key");
            named.push(key.secret.expose().to_string());
        }
        (registry, (created.secret.expose().to_string(), named))
    });
    let (key, named) = key;
    let auth = TenantAuth::new(registry.clone());
    let auth_no_rate = TenantAuth::with_config(
        registry,
        AuthConfig {
            rate_limit: false,
            ..AuthConfig::default()
        },
        Arc::new(SystemClock),
    );

    let bare = Router::new().route("/x", get(handler));
    let authed = Router::new()
        .route("/x", get(handler))
        .route_layer(auth.layer());
    let authed_no_rate = Router::new()
        .route("/x", get(handler))
        .route_layer(auth_no_rate.layer());
    let passthru = Router::new()
        .route("/x", get(handler))
        .route_layer(from_fn(passthrough));
    // Warm the caches (the one bcrypt per layer and key).
    rt.block_on(async {
        for app in [&authed, &authed_no_rate] {
            for k in std::iter::once(&key).chain(&named) {
                let res = app.clone().oneshot(request(k)).await.expect("call");
                assert_eq!(res.status(), 200);
            }
        }
    });

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(&key).expect("header"));
    let mut g = c.benchmark_group("middleware");
    g.bench_function("authenticate_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { auth.authenticate(&headers).await.expect("authorized") })
    });
    for (name, k) in [
        ("authenticate_cache_hit_named_key", &named[0]),
        ("authenticate_cache_hit_named_key_expiring", &named[1]),
    ] {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_str(k).expect("header"));
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { auth.authenticate(&h).await.expect("authorized") })
        });
    }
    for (name, app) in [
        ("bare_router", &bare),
        ("passthrough_layer", &passthru),
        ("authed_router_no_ratelimit", &authed_no_rate),
        ("authed_router", &authed),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let res = app.clone().oneshot(request(&key)).await.expect("call");
                assert_eq!(res.status(), 200);
            })
        });
    }
    g.finish();
    for a in [&auth, &auth_no_rate] {
        assert_eq!(
            a.stats().verifications.load(Ordering::Relaxed),
            3,
            "bcrypt ran once per key, on the warm-up"
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
