//! Mount tenancy's tenant middleware in an axum app of your own.
//!
//! `TenantAuth::layer()` authenticates each request (`X-API-Key` or
//! `Authorization: Bearer`, optional `X-Tenant-ID`), serves repeat keys from
//! its SHA-256-keyed cache (bcrypt only on the first request of a key),
//! applies the tenant's plan rate limit with `x-ratelimit-*` headers, and
//! hands your handlers an `AuthenticatedTenant`. Refusals are JSON:
//! 401 unknown key, 403 suspended or expired tenant, 429 over the rate.
//!
//! Run: `cargo run -p tenancy-examples --example server_middleware`

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use tenancy_core::{NewTenant, Secret, TenantId, TenantRegistry};
use tenancy_server::{AuthenticatedTenant, TenantAuth};
use tenancy_state::StoreRegistry;
use tower::ServiceExt;

/// Your own handler: it only runs for an authenticated, active tenant.
async fn hello(tenant: AuthenticatedTenant) -> String {
    let t = tenant.tenant();
    format!(
        "hello, {} (plan {}, {} req/s)\n",
        t.id,
        t.plan,
        t.limits().requests_per_second
    )
}

async fn call(app: &Router, key: Option<&str>) -> Result<String, Box<dyn std::error::Error>> {
    let mut req = Request::builder().uri("/hello");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let res = app.clone().oneshot(req.body(Body::empty())?).await?;
    let status = res.status();
    let remaining = res
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let body = axum::body::to_bytes(res.into_body(), 64 * 1024).await?;
    Ok(format!(
        "{status} (x-ratelimit-remaining: {remaining}) {}",
        String::from_utf8_lossy(&body).trim_end()
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Any StateBackend works: tenancy_state::open("file:///srv/tenancy") or "s3://bucket/prefix".
    let backend = tenancy_state::open("memory://").await?;
    // bcrypt on tokio's blocking pool, off the async workers
    let registry = Arc::new(
        StoreRegistry::new(backend)
            .with_bcrypt_cost(4)
            .with_blocking(Arc::new(tenancy_server::TokioBlocking)),
    );
    registry
        .bootstrap(&Secret::new("example-admin-password"))
        .await?;
    let acme = registry
        .create(NewTenant::new(TenantId::new("acme")?))
        .await?;

    // One TenantAuth per process; clones share its cache.
    let auth = TenantAuth::new(registry.clone());
    let app = Router::new()
        .route("/hello", get(hello))
        .route_layer(auth.layer());

    println!(
        "with the key:      {}",
        call(&app, Some(acme.secret.expose())).await?
    );
    println!(
        "again (cached):    {}",
        call(&app, Some(acme.secret.expose())).await?
    );
    println!("no key:            {}", call(&app, None).await?);
    println!(
        "unknown key:       {}",
        call(&app, Some("tnc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await?
    );

    // Changes made through your own admin code: tell the cache, and the next
    // request sees them (other replicas re-read within the refresh interval).
    let suspended = registry
        .suspend(&acme.tenant.id, Some("unpaid".into()))
        .await?;
    auth.tenant_changed(&suspended);
    println!(
        "after suspension:  {}",
        call(&app, Some(acme.secret.expose())).await?
    );
    println!(
        "bcrypt verifications: {}",
        auth.stats()
            .verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    // To serve it: axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8080").await?, app).await?;
    Ok(())
}
