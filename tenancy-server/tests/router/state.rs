//! Router tests: state.

use super::*;

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
            h.call("PUT", "/v1/state/apps/web/prod/state.json", &hs, body)
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
            "/v1/state/apps/web/prod/state.json",
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
            "/v1/state/apps/web/prod/state.json",
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
        "/v1/state/apps/api/prod/state.json",
        &[("x-api-key", &key)],
        "x",
    )
    .await;
    let a = h
        .call(
            "GET",
            "/v1/state?prefix=apps/web",
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
    assert_eq!(keys, ["apps/web/prod/state.json"]);
    let a = h
        .call("GET", "/v1/state?limit=1", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(a.json()["keys"].as_array().unwrap().len(), 1);
    assert_eq!(a.json()["truncated"], true);

    let a = h
        .call(
            "DELETE",
            "/v1/state/apps/web/prod/state.json",
            &[("x-api-key", &key), ("if-match", &etag1)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = h
        .call(
            "DELETE",
            "/v1/state/apps/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .call(
            "GET",
            "/v1/state/apps/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    let a = h
        .call(
            "DELETE",
            "/v1/state/apps/web/prod/state.json",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Stored under the tenant's own prefix.
    let raw = StateKey::new("tenants/acme/v1/apps/api/prod/state.json").unwrap();
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

/// Stack state is written only through the stack routes (which check the
/// stack's lock, fencing and `max_stacks`): the state API refuses a write
/// or delete under `stacks/` or `stack-quota/` and writes nothing, and
/// reads what the stack routes saved.
async fn stack_state_is_written_only_through_the_stack_routes(backend: Arc<dyn StateBackend>) {
    use tenancy_state::stack::StackStore;
    use tenancy_state::TenantScoped;
    let h = harness_on(backend.clone(), ServerConfig::default(), true).await;
    let key = h
        .create_tenant("acme", json!({"limits": {"max_stacks": 1}}))
        .await;
    let auth = [("x-api-key", key.as_str())];
    let doc = "{\"version\":4,\"serial\":3,\"resources\":[]}";
    for path in [
        "/v1/state/stacks/web/prod/state.json",
        "/v1/state/stacks/web/prod/history/1.json",
        "/v1/state/stack-quota/other",
    ] {
        let a = h.call("PUT", path, &auth, doc).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            String::from_utf8_lossy(&a.bytes)
        );
        assert!(
            String::from_utf8_lossy(&a.bytes).contains("/v1/stacks/"),
            "{path}: {}",
            String::from_utf8_lossy(&a.bytes)
        );
    }
    let acme = tenancy_core::TenantRegistry::get(
        h.state.registry().as_ref(),
        &tenancy_core::TenantId::new("acme").unwrap(),
    )
    .await
    .unwrap();
    let stacks = StackStore::new(TenantScoped::for_tenant(backend, &acme).unwrap());
    assert_eq!(stacks.stacks().await.unwrap(), []);
    // Saved through the stack routes: readable, not deletable, through the state API.
    let a = h
        .call("POST", "/v1/stacks/web/prod/state", &auth, doc)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.bytes)
    );
    let a = h.call("GET", "/v1/state?prefix=stacks", &auth, "").await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.bytes)
    );
    assert!(String::from_utf8_lossy(&a.bytes).contains("stacks/web/prod/state.json"));
    for path in [
        "/v1/state/stacks/web/prod/state.json",
        "/v1/state/stack-quota/web",
    ] {
        let a = h.call("DELETE", path, &auth, "").await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            String::from_utf8_lossy(&a.bytes)
        );
    }
    let cur = stacks.current("web", "prod").await.unwrap().unwrap();
    assert_eq!(cur.document["resources"], json!([]));
    // The quota still holds: a second stack is refused.
    let a = h
        .call("POST", "/v1/stacks/api/prod/state", &auth, doc)
        .await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&a.bytes)
    );
}

#[tokio::test]
async fn stack_state_is_written_only_through_the_stack_routes_on_memory() {
    stack_state_is_written_only_through_the_stack_routes(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test]
async fn stack_state_is_written_only_through_the_stack_routes_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    stack_state_is_written_only_through_the_stack_routes(Arc::new(
        tenancy_state::LocalBackend::open(dir.path()).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_state_is_written_only_through_the_stack_routes_on_s3() {
    let Some(b) = tenancy_state::testing::s3_backend_or_skip(
        "router::state::stack_state_is_written_only_through_the_stack_routes_on_s3",
    )
    .await
    else {
        return;
    };
    stack_state_is_written_only_through_the_stack_routes(b).await;
}

#[tokio::test]
async fn state_bytes_and_objects_are_bounded_and_counted_exactly() {
    for store in common::stores("state_bytes_and_objects_are_bounded").await {
        let name = store.name;
        let h = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
        let free = h.create_tenant("noisy", json!({})).await;
        let me = h.client(&free).get("/v1/tenant").await.expect(200).json();
        assert_eq!(me["limits"]["max_state_bytes"], 10 * 1024 * 1024, "{name}");
        assert_eq!(me["limits"]["max_state_objects"], 100, "{name}");
        let key = h
            .create_tenant(
                "small",
                json!({"limits": {"max_state_bytes": 100, "max_state_objects": 2}}),
            )
            .await;
        let put = |k: &'static str, n: usize| {
            let key = key.clone();
            let h = &h;
            async move {
                h.call(
                    "PUT",
                    &format!("/v1/state/{k}"),
                    &[("x-api-key", &key)],
                    vec![b'x'; n],
                )
                .await
            }
        };
        let usage = || async {
            let u = h.client(&key).get("/v1/tenant").await.expect(200).json();
            (
                u["usage"]["state_bytes"].as_u64().unwrap(),
                u["usage"]["state_objects"].as_u64().unwrap(),
            )
        };
        let refused = |a: common::Answer, resource: &str| {
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{name}");
            assert_eq!(a.error_code(), "quota_exceeded", "{name}");
            let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains(resource), "{name}: {msg}");
        };
        put("a", 40).await.expect(200);
        put("b", 50).await.expect(200);
        assert_eq!(usage().await, (90, 2), "{name}");
        // a third object: refused, nothing stored
        refused(put("c", 1).await, "state_objects");
        h.client(&key).get("/v1/state/c").await.expect(404);
        // growing a past the bytes limit: refused, a unchanged
        refused(put("a", 60).await, "state_bytes");
        let a = h.client(&key).get("/v1/state/a").await.expect(200);
        assert_eq!(a.bytes.len(), 40, "{name}");
        assert_eq!(
            usage().await,
            (90, 2),
            "{name}: refused writes take nothing"
        );
        // overwrites count the difference, deletes give back
        put("a", 10).await.expect(200);
        assert_eq!(usage().await, (60, 2), "{name}");
        put("b", 50).await.expect(200);
        assert_eq!(usage().await, (60, 2), "{name}");
        h.client(&key).delete("/v1/state/b").await.expect(204);
        assert_eq!(usage().await, (10, 1), "{name}");
        put("c", 90).await.expect(200);
        assert_eq!(usage().await, (100, 2), "{name}");
        refused(put("a", 11).await, "state_bytes");
        assert_eq!(usage().await, (100, 2), "{name}");
    }
}
