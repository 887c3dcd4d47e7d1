//! Router tests: the audit trail. Admin changes name the admin and the
//! request id; refused logins that never reach a handler are recorded;
//! stack rollback, delete and force-unlock are recorded as the tenant;
//! `GET /v1/tenant/audit` is the tenant's own log, for the owner role only;
//! head and verify agree with the chain.

use super::*;
use tenancy_core::{NewApiKey, Role, TenantId, TenantRegistry};

fn entries(a: &common::Answer) -> Vec<Value> {
    a.json()["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn changes_are_recorded_with_who_and_the_request_id() {
    let h = harness().await;
    let bearer = format!("Bearer {ADMIN}");
    let body = serde_json::to_vec(&json!({ "id": "acme" })).unwrap();
    h.call(
        "POST",
        "/v1/tenants",
        &[("authorization", &bearer), ("x-request-id", "req-audit-1")],
        body,
    )
    .await
    .expect(201);
    let a = h
        .admin("GET", "/v1/audit?tenant=acme", Value::Null)
        .await
        .expect(200);
    assert_eq!(a.json()["tenant"], "acme");
    let e = entries(&a);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0]["action"], "tenant.create");
    assert_eq!(e[0]["target"], "tenant acme");
    assert_eq!(e[0]["actor"]["kind"], "admin");
    assert_eq!(e[0]["via"], "server");
    assert_eq!(e[0]["request_id"], "req-audit-1");
    assert_eq!(e[0]["outcome"], "ok");

    // Filters: by action (exact or prefix) and time.
    h.admin(
        "POST",
        "/v1/tenants/acme/suspend",
        json!({"reason": "unpaid"}),
    )
    .await
    .expect(200);
    let all = entries(
        &h.admin("GET", "/v1/audit?tenant=acme&action=tenant.", Value::Null)
            .await,
    );
    assert_eq!(all.len(), 2);
    let one = entries(
        &h.admin(
            "GET",
            "/v1/audit?tenant=acme&action=tenant.suspend",
            Value::Null,
        )
        .await,
    );
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["detail"]["reason"], "unpaid");
    let newest = h
        .admin("GET", "/v1/audit?tenant=acme&limit=1", Value::Null)
        .await
        .expect(200);
    assert_eq!(newest.json()["truncated"], true);
    assert_eq!(entries(&newest)[0]["action"], "tenant.suspend");
    let later = entries(
        &h.admin(
            "GET",
            "/v1/audit?tenant=acme&since=2999-01-01T00:00:00Z",
            Value::Null,
        )
        .await,
    );
    assert!(later.is_empty());
    h.admin("GET", "/v1/audit?since=yesterday", Value::Null)
        .await
        .expect(400);
    h.admin("GET", "/v1/audit?action=Tenant%20Create", Value::Null)
        .await
        .expect(400);

    // Head and verify agree with the chain.
    let head = h
        .admin("GET", "/v1/audit/head?tenant=acme", Value::Null)
        .await
        .expect(200);
    let head = head.json()["head"].as_str().unwrap().to_string();
    assert!(head.starts_with("2:"), "{head}");
    let v = h
        .admin(
            "GET",
            &format!("/v1/audit/verify?tenant=acme&head={head}"),
            Value::Null,
        )
        .await
        .expect(200);
    assert_eq!(v.json()["intact"], true, "{}", v.json());
    assert_eq!(v.json()["entries"], 2);
    let wrong = format!("2:{}", "0".repeat(64));
    let v = h
        .admin(
            "GET",
            &format!("/v1/audit/verify?tenant=acme&head={wrong}"),
            Value::Null,
        )
        .await
        .expect(200);
    assert_eq!(v.json()["intact"], false);
    assert_eq!(v.json()["problems"][0]["kind"], "rewritten");
}

#[tokio::test]
async fn refused_logins_are_recorded_where_they_are_refused() {
    let h = harness().await;
    h.create_tenant("acme", json!({})).await;
    // The tenant layer refuses a wrong secret before any handler.
    let body = serde_json::to_vec(&json!({ "tenant": "acme" })).unwrap();
    h.call(
        "POST",
        "/v1/sessions",
        &[
            ("x-api-key", "tnc_wrong"),
            ("x-request-id", "req-bad-login"),
        ],
        body,
    )
    .await
    .expect(401);
    let e = entries(
        &h.admin(
            "GET",
            "/v1/audit?tenant=acme&action=session.login",
            Value::Null,
        )
        .await,
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0]["outcome"], "refused");
    assert_eq!(e[0]["actor"]["kind"], "anonymous");
    assert_eq!(e[0]["request_id"], "req-bad-login");
    assert_eq!(e[0]["detail"]["failures"], 1);
    // A flood within the minute is counted, not written.
    for _ in 0..5 {
        let body = serde_json::to_vec(&json!({ "tenant": "acme" })).unwrap();
        h.call("POST", "/v1/sessions", &[("x-api-key", "tnc_wrong")], body)
            .await
            .expect(401);
    }
    let e = entries(
        &h.admin(
            "GET",
            "/v1/audit?tenant=acme&action=session.login",
            Value::Null,
        )
        .await,
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    // A login naming no tenant that exists goes to the admin log.
    let body = serde_json::to_vec(&json!({ "tenant": "nobody" })).unwrap();
    h.call("POST", "/v1/sessions", &[("x-api-key", "tnc_wrong")], body)
        .await
        .expect(401);
    // The admin guard refuses a wrong admin token at the admin login.
    h.call(
        "POST",
        "/v1/admin/sessions",
        &[("authorization", "Bearer not-the-admin-token")],
        "",
    )
    .await
    .expect(401);
    let admin_log = entries(&h.admin("GET", "/v1/audit", Value::Null).await);
    let targets: Vec<(&str, &str)> = admin_log
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [("an unknown tenant", "refused"), ("admin", "refused")],
        "{admin_log:#?}"
    );
    assert_eq!(admin_log[0]["detail"]["tenant"], "nobody");
    // A refused admin token elsewhere is no login.
    h.call(
        "GET",
        "/v1/tenants",
        &[("authorization", "Bearer not-the-admin-token")],
        "",
    )
    .await
    .expect(401);
    assert_eq!(
        entries(&h.admin("GET", "/v1/audit", Value::Null).await).len(),
        2
    );
    // A login that works is recorded with its session.
    let secret = h.create_tenant("beta", json!({})).await;
    let s = h
        .tenant(&secret, "POST", "/v1/sessions", Value::Null)
        .await
        .expect(201);
    let session = s.json()["session"]["id"].as_str().unwrap().to_string();
    let e = entries(
        &h.admin("GET", "/v1/audit?tenant=beta&action=session.", Value::Null)
            .await,
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0]["outcome"], "ok");
    assert_eq!(e[0]["detail"]["session"], session.as_str());
    assert!(!e[0].to_string().contains(&secret));
    // Logout with it: its own session.
    let token = s.json()["token"].as_str().unwrap().to_string();
    h.tenant(&token, "DELETE", "/v1/sessions/current", Value::Null)
        .await
        .expect(204);
    let e = entries(
        &h.admin("GET", "/v1/audit?tenant=beta&action=session.", Value::Null)
            .await,
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[1]["action"], "session.logout");
    assert_eq!(e[1]["actor"]["session"], session.as_str());
    assert!(!e.iter().any(|x| x.to_string().contains(&token)));
}

#[tokio::test]
async fn stack_rollback_delete_and_force_unlock_are_recorded() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let key = [("x-api-key", secret.as_str())];
    for serial in [1, 2] {
        let doc = serde_json::to_vec(&json!({"version": 4, "serial": serial})).unwrap();
        h.call("POST", "/v1/stacks/web/prod/state", &key, doc)
            .await
            .expect(200);
    }
    let body = serde_json::to_vec(&json!({"to": 1})).unwrap();
    h.call("POST", "/v1/stacks/web/prod/rollback", &key, body)
        .await
        .expect(200);
    h.call("DELETE", "/v1/stacks/web/prod/state", &key, "")
        .await
        .expect(200);
    let lock = serde_json::to_vec(&json!({"ID": "6f1c4a38-8a3c-4d41-9a3e-1b2f3c4d5e6f"})).unwrap();
    h.call("LOCK", "/v1/stacks/web/prod/lock", &key, lock)
        .await
        .expect(200);
    h.admin(
        "DELETE",
        "/v1/tenants/acme/stacks/web/prod/lock",
        Value::Null,
    )
    .await
    .expect(200);
    let e = entries(&h.admin("GET", "/v1/audit?tenant=acme", Value::Null).await);
    let got: Vec<(&str, &str, &str)> = e
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["kind"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("tenant.create", "admin", "tenant acme"),
            ("stack.rollback", "tenant", "stack web/prod"),
            ("stack.delete", "tenant", "stack web/prod"),
            ("lock.force_unlock", "admin", "lock stack:web:env:prod"),
        ],
        "{e:#?}"
    );
    assert_eq!(e[1]["detail"]["to"], 1);
    assert_eq!(e[3]["detail"]["holder"], "acme");
}

#[tokio::test]
async fn a_tenant_reads_its_own_log_with_the_owner_role_only() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    h.create_tenant("beta", json!({})).await;
    let own = h
        .tenant(&secret, "GET", "/v1/tenant/audit", Value::Null)
        .await
        .expect(200);
    assert_eq!(own.json()["tenant"], "acme");
    let e = entries(&own);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["target"], "tenant acme", "only acme's own log");
    // No credential: 401.
    h.call("GET", "/v1/tenant/audit", &[], "").await.expect(401);
    // A viewer key of the tenant: 403 naming the role.
    let viewer = h
        .state
        .registry()
        .create_key(
            &TenantId::new("acme").unwrap(),
            NewApiKey {
                name: "ci".into(),
                role: Role::Viewer,
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let refused = h
        .tenant(
            viewer.secret.expose(),
            "GET",
            "/v1/tenant/audit",
            Value::Null,
        )
        .await
        .expect(403);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("owner"),
        "{}",
        refused.json()
    );
    // The admin routes are the admin's.
    h.tenant(&secret, "GET", "/v1/audit", Value::Null)
        .await
        .expect(401);
}
