//! Router tests: named API keys (create, use, the role guard on every
//! tenant route, revocation and expiry on the next request, rotation with
//! grace, the checksum, Basic auth, limits shared by a tenant's keys).

use super::*;

/// Creates a key through the admin API; returns (id, secret).
async fn admin_key(h: &common::Harness, tenant: &str, name: &str, role: &str) -> (String, String) {
    let a = h
        .admin(
            "POST",
            &format!("/v1/tenants/{tenant}/keys"),
            json!({"name": name, "role": role}),
        )
        .await
        .expect(201);
    let v = a.json();
    (
        v["key"]["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

/// A concrete path for a route template (placeholders filled with valid values).
fn concrete(route: &str) -> String {
    route
        .replace("{*key}", "some/key")
        .replace("{key_id}", "key_0123456789abcdef")
        .replace("{key}", "stack:web:env:prod")
        .replace("{stack}", "web")
        .replace("{env}", "prod")
        .replace("{serial}", "1")
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
}

/// Whether a route of `ROUTES` is a tenant route (behind the tenant layer).
fn is_tenant_route(path: &str) -> bool {
    !path.starts_with("/v1/tenants") && !path.starts_with("/v1/admin") && path.starts_with("/v1/")
}

#[tokio::test]
async fn a_viewer_key_reads_and_every_write_route_refuses_it_naming_the_role() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({"plan": "enterprise"})).await;
    let (_, viewer) = admin_key(&h, "acme", "ci", "viewer").await;
    h.client(&secret)
        .put("/v1/state/app/config", json!({"a": 1}))
        .await
        .expect(200);
    // Reads work.
    h.client(&viewer)
        .get("/v1/state/app/config")
        .await
        .expect(200);
    h.client(&viewer).get("/v1/stacks").await.expect(200);
    h.client(&viewer).get("/v1/locks").await.expect(200);
    h.client(&viewer).get("/v1/tenant").await.expect(200);
    let a = h.client(&viewer).get("/v1/keys/current").await.expect(200);
    assert_eq!(a.json()["role"], "viewer");
    // Every route that is not a read needs more, and is refused before
    // its handler (whatever the body).
    let mut checked = 0;
    for (method, path) in tenancy_server::ROUTES {
        if !is_tenant_route(path) || *method == "GET" {
            continue;
        }
        if *path == "/v1/sessions" || *path == "/v1/sessions/current" {
            continue; // logging in and out are anyone's
        }
        let a = h
            .tenant(&viewer, method, &concrete(path), Value::Null)
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            a.json()
        );
        let message = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("needs the operator role") || message.contains("needs the owner role"),
            "{method} {path}: {message}"
        );
        assert!(message.contains("viewer"), "{message}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} write routes checked");
    // Nothing was written by the refused requests.
    let a = h
        .client(&secret)
        .get("/v1/state/app/config")
        .await
        .expect(200);
    assert_eq!(a.json(), json!({"a": 1}));
}

#[tokio::test]
async fn an_operator_writes_but_cannot_manage_keys_and_the_owner_can() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let (_, operator) = admin_key(&h, "acme", "deploy", "operator").await;
    h.client(&operator)
        .put("/v1/state/app/config", json!({"a": 1}))
        .await
        .expect(200);
    h.client(&operator)
        .post("/v1/locks/stack:web:env:prod", json!({"ttl_seconds": 30}))
        .await
        .expect(201);
    let a = h.client(&operator).get("/v1/keys").await.expect(403);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("needs the owner role"));
    h.client(&operator)
        .post("/v1/keys", json!({"name": "x", "role": "owner"}))
        .await
        .expect(403);
    // The primary secret is owner: it lists and creates keys.
    let a = h.client(&secret).get("/v1/keys").await.expect(200);
    let keys = a.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "deploy");
    assert_eq!(keys[0]["status"], "active");
    assert!(
        !String::from_utf8_lossy(&a.bytes).contains(&operator),
        "a listing shows a key"
    );
    assert!(
        !String::from_utf8_lossy(&a.bytes).contains("$2"),
        "a listing shows a hash"
    );
    let a = h
        .client(&secret)
        .post(
            "/v1/keys",
            json!({"name": "owner2", "role": "owner", "expires_in_seconds": 3600}),
        )
        .await
        .expect(201);
    let owner2 = a.json()["secret"].as_str().unwrap().to_string();
    h.client(&owner2).get("/v1/keys").await.expect(200);
    h.client(&secret).get("/v1/keys/current").await.expect(404);
}

#[tokio::test]
async fn revocation_applies_to_the_very_next_request_and_expiry_on_time() {
    let h = harness().await;
    h.create_tenant("acme", json!({})).await;
    let (id, key) = admin_key(&h, "acme", "ci", "viewer").await;
    h.client(&key).get("/v1/tenant").await.expect(200); // now cached
    h.admin(
        "DELETE",
        &format!("/v1/tenants/acme/keys/{id}"),
        Value::Null,
    )
    .await
    .expect(200);
    let a = h.client(&key).get("/v1/tenant").await.expect(401);
    assert_eq!(a.error_code(), "unauthorized");

    let a = h
        .admin(
            "POST",
            "/v1/tenants/acme/keys",
            json!({"name": "short", "role": "operator", "expires_in_seconds": 60}),
        )
        .await
        .expect(201);
    let short = a.json()["secret"].as_str().unwrap().to_string();
    h.client(&short).get("/v1/tenant").await.expect(200);
    h.clock.advance(Duration::from_secs(61));
    let a = h.client(&short).get("/v1/tenant").await.expect(401);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{:?}",
        a.json()
    );
}

#[tokio::test]
async fn a_rotated_key_works_through_its_grace_then_stops() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let (id, old) = admin_key(&h, "acme", "member", "operator").await;
    h.client(&old).get("/v1/tenant").await.expect(200);
    let a = h
        .client(&secret)
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 3600}),
        )
        .await
        .expect(201);
    let v = a.json();
    let new = v["secret"].as_str().unwrap().to_string();
    assert_eq!(v["key"]["name"], "member");
    assert_eq!(v["key"]["role"], "operator");
    assert_eq!(v["previous"]["rotated_to"], v["key"]["id"]);
    h.client(&new).get("/v1/tenant").await.expect(200);
    h.client(&old).get("/v1/tenant").await.expect(200);
    h.clock.advance(Duration::from_secs(3601));
    h.client(&old).get("/v1/tenant").await.expect(401);
    h.client(&new).get("/v1/tenant").await.expect(200);
}

#[tokio::test]
async fn a_mistyped_key_is_refused_by_its_checksum_before_any_read() {
    let h = harness().await;
    h.create_tenant("acme", json!({})).await;
    let (_, key) = admin_key(&h, "acme", "ci", "viewer").await;
    let mut typo: Vec<char> = key.chars().collect();
    let i = typo.len() - 10;
    typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
    let typo: String = typo.into_iter().collect();
    let before = h.state.auth().stats().verifications.load(Ordering::Relaxed);
    let a = h.client(&typo).get("/v1/tenant").await.expect(401);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("checksum"));
    let after = h.state.auth().stats().verifications.load(Ordering::Relaxed);
    assert_eq!(before, after, "a mistyped key reached the registry");
}

#[tokio::test]
async fn terraform_basic_auth_takes_a_key_as_the_password() {
    use base64::Engine as _;
    let h = harness().await;
    h.create_tenant("acme", json!({})).await;
    let (_, key) = admin_key(&h, "acme", "tf", "operator").await;
    let basic = |user: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"))
        )
    };
    let ok = basic("acme");
    h.call(
        "POST",
        "/v1/stacks/web/prod/state",
        &[("authorization", &ok)],
        r#"{"version":4,"serial":1}"#,
    )
    .await
    .expect(200);
    h.call(
        "GET",
        "/v1/stacks/web/prod/state",
        &[("authorization", &ok)],
        "",
    )
    .await
    .expect(200);
    let other = basic("beta");
    h.call(
        "GET",
        "/v1/stacks/web/prod/state",
        &[("authorization", &other)],
        "",
    )
    .await
    .expect(401);
}

#[tokio::test]
async fn two_keys_of_a_free_tenant_share_its_rate_not_double_it() {
    let h = harness().await;
    let secret = h
        .create_tenant(
            "acme",
            json!({"plan": "free", "limits": {"requests_per_second": 1, "burst": 4}}),
        )
        .await;
    let (_, a) = admin_key(&h, "acme", "a", "viewer").await;
    let (_, b) = admin_key(&h, "acme", "b", "viewer").await;
    for key in [&a, &b, &a, &b] {
        h.client(key).get("/v1/tenant").await.expect(200);
    }
    for key in [&a, &b, &secret] {
        let r = h.client(key).get("/v1/tenant").await.expect(429);
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("4"));
    }
}

#[tokio::test]
async fn bad_key_requests_are_refused_with_clear_errors_and_change_nothing() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    for body in [
        json!({"name": "", "role": "viewer"}),
        json!({"name": "has space", "role": "viewer"}),
        json!({"name": "ok", "role": "admin"}),
        json!({"name": "ok", "role": "viewer", "expires_in_seconds": 0}),
        json!({"name": "ok", "role": "viewer", "extra": 1}),
    ] {
        let a = h.client(&secret).post("/v1/keys", body.clone()).await;
        assert!(
            a.status == StatusCode::BAD_REQUEST || a.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            a.status
        );
    }
    h.client(&secret)
        .post("/v1/keys", json!({"name": "ci", "role": "viewer"}))
        .await
        .expect(201);
    let a = h
        .client(&secret)
        .post("/v1/keys", json!({"name": "ci", "role": "viewer"}))
        .await
        .expect(409);
    assert_eq!(a.error_code(), "already_exists");
    h.client(&secret)
        .delete("/v1/keys/not-a-key")
        .await
        .expect(400);
    h.client(&secret)
        .delete("/v1/keys/key_0123456789abcdef")
        .await
        .expect(404);
    let a = h.client(&secret).get("/v1/keys").await.expect(200);
    assert_eq!(a.json()["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn last_use_is_recorded_without_a_store_write_per_request() {
    let h = harness().await;
    h.create_tenant("acme", json!({"plan": "enterprise"})).await;
    let (_, key) = admin_key(&h, "acme", "ci", "viewer").await;
    let set = StateKey::new("registry-apikeys/acme.yaml").unwrap();
    let before = h.backend.get(&set).await.unwrap().unwrap().version;
    h.client(&key).get("/v1/tenant").await.expect(200);
    // The mark is written in its own task: wait for it.
    let mut marked = None;
    for _ in 0..200 {
        let a = h
            .admin("GET", "/v1/tenants/acme/keys", Value::Null)
            .await
            .expect(200);
        if let Some(at) = a.json()["keys"][0]["last_used_at"].as_str() {
            marked = Some(at.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(marked.is_some(), "the first use was never recorded");
    let after_first = h.backend.get(&set).await.unwrap().unwrap().version;
    assert_ne!(before, after_first, "the first use wrote the mark");
    for _ in 0..50 {
        h.client(&key).get("/v1/tenant").await.expect(200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_many = h.backend.get(&set).await.unwrap().unwrap().version;
    assert_eq!(
        after_first, after_many,
        "50 more uses within a minute wrote the key set"
    );
}
