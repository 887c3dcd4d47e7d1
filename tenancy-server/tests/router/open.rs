//! Router tests: open routes.

use super::*;

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
    // OpenAPI has no custom methods: LOCK and UNLOCK are documented as the
    // POST and DELETE the same routes also accept.
    let mut routes: Vec<(String, String)> = tenancy_server::ROUTES
        .iter()
        .map(|(m, p)| {
            let m = match *m {
                "LOCK" => "POST",
                "UNLOCK" => "DELETE",
                m => m,
            };
            (m.to_string(), p.replace("{*key}", "{key}"))
        })
        .collect();
    routes.sort();
    routes.dedup();
    assert_eq!(documented, routes);
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}
