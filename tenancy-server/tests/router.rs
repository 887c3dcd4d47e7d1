//! Router tests through `oneshot`: admin API, tenant auth and its cache,
//! state with ETags, locks, jobs and workers with quotas, rate limits,
//! metrics and the OpenAPI document.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{harness, harness_on, harness_with, ADMIN};
use serde_json::{json, Value};
use tenancy_core::{MemoryBackend, StateBackend, StateKey};
use tenancy_server::{AuthConfig, ServerConfig};

// ---------------------------------------------------------------- open routes

#[tokio::test]
async fn open_routes_answer() {
    let h = harness().await;
    let a = h.call("GET", "/healthz", &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ok");
    let a = h.call("GET", "/readyz", &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("x-request-id").is_some(), "request id set");
    let a = h.call("GET", "/openapi.json", &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["paths"]["/v1/jobs"]["post"].is_object());
    let a = h.call("GET", "/nope", &[], "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    let a = h.call("PATCH", "/healthz", &[], "").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.error_code(), "method_not_allowed");
}

#[tokio::test]
async fn readyz_is_503_without_a_registry() {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let h = harness_on(backend, ServerConfig::default(), false).await;
    let a = h.call("GET", "/readyz", &[], "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.error_code(), "not_ready");
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let h = harness().await;
    let a = h
        .call("GET", "/healthz", &[("x-request-id", "abc-123")], "")
        .await;
    assert_eq!(a.header("x-request-id").as_deref(), Some("abc-123"));
    let first = h
        .call("GET", "/healthz", &[], "")
        .await
        .header("x-request-id")
        .unwrap();
    let second = h
        .call("GET", "/healthz", &[], "")
        .await
        .header("x-request-id")
        .unwrap();
    assert_ne!(first, second, "made ids are unique");
    assert_eq!(first.len(), 21, "<12 hex>-<8 hex counter>: {first}");
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes() {
    let h = harness().await;
    let doc = h.call("GET", "/openapi.json", &[], "").await.json();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = tenancy_server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.replace("{*key}", "{key}")))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_needs_the_admin_token() {
    let h = harness().await;
    let a = h.call("GET", "/v1/tenants", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.error_code(), "unauthorized");
    let a = h
        .call(
            "GET",
            "/v1/tenants",
            &[("authorization", "Bearer wrong-token")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = h
        .call(
            "GET",
            "/v1/tenants",
            &[("authorization", "Basic YWRtaW46eA==")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = h.admin("GET", "/v1/tenants", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    // A tenant secret is not an admin token.
    let secret = h.create_tenant("acme", json!({})).await;
    let a = h
        .call(
            "GET",
            "/v1/tenants",
            &[("authorization", &format!("Bearer {secret}"))],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tenant_lifecycle_through_the_admin_api() {
    let h = harness().await;
    let a = h
        .admin(
            "POST",
            "/v1/tenants",
            json!({"id": "acme", "display_name": "Acme", "email": "ops@acme.test",
                   "plan": "basic", "limits": {"max_workers": 7}, "secret_prefix": "acme"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let body = a.json();
    assert!(body["secret"].as_str().unwrap().starts_with("acme_"));
    assert_eq!(body["tenant"]["status"], "active");
    assert_eq!(body["tenant"]["plan"], "basic");
    assert_eq!(body["tenant"]["limits"]["max_workers"], 7);
    let text = String::from_utf8_lossy(&a.bytes).to_string();
    assert!(!text.contains("$2"), "no bcrypt hash in the answer: {text}");
    assert!(!text.contains("lookup_id"), "no lookup id in the answer");

    let a = h.admin("POST", "/v1/tenants", json!({"id": "acme"})).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error_code(), "already_exists");

    h.create_tenant("beta", json!({})).await;
    let a = h.admin("GET", "/v1/tenants", Value::Null).await;
    let ids: Vec<String> = a.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);

    let a = h
        .admin(
            "POST",
            "/v1/tenants/beta/suspend",
            json!({"reason": "unpaid"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "suspended");
    assert_eq!(a.json()["suspended_reason"], "unpaid");
    let a = h
        .admin("POST", "/v1/tenants/beta/suspend", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "already suspended");
    let a = h
        .admin("GET", "/v1/tenants?status=suspended", Value::Null)
        .await;
    assert_eq!(a.json()["tenants"].as_array().unwrap().len(), 1);
    let a = h
        .admin("GET", "/v1/tenants?status=bogus", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .admin("POST", "/v1/tenants/beta/activate", Value::Null)
        .await;
    assert_eq!(a.json()["status"], "active");

    let a = h
        .admin(
            "PATCH",
            "/v1/tenants/acme",
            json!({"plan": "pro", "display_name": "Acme Inc"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["plan"], "pro");
    let rev = a.json()["revision"].as_u64().unwrap();
    let a = h
        .admin(
            "PATCH",
            "/v1/tenants/acme",
            json!({"email": "x@y.test", "expected_revision": rev - 1}),
        )
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = h
        .admin("PATCH", "/v1/tenants/acme", json!({"plan": "gold"}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let a = h
        .admin("POST", "/v1/tenants/acme/rotate", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["secret"].as_str().unwrap().starts_with("acme_"));
    assert_eq!(a.json()["tenant"]["credential_generation"], 2);

    let a = h.admin("GET", "/v1/tenants/acme/stats", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    let quotas = a.json()["quotas"].as_array().unwrap().clone();
    assert!(quotas
        .iter()
        .any(|q| q["resource"] == "concurrent_jobs" && q["limit"] == 100));

    let a = h.admin("DELETE", "/v1/tenants/beta", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "deleted");
    let a = h.admin("GET", "/v1/tenants/beta", Value::Null).await;
    assert_eq!(a.json()["status"], "deleted");
    let a = h.admin("GET", "/v1/tenants/nobody", Value::Null).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.admin("GET", "/v1/tenants/Bad..Id", Value::Null).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn create_refuses_bad_input() {
    let h = harness().await;
    let bearer = format!("Bearer {ADMIN}");
    let auth = [("authorization", bearer.as_str())];
    for (body, why) in [
        ("{", "bad JSON"),
        ("[]", "wrong shape"),
        (r#"{"id": 5}"#, "wrong type"),
        (r#"{"id": "acme", "plan": 3}"#, "wrong plan type"),
        (r#"{"id": "acme", "surprise": true}"#, "unknown field"),
        (r#"{"id": "default"}"#, "reserved id"),
        (r#"{"id": "../etc"}"#, "traversal id"),
        (r#"{"id": "acme", "email": "nope"}"#, "bad email"),
        (r#"{"id": "acme", "secret_prefix": "NO"}"#, "bad prefix"),
        (
            r#"{"id": "acme", "limits": {"max_stacks": 99999999999999}}"#,
            "absurd limit",
        ),
        ("", "empty body"),
    ] {
        let a = h.call("POST", "/v1/tenants", &auth, body).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{why}: {}",
            String::from_utf8_lossy(&a.bytes)
        );
        assert_eq!(a.error_code(), "invalid_input", "{why}");
    }
}

// ---------------------------------------------------------------- tenant auth

#[tokio::test]
async fn tenant_auth_by_key_bearer_and_tenant_id() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let a = h.tenant(&secret, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    let me = a.json();
    assert_eq!(me["id"], "acme");
    assert_eq!(me["status"], "active");
    assert_eq!(me["plan"], "free");
    assert_eq!(me["limits"]["max_concurrent_jobs"], 5);
    assert_eq!(me["usage"]["jobs_active"], 0);
    assert!(a.header("x-ratelimit-limit").is_some());
    assert!(a.header("x-ratelimit-remaining").is_some());
    assert!(a.header("x-ratelimit-reset").is_some());

    let bearer = format!("Bearer {secret}");
    let a = h
        .call("GET", "/v1/tenant", &[("authorization", &bearer)], "")
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h
        .call(
            "GET",
            "/v1/tenant",
            &[("x-api-key", &secret), ("x-tenant-id", "acme")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h
        .call(
            "GET",
            "/v1/tenant",
            &[("x-api-key", &secret), ("x-tenant-id", "other")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.error_code(), "forbidden");

    for bad in [
        "",
        "tnc_wrong",
        "tnc_0123456789abcdefABCDEF0123456789",
        &"x".repeat(5000),
    ] {
        let a = h.call("GET", "/v1/tenant", &[("x-api-key", bad)], "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "key {bad:.20}");
        assert_eq!(a.error_code(), "unauthorized");
    }
    let a = h.call("GET", "/v1/tenant", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The admin token is not a tenant key.
    let a = h
        .call(
            "GET",
            "/v1/tenant",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bcrypt_runs_once_per_key_then_the_cache_serves() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let stats = h.state.auth().stats();
    for _ in 0..20 {
        let a = h.tenant(&secret, "GET", "/v1/state", Value::Null).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(stats.verifications.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refreshes.load(Ordering::Relaxed), 0);
    // Concurrent first requests with one key share one verification.
    let other = h.create_tenant("beta", json!({})).await;
    let calls = (0..16).map(|_| h.tenant(&other, "GET", "/v1/state", Value::Null));
    for a in futures::future::join_all(calls).await {
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(stats.verifications.load(Ordering::Relaxed), 2);
    // Bad keys are remembered: the second try costs no bcrypt.
    let bad = "tnc_0123456789abcdefABCDEF0123456789";
    h.tenant(bad, "GET", "/v1/state", Value::Null).await;
    h.tenant(bad, "GET", "/v1/state", Value::Null).await;
    assert_eq!(stats.verifications.load(Ordering::Relaxed), 3);
    assert_eq!(stats.negative_hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn rotation_suspension_and_deletion_apply_on_the_next_request() {
    let h = harness().await;
    let old = h.create_tenant("acme", json!({})).await;
    assert_eq!(
        h.tenant(&old, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );

    let a = h
        .admin("POST", "/v1/tenants/acme/rotate", Value::Null)
        .await;
    let new = a.json()["secret"].as_str().unwrap().to_string();
    let a = h.tenant(&old, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "the old key stops at once"
    );
    assert_eq!(
        h.tenant(&new, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );

    h.admin("POST", "/v1/tenants/acme/suspend", Value::Null)
        .await;
    let a = h.tenant(&new, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("suspended"));
    h.admin("POST", "/v1/tenants/acme/activate", Value::Null)
        .await;
    assert_eq!(
        h.tenant(&new, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );

    h.admin("DELETE", "/v1/tenants/acme", Value::Null).await;
    let a = h.tenant(&new, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.state.auth().stats().verifications.load(Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn a_suspended_tenants_key_costs_one_bcrypt_then_activation_applies_at_once() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    h.admin("POST", "/v1/tenants/acme/suspend", Value::Null)
        .await;
    let stats = h.state.auth().stats();
    for _ in 0..5 {
        let a = h.tenant(&secret, "GET", "/v1/tenant", Value::Null).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended"));
    }
    assert_eq!(stats.verifications.load(Ordering::Relaxed), 1);
    h.admin("POST", "/v1/tenants/acme/activate", Value::Null)
        .await;
    let a = h.tenant(&secret, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn expiry_applies_on_the_next_request() {
    let h = harness().await;
    let expires = (h.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let secret = h
        .create_tenant("acme", json!({"expires_at": expires}))
        .await;
    assert_eq!(
        h.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    h.clock.advance(Duration::from_secs(3601));
    let a = h.tenant(&secret, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

use tenancy_core::Clock;

#[tokio::test]
async fn other_replicas_see_changes_within_the_refresh_interval() {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let a = harness_on(backend.clone(), ServerConfig::default(), true).await;
    let fresh = ServerConfig {
        auth: AuthConfig {
            refresh_interval: Duration::ZERO,
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    };
    let stale = ServerConfig {
        auth: AuthConfig {
            refresh_interval: Duration::from_secs(3600),
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    };
    let b = harness_on(backend.clone(), fresh, false).await;
    let c = harness_on(backend, stale, false).await;
    let secret = a.create_tenant("acme", json!({})).await;
    assert_eq!(
        b.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );

    a.admin("POST", "/v1/tenants/acme/suspend", Value::Null)
        .await;
    // Past its refresh interval (zero here), replica b re-reads the record: 403, no bcrypt.
    assert_eq!(
        b.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        b.state.auth().stats().verifications.load(Ordering::Relaxed),
        1
    );
    assert!(b.state.auth().stats().refreshes.load(Ordering::Relaxed) >= 1);
    // Within its interval, replica c still trusts its entry: that is the documented bound.
    assert_eq!(
        c.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );

    a.admin("POST", "/v1/tenants/acme/activate", Value::Null)
        .await;
    assert_eq!(
        b.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    a.admin("POST", "/v1/tenants/acme/rotate", Value::Null)
        .await;
    assert_eq!(
        b.tenant(&secret, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let h = harness().await;
    let secret = h
        .create_tenant(
            "acme",
            json!({"limits": {"requests_per_second": 1, "burst": 2}}),
        )
        .await;
    let a = h.tenant(&secret, "GET", "/v1/state", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(a.header("x-ratelimit-remaining").as_deref(), Some("1"));
    let a = h.tenant(&secret, "GET", "/v1/state", Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h.tenant(&secret, "GET", "/v1/state", Value::Null).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.error_code(), "rate_limited");
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    assert_eq!(a.header("x-ratelimit-remaining").as_deref(), Some("0"));
    // Another tenant has its own bucket.
    let other = h.create_tenant("beta", json!({})).await;
    assert_eq!(
        h.tenant(&other, "GET", "/v1/state", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- state

#[tokio::test]
async fn state_with_etags_and_preconditions() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    let put = |body: &'static str, headers: Vec<(&'static str, String)>| {
        let key = key.clone();
        let h = &h;
        async move {
            let mut hs: Vec<(&str, &str)> = vec![("x-api-key", &key)];
            for (k, v) in &headers {
                hs.push((k, v));
            }
            h.call("PUT", "/v1/state/stacks/web/prod/state.json", &hs, body)
                .await
        }
    };
    let a = put("{\"v\":1}", vec![("if-none-match", "*".into())]).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let etag1 = a.header("etag").unwrap();
    assert_eq!(a.json()["etag"], etag1.as_str());
    let a = put("{\"v\":1}", vec![("if-none-match", "*".into())]).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(a.error_code(), "precondition_failed");

    let a = h
        .call(
            "GET",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.bytes, b"{\"v\":1}");
    assert_eq!(a.header("etag").unwrap(), etag1);
    let a = h
        .call(
            "GET",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key), ("if-none-match", &etag1)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);

    let a = put("{\"v\":2}", vec![("if-match", etag1.clone())]).await;
    assert_eq!(a.status, StatusCode::OK);
    let etag2 = a.header("etag").unwrap();
    assert_ne!(etag1, etag2);
    let a = put("{\"v\":3}", vec![("if-match", etag1.clone())]).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "stale If-Match");
    let a = put("{\"v\":3}", vec![("if-match", "\"garbage\"".into())]).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = put("{\"v\":3}", vec![]).await;
    assert_eq!(a.status, StatusCode::OK, "unconditional overwrite");

    h.call(
        "PUT",
        "/v1/state/stacks/api/prod/state.json",
        &[("x-api-key", &key)],
        "x",
    )
    .await;
    let a = h
        .call(
            "GET",
            "/v1/state?prefix=stacks/web",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    let keys: Vec<String> = a.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["stacks/web/prod/state.json"]);
    let a = h
        .call("GET", "/v1/state?limit=1", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(a.json()["keys"].as_array().unwrap().len(), 1);
    assert_eq!(a.json()["truncated"], true);

    let a = h
        .call(
            "DELETE",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key), ("if-match", &etag1)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = h
        .call(
            "DELETE",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .call(
            "GET",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    let a = h
        .call(
            "DELETE",
            "/v1/state/stacks/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Stored under the tenant's own prefix.
    let raw = StateKey::new("tenants/acme/v1/stacks/api/prod/state.json").unwrap();
    assert!(h.backend.get(&raw).await.unwrap().is_some());
}

#[tokio::test]
async fn state_refuses_traversal_and_reserved_keys() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    for path in [
        "/v1/state/..%2Fregistry%2Facme.yaml",
        "/v1/state/%2e%2e/%2e%2e/registry/acme.yaml",
        "/v1/state/a/../../b",
        "/v1/state/.hidden",
        "/v1/state/a%00b",
        "/v1/state/a%5Cb",
        "/v1/state/a//b",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let a = h.call(method, path, &[("x-api-key", &key)], "x").await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {path}");
            assert_eq!(a.error_code(), "invalid_input");
        }
    }
    let a = h
        .call(
            "GET",
            "/v1/state?prefix=..%2F..",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    for method in ["GET", "PUT", "DELETE"] {
        let a = h
            .call(
                method,
                "/v1/state/_server/jobs/x",
                &[("x-api-key", &key)],
                "x",
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} reserved");
    }
    let a = h
        .call(
            "GET",
            "/v1/state?prefix=_server",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------- locks

#[tokio::test]
async fn locks_acquire_conflict_renew_release() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    let a = h
        .tenant(
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 60, "operation": "apply", "owner": "ci@runner"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let lease = a.json();
    assert_eq!(lease["key"], "stack:web:env:prod");
    assert_eq!(lease["owner"], "ci@runner");
    assert_eq!(lease["tenant"], "acme");
    let lock_id = lease["lock_id"].as_str().unwrap().to_string();
    let token = lease["fencing_token"].as_u64().unwrap();

    let a = h
        .tenant(
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 60}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error_code(), "lock_held");
    assert_eq!(a.json()["error"]["holder"]["owner"], "ci@runner");

    let a = h
        .tenant(
            &key,
            "PUT",
            &format!("/v1/locks/stack:web:env:prod?lock_id={lock_id}&ttl_seconds=120"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h
        .tenant(
            &key,
            "PUT",
            &format!("/v1/locks/stack:web:env:prod?lock_id={lock_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "renew with the lease it had");
    let other_id = uuid::Uuid::new_v4();
    let a = h
        .tenant(
            &key,
            "PUT",
            &format!("/v1/locks/stack:web:env:prod?lock_id={other_id}"),
            json!({"ttl_seconds": 30}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error_code(), "lock_lost");
    let a = h
        .tenant(&key, "PUT", "/v1/locks/stack:web:env:prod", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "lock_id required");
    let a = h
        .tenant(
            &key,
            "PUT",
            "/v1/locks/stack:web:env:prod?lock_id=nope",
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let a = h.tenant(&key, "GET", "/v1/locks", Value::Null).await;
    let locks = a.json()["locks"].as_array().unwrap().clone();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["key"], "stack:web:env:prod");

    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/locks/stack:web:env:prod?lock_id={other_id}"),
            Value::Null,
        )
        .await;
    assert!(a.status == StatusCode::CONFLICT || a.status == StatusCode::NOT_FOUND);
    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/locks/stack:web:env:prod?lock_id={lock_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .tenant(
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 5}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.json()["fencing_token"].as_u64().unwrap() > token);

    for (path, body, why) in [
        (
            "/v1/locks/a::b",
            json!({"ttl_seconds": 60}),
            "empty segment",
        ),
        ("/v1/locks/..%2Fx", json!({"ttl_seconds": 60}), "traversal"),
        ("/v1/locks/ok", json!({"ttl_seconds": 0}), "zero ttl"),
        (
            "/v1/locks/ok",
            json!({"ttl_seconds": 9_999_999}),
            "huge ttl",
        ),
        ("/v1/locks/ok", json!({"ttl_seconds": "60"}), "wrong type"),
        ("/v1/locks/ok", json!({}), "missing ttl"),
    ] {
        let a = h.tenant(&key, "POST", path, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}");
    }
}

// ---------------------------------------------------------------- jobs and workers

#[tokio::test]
async fn thirty_two_concurrent_jobs_on_the_free_plan_give_five_created() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({"plan": "free"})).await;
    // Warm the cache so the burst measures the quota, not bcrypt.
    h.tenant(&key, "GET", "/v1/tenant", Value::Null).await;
    let calls = (0..32).map(|i| {
        h.tenant(
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": format!("job-{i}")}),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((created, refused.len()), (5, 27));
    for a in refused {
        assert_eq!(a.error_code(), "quota_exceeded");
        assert_eq!(a.json()["error"]["quota"]["resource"], "concurrent_jobs");
    }
    let a = h.admin("GET", "/v1/tenants/acme/stats", Value::Null).await;
    let usage = a.json()["usage"].clone();
    assert_eq!(usage["jobs_active"], 5);
    assert_eq!(usage["jobs_this_hour"], 5);
    // The tenant's own view shows this replica's changes at once, whatever its usage cache.
    let me = h
        .tenant(&key, "GET", "/v1/tenant", Value::Null)
        .await
        .json();
    assert_eq!(me["usage"]["jobs_active"], 5);
}

#[tokio::test]
async fn jobs_run_through_workers_and_give_their_quota_back() {
    let h = harness().await;
    let key = h
        .create_tenant("acme", json!({"limits": {"max_concurrent_jobs": 2}}))
        .await;
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w1", "cpu": 1}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let worker = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w2"}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "free plan: one worker"
    );
    assert_eq!(a.json()["error"]["quota"]["resource"], "workers");

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);

    let j1 = h
        .tenant(
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": "first", "cpu": 2, "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(j1.status, StatusCode::CREATED);
    let j1 = j1.json();
    assert_eq!(j1["status"], "queued");
    let j2 = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "second"}))
        .await
        .json();
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "third"}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "gpu", "gpu": 1}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // FIFO claim.
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["id"], j1["id"]);
    assert_eq!(a.json()["status"], "running");
    assert_eq!(a.json()["worker_id"].as_str().unwrap(), worker);
    let id1 = j1["id"].as_str().unwrap();

    // Only the holder may complete.
    let stranger = uuid::Uuid::new_v4();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": stranger}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let id2 = j2["id"].as_str().unwrap();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id2}/complete"),
            json!({"worker_id": worker}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "queued, not held");

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": worker, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "completed");
    assert_eq!(a.json()["result"]["ok"], true);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": worker}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "completed once");

    // The slot is free again.
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "third"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), id2);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id2}/fail"),
            json!({"worker_id": worker, "error": "boom"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "failed");
    assert_eq!(a.json()["error"], "boom");

    let a = h.tenant(&key, "GET", "/v1/jobs", Value::Null).await;
    assert_eq!(a.json()["jobs"].as_array().unwrap().len(), 3);
    let a = h
        .tenant(&key, "GET", "/v1/jobs?status=completed", Value::Null)
        .await;
    assert_eq!(a.json()["jobs"].as_array().unwrap().len(), 1);
    let a = h
        .tenant(&key, "GET", &format!("/v1/jobs/{id1}"), Value::Null)
        .await;
    assert_eq!(a.json()["status"], "completed");
    let a = h
        .tenant(&key, "GET", "/v1/jobs?status=bogus", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["jobs_completed"], 1);
    assert_eq!(stats["usage"]["jobs_failed"], 1);
    assert_eq!(stats["usage"]["jobs_active"], 1);
    assert_eq!(
        stats["usage"]["cpu_cores"], 1,
        "the worker's core; the finished job's are back"
    );
    assert_eq!(stats["usage"]["workers"], 1);

    // Deleting a worker requeues what it holds and frees its quota.
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    let held = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/workers/{worker}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/workers/{worker}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h
        .tenant(&key, "GET", &format!("/v1/jobs/{held}"), Value::Null)
        .await;
    assert_eq!(a.json()["status"], "queued");
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w3"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let w3 = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{w3}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), held);
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["workers"], 1);
    assert_eq!(stats["usage"]["cpu_cores"], 0);
}

#[tokio::test]
async fn jobs_per_hour_answers_429_with_retry_after() {
    let h = harness().await;
    let key = h
        .create_tenant(
            "acme",
            json!({"limits": {"max_jobs_per_hour": 2, "max_concurrent_jobs": 10}}),
        )
        .await;
    for _ in 0..2 {
        assert_eq!(
            h.tenant(&key, "POST", "/v1/jobs", json!({"name": "j"}))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j"}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"]["quota"]["resource"], "jobs_per_hour");
    let secs: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&secs));
    // The refused request took nothing.
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["jobs_active"], 2);
}

#[tokio::test]
async fn jobs_refuse_bad_input() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    for (body, why) in [
        (json!({}), "no name"),
        (json!({"name": ""}), "empty name"),
        (json!({"name": "x".repeat(300)}), "long name"),
        (json!({"name": 5}), "wrong type"),
        (json!({"name": "a", "cpu": -1}), "negative cpu"),
        (json!({"name": "a", "cpu": "two"}), "cpu as text"),
        (json!({"name": "a", "gpu": 99_999_999_999u64}), "absurd gpu"),
        (json!({"name": "a", "extra": 1}), "unknown field"),
    ] {
        let a = h.tenant(&key, "POST", "/v1/jobs", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}");
    }
    let a = h
        .tenant(&key, "GET", "/v1/jobs/not-a-uuid", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .tenant(
            &key,
            "GET",
            &format!("/v1/jobs/{}", uuid::Uuid::new_v4()),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{}/claim", uuid::Uuid::new_v4()),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(
        stats["usage"]["jobs_active"], 0,
        "refused requests reserve nothing"
    );
}

#[tokio::test]
async fn one_tenant_never_sees_anothers_jobs_workers_state_or_locks() {
    let h = harness().await;
    let a_key = h.create_tenant("alpha", json!({})).await;
    let b_key = h.create_tenant("bravo", json!({})).await;
    let job = h
        .tenant(&a_key, "POST", "/v1/jobs", json!({"name": "secret-job"}))
        .await
        .json();
    let job_id = job["id"].as_str().unwrap();
    let a_worker = h
        .tenant(&a_key, "POST", "/v1/workers", json!({"name": "wa"}))
        .await
        .json();
    let a_worker = a_worker["id"].as_str().unwrap();
    let b_worker = h
        .tenant(&b_key, "POST", "/v1/workers", json!({"name": "wb"}))
        .await
        .json();
    let b_worker = b_worker["id"].as_str().unwrap();
    h.call(
        "PUT",
        "/v1/state/stacks/x/prod/state.json",
        &[("x-api-key", &a_key)],
        "alpha-data",
    )
    .await;
    h.tenant(
        &a_key,
        "POST",
        "/v1/locks/stack:x:env:prod",
        json!({"ttl_seconds": 60}),
    )
    .await;

    // Bravo's worker finds nothing to claim: alpha's queue is invisible.
    let a = h
        .tenant(
            &b_key,
            "POST",
            &format!("/v1/workers/{b_worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // Alpha's ids mean nothing to bravo.
    assert_eq!(
        h.tenant(&b_key, "GET", &format!("/v1/jobs/{job_id}"), Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.tenant(
            &b_key,
            "POST",
            &format!("/v1/workers/{a_worker}/claim"),
            Value::Null
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.tenant(
            &b_key,
            "DELETE",
            &format!("/v1/workers/{a_worker}"),
            Value::Null
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.tenant(
            &b_key,
            "POST",
            &format!("/v1/jobs/{job_id}/complete"),
            json!({"worker_id": b_worker})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let list = h
        .tenant(&b_key, "GET", "/v1/jobs", Value::Null)
        .await
        .json();
    assert!(list["jobs"].as_array().unwrap().is_empty());
    let a = h
        .call(
            "GET",
            "/v1/state/stacks/x/prod/state.json",
            &[("x-api-key", &b_key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.tenant(&b_key, "GET", "/v1/state", Value::Null).await;
    assert!(!String::from_utf8_lossy(&a.bytes).contains("stacks/x"));
    let a = h.tenant(&b_key, "GET", "/v1/locks", Value::Null).await;
    assert!(a.json()["locks"].as_array().unwrap().is_empty());
    // The same lock key is a different lock for bravo.
    let a = h
        .tenant(
            &b_key,
            "POST",
            "/v1/locks/stack:x:env:prod",
            json!({"ttl_seconds": 60}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    // Alpha's job is untouched and still claimable by alpha.
    let a = h
        .tenant(
            &a_key,
            "POST",
            &format!("/v1/workers/{a_worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), job_id);
}

// ---------------------------------------------------------------- limits and metrics

#[tokio::test]
async fn huge_bodies_get_413_json() {
    let h = harness_with(ServerConfig {
        body_limit: 1024,
        ..ServerConfig::default()
    })
    .await;
    let key = h.create_tenant("acme", json!({})).await;
    let big = vec![b'a'; 4096];
    let a = h
        .call("PUT", "/v1/state/big", &[("x-api-key", &key)], big.clone())
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.error_code(), "payload_too_large");
    // A streamed body without a length is cut by the extractor, also as JSON.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(big))]);
    let a = h
        .call(
            "PUT",
            "/v1/state/big",
            &[("x-api-key", &key)],
            axum::body::Body::from_stream(stream),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.error_code(), "payload_too_large");
}

#[tokio::test]
async fn metrics_have_templated_routes_and_tenant_counts() {
    let h = harness_with(ServerConfig {
        tenant_count_interval: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await;
    let key = h.create_tenant("acme", json!({})).await;
    h.create_tenant("beta", json!({})).await;
    h.admin("POST", "/v1/tenants/beta/suspend", Value::Null)
        .await;
    let job = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j"}))
        .await
        .json();
    let id = job["id"].as_str().unwrap();
    h.tenant(&key, "GET", &format!("/v1/jobs/{id}"), Value::Null)
        .await;
    h.tenant(&key, "GET", "/v1/tenant", Value::Null).await;
    h.call("GET", "/v1/tenant", &[("x-api-key", "tnc_nope")], "")
        .await;
    let text = String::from_utf8(h.call("GET", "/metrics", &[], "").await.bytes).unwrap();
    assert!(text.contains("tenants_total 2"), "{text}");
    assert!(text.contains("tenants_active 1"), "{text}");
    assert!(
        text.contains(
            r#"tenant_api_requests_total{tenant="acme",route="/v1/jobs/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"tenant_api_requests_total{tenant="acme",route="/v1/jobs",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_api_requests_total{tenant="-",route="/v1/tenant",status="401"} 1"#),
        "{text}"
    );
    assert!(!text.contains(id), "raw ids never become labels");
    assert!(
        text.contains(r#"tenant_quota_usage{tenant="acme",resource="concurrent_jobs"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_quota_limit{tenant="acme",resource="concurrent_jobs"} 5"#),
        "{text}"
    );
    assert!(
        text.contains("tenancy_auth_bcrypt_verifications_total 2"),
        "{text}"
    );

    // Later scrapes re-count in the background and show the new count soon.
    h.create_tenant("gamma", json!({})).await;
    let mut seen = false;
    for _ in 0..200 {
        let text = String::from_utf8(h.call("GET", "/metrics", &[], "").await.bytes).unwrap();
        if text.contains("tenants_total 3") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "the background re-count shows the third tenant");
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_503_json() {
    let slow = Arc::new(tenancy_core::testkit::HookBackend::new(MemoryBackend::new()));
    let backend: Arc<dyn StateBackend> = slow.clone();
    let h = harness_on(
        backend,
        ServerConfig {
            request_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        },
        true,
    )
    .await;
    let key = h.create_tenant("acme", json!({})).await;
    assert_eq!(
        h.tenant(&key, "GET", "/v1/tenant", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    // From now on, reads of tenant state hang.
    slow.set_hook(|op| {
        Box::pin(async move {
            if matches!(&op, tenancy_core::testkit::Op::Get(k) if k.as_str().starts_with("tenants/")) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(())
        })
    });
    let started = std::time::Instant::now();
    let a = h
        .call("GET", "/v1/state/stacks/x", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.error_code(), "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at the timeout, not after the read"
    );
}
