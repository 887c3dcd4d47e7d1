//! Router tests: tenant auth.

use super::*;

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
    h.client(&old).get("/v1/tenant").await.expect(200);

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
    h.client(&new).get("/v1/tenant").await.expect(200);

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
    h.client(&new).get("/v1/tenant").await.expect(200);

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
    h.client(&secret).get("/v1/tenant").await.expect(200);
    h.clock.advance(Duration::from_secs(3601));
    let a = h.tenant(&secret, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

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
    h.client(&other).get("/v1/state").await.expect(200);
}

#[tokio::test]
async fn two_tenant_id_headers_are_a_bad_request() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    for (first, second) in [("acme", "acme"), ("acme", "other"), ("other", "acme")] {
        let a = h
            .call(
                "GET",
                "/v1/tenant",
                &[
                    ("x-api-key", &secret),
                    ("x-tenant-id", first),
                    ("x-tenant-id", second),
                ],
                "",
            )
            .await
            .expect(400);
        assert_eq!(a.error_code(), "invalid_input");
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("X-Tenant-ID"),
            "{:?}",
            a.json()
        );
    }
    // Refused before the credential is even looked at.
    h.call(
        "GET",
        "/v1/tenant",
        &[("x-tenant-id", "acme"), ("x-tenant-id", "acme")],
        "",
    )
    .await
    .expect(400);
    // One is still fine.
    h.call(
        "GET",
        "/v1/tenant",
        &[("x-api-key", &secret), ("x-tenant-id", "acme")],
        "",
    )
    .await
    .expect(200);
}
