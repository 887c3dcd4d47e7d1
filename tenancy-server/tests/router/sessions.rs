//! Router tests: server-issued sessions (login, use, logout, revocation,
//! and what ends them: rotation, suspension, deletion, an admin credential
//! change, expiry), on one replica and across two.

use super::*;

/// `POST /v1/sessions` with the secret: the token and its session view.
async fn login(h: &common::Harness, secret: &str) -> (String, Value) {
    let a = h
        .tenant(secret, "POST", "/v1/sessions", Value::Null)
        .await
        .expect(201);
    let v = a.json();
    let token = v["token"].as_str().unwrap().to_string();
    (token, v["session"].clone())
}

async fn bearer(h: &common::Harness, token: &str, method: &str, uri: &str) -> common::Answer {
    let auth = format!("Bearer {token}");
    h.call(method, uri, &[("authorization", &auth)], "").await
}

#[tokio::test]
async fn a_tenant_session_works_until_logout_and_never_shows_its_token_again() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let (token, session) = login(&h, &secret).await;
    assert!(token.starts_with("tns_acme_"), "{token}");
    assert_eq!(session["kind"], "tenant");
    assert_eq!(session["tenant"], "acme");
    assert_eq!(session["generation"], 1);
    assert_eq!(session["current"], true);
    let id = session["id"].as_str().unwrap().to_string();

    // The token works wherever the secret does.
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(200);
    assert_eq!(a.json()["id"], "acme");
    let a = h.tenant(&token, "GET", "/v1/locks", Value::Null).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "X-API-Key takes a session token too"
    );
    let a = bearer(&h, &token, "GET", "/v1/sessions/current")
        .await
        .expect(200);
    assert_eq!(a.json()["id"], id.as_str());
    assert!(!String::from_utf8_lossy(&a.bytes).contains(&token));

    // Listed (never with the token), by the tenant and by the admin.
    let (other, _) = login(&h, &secret).await;
    let a = bearer(&h, &token, "GET", "/v1/sessions").await.expect(200);
    let listed = a.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    assert!(!String::from_utf8_lossy(&a.bytes).contains("tns_"));
    assert_eq!(
        listed.iter().filter(|s| s["current"] == true).count(),
        1,
        "the caller's own is marked"
    );
    let a = h
        .admin("GET", "/v1/tenants/acme/sessions", Value::Null)
        .await
        .expect(200);
    assert_eq!(a.json()["sessions"].as_array().unwrap().len(), 2);

    // A session cannot open another; the secret's requests have no current one.
    let a = bearer(&h, &token, "POST", "/v1/sessions").await.expect(403);
    assert_eq!(a.error_code(), "forbidden");
    h.tenant(&secret, "GET", "/v1/sessions/current", Value::Null)
        .await
        .expect(404);
    h.tenant(&secret, "DELETE", "/v1/sessions/current", Value::Null)
        .await
        .expect(404);

    // Logout ends this session only, on the very next request.
    bearer(&h, &token, "DELETE", "/v1/sessions/current")
        .await
        .expect(204);
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(401);
    assert_eq!(a.error_code(), "unauthorized");
    assert!(!String::from_utf8_lossy(&a.bytes).contains(&token));
    bearer(&h, &other, "GET", "/v1/tenant").await.expect(200);

    // Revocation by id, by the tenant and by the admin; twice is a 404.
    let (third, s3) = login(&h, &secret).await;
    let uri = format!("/v1/sessions/{}", s3["id"].as_str().unwrap());
    bearer(&h, &other, "DELETE", &uri).await.expect(204);
    bearer(&h, &other, "DELETE", &uri).await.expect(404);
    bearer(&h, &third, "GET", "/v1/tenant").await.expect(401);
    let a = bearer(&h, &other, "GET", "/v1/sessions/current")
        .await
        .expect(200);
    let uri = format!(
        "/v1/tenants/acme/sessions/{}",
        a.json()["id"].as_str().unwrap()
    );
    h.admin("DELETE", &uri, Value::Null).await.expect(204);
    bearer(&h, &other, "GET", "/v1/tenant").await.expect(401);
    h.admin("DELETE", "/v1/tenants/acme/sessions/nope", Value::Null)
        .await
        .expect(400);

    // Junk shaped like a token is refused without a session behind it.
    let fake = format!("tns_acme_{}", "A".repeat(32));
    bearer(&h, &fake, "GET", "/v1/tenant").await.expect(401);
    // Another tenant cannot revoke acme's sessions: its path names its own.
    let globex = h.create_tenant("globex", json!({})).await;
    let (_, acme_session) = login(&h, &secret).await;
    let uri = format!("/v1/sessions/{}", acme_session["id"].as_str().unwrap());
    h.tenant(&globex, "DELETE", &uri, Value::Null)
        .await
        .expect(404);
}

#[tokio::test]
async fn rotation_suspension_and_deletion_end_tenant_sessions_at_once() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let (token, _) = login(&h, &secret).await;
    bearer(&h, &token, "GET", "/v1/tenant").await.expect(200);

    h.admin("POST", "/v1/tenants/acme/suspend", Value::Null)
        .await
        .expect(200);
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(403);
    assert_eq!(a.error_code(), "forbidden");
    h.tenant(&secret, "POST", "/v1/sessions", Value::Null)
        .await
        .expect(403);
    h.admin("POST", "/v1/tenants/acme/activate", Value::Null)
        .await
        .expect(200);
    bearer(&h, &token, "GET", "/v1/tenant").await.expect(200);

    let a = h
        .admin("POST", "/v1/tenants/acme/rotate", Value::Null)
        .await
        .expect(200);
    let rotated = a.json()["secret"].as_str().unwrap().to_string();
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(401);
    assert_eq!(a.error_code(), "credentials_rotated");
    h.tenant(&secret, "POST", "/v1/sessions", Value::Null)
        .await
        .expect(401);
    let (fresh, _) = login(&h, &rotated).await;
    bearer(&h, &fresh, "GET", "/v1/tenant").await.expect(200);

    h.admin("DELETE", "/v1/tenants/acme", Value::Null)
        .await
        .expect(200);
    let a = bearer(&h, &fresh, "GET", "/v1/tenant").await.expect(403);
    assert_eq!(a.error_code(), "forbidden");
}

#[tokio::test]
async fn a_cold_replica_sees_rotation_and_expiry_of_a_session() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let (token, _) = login(&h, &secret).await;
    // Expiry on the manual clock: 7 days.
    h.clock
        .advance(tenancy_core::session::TENANT_SESSION_TTL - Duration::from_secs(1));
    bearer(&h, &token, "GET", "/v1/tenant").await.expect(200);
    h.clock.advance(Duration::from_secs(1));
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(401);
    assert_eq!(a.error_code(), "session_expired");
    assert!(a.json()["error"]["expired_at"].is_string());

    // A session checked cold (never cached here) after a rotation made
    // directly on the store (as the CLI would) says it was rotated.
    let (token, _) = login(&h, &secret).await;
    let other = harness_on(h.backend.clone(), ServerConfig::default(), false).await;
    other.clock.set(h.clock.now());
    let id = tenancy_core::TenantId::new("acme").unwrap();
    let direct = tenancy_state::StoreRegistry::new(h.backend.clone())
        .with_bcrypt_cost(4)
        .with_clock(Arc::new(other.clock.clone()));
    tenancy_core::TenantRegistry::rotate(&direct, &id)
        .await
        .unwrap();
    let a = bearer(&other, &token, "GET", "/v1/tenant")
        .await
        .expect(401);
    assert_eq!(a.error_code(), "credentials_rotated");
}

#[tokio::test]
async fn admin_sessions_work_on_admin_routes_only_and_end_with_the_credential() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let a = h
        .admin("POST", "/v1/admin/sessions", Value::Null)
        .await
        .expect(201);
    let token = a.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tns_admin_"), "{token}");
    assert_eq!(a.json()["session"]["kind"], "admin");

    bearer(&h, &token, "GET", "/v1/tenants").await.expect(200);
    let a = bearer(&h, &token, "GET", "/v1/admin/sessions/current")
        .await
        .expect(200);
    assert_eq!(a.json()["kind"], "admin");
    let a = bearer(&h, &token, "GET", "/v1/admin/sessions")
        .await
        .expect(200);
    assert_eq!(a.json()["sessions"].as_array().unwrap().len(), 1);
    // A session cannot open another; the credential's requests have no current one.
    bearer(&h, &token, "POST", "/v1/admin/sessions")
        .await
        .expect(403);
    h.admin("GET", "/v1/admin/sessions/current", Value::Null)
        .await
        .expect(404);

    // Admin and tenant sessions do not mix (403 both ways).
    let a = bearer(&h, &token, "GET", "/v1/tenant").await.expect(403);
    assert_eq!(a.error_code(), "forbidden");
    let (tenant_token, _) = login(&h, &secret).await;
    bearer(&h, &tenant_token, "GET", "/v1/tenants")
        .await
        .expect(403);

    // Logout.
    bearer(&h, &token, "DELETE", "/v1/admin/sessions/current")
        .await
        .expect(204);
    bearer(&h, &token, "GET", "/v1/tenants").await.expect(401);

    // A credential change ends every admin session at once.
    let a = h
        .admin("POST", "/v1/admin/sessions", Value::Null)
        .await
        .expect(201);
    let token = a.json()["token"].as_str().unwrap().to_string();
    bearer(&h, &token, "GET", "/v1/tenants").await.expect(200);
    let body = serde_json::to_vec(&json!({"token": "a-brand-new-admin-token"})).unwrap();
    let auth = format!("Bearer {token}");
    h.call(
        "PUT",
        "/v1/admin/credential",
        &[("authorization", &auth)],
        body,
    )
    .await
    .expect(200);
    let a = bearer(&h, &token, "GET", "/v1/tenants").await.expect(401);
    assert_eq!(a.error_code(), "credentials_rotated");

    // Admin sessions expire after 8 hours.
    let fresh = bearer(&h, "a-brand-new-admin-token", "POST", "/v1/admin/sessions")
        .await
        .expect(201);
    let token = fresh.json()["token"].as_str().unwrap().to_string();
    h.clock
        .advance(tenancy_core::session::ADMIN_SESSION_TTL + Duration::from_secs(1));
    let a = bearer(&h, &token, "GET", "/v1/tenants").await.expect(401);
    assert_eq!(a.error_code(), "session_expired");
}

#[tokio::test]
async fn a_session_revoked_on_one_replica_is_refused_by_another_within_the_refresh_interval() {
    let refresh = Duration::from_secs(1);
    let config = || ServerConfig {
        auth: AuthConfig {
            refresh_interval: refresh,
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    };
    let a = harness_with(config()).await;
    let b = harness_on(a.backend.clone(), config(), false).await;
    b.clock.set(a.clock.now());
    let secret = a.create_tenant("acme", json!({})).await;
    let (token, _) = login(&a, &secret).await;
    // Both replicas have the session cached.
    bearer(&a, &token, "GET", "/v1/tenant").await.expect(200);
    bearer(&b, &token, "GET", "/v1/tenant").await.expect(200);
    let admin_token = a
        .admin("POST", "/v1/admin/sessions", Value::Null)
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    bearer(&b, &admin_token, "GET", "/v1/tenants")
        .await
        .expect(200);

    // Revoked through A: A refuses at once; B within the refresh interval.
    bearer(&a, &token, "DELETE", "/v1/sessions/current")
        .await
        .expect(204);
    bearer(&a, &admin_token, "DELETE", "/v1/admin/sessions/current")
        .await
        .expect(204);
    bearer(&a, &token, "GET", "/v1/tenant").await.expect(401);
    let started = std::time::Instant::now();
    let refused = loop {
        let t = bearer(&b, &token, "GET", "/v1/tenant").await;
        let adm = bearer(&b, &admin_token, "GET", "/v1/tenants").await;
        if t.status == StatusCode::UNAUTHORIZED && adm.status == StatusCode::UNAUTHORIZED {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < refresh * 3,
            "replica B still honours a revoked session after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused <= refresh + Duration::from_millis(500),
        "{refused:?}"
    );
}
