//! Router tests: limits and metrics.

use super::*;

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
        .await; // malformed: refused before the registry
    assert_eq!(
        h.call("GET", "/metrics", &[], "").await.status,
        StatusCode::NOT_FOUND,
        "the public router serves no metrics"
    );
    let text = h.metrics().await;
    assert!(text.contains("tenancy_tenants 2"), "{text}");
    assert!(text.contains("tenancy_tenants_active 1"), "{text}");
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
        text.contains("tenancy_auth_registry_checks_total 1"),
        "{text}"
    );

    // Later scrapes re-count in the background and show the new count soon.
    h.create_tenant("gamma", json!({})).await;
    let mut seen = false;
    for _ in 0..200 {
        assert_eq!(
            h.call("GET", "/metrics", &[], "").await.status,
            StatusCode::NOT_FOUND,
            "the public router serves no metrics"
        );
        let text = h.metrics().await;
        if text.contains("tenancy_tenants 3") {
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
    h.client(&key).get("/v1/tenant").await.expect(200);
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
        .call("GET", "/v1/state/apps/x", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.error_code(), "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at the timeout, not after the read"
    );
}
