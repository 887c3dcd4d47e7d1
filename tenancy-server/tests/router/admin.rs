//! Router tests: admin.

use super::*;

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

#[tokio::test]
async fn the_one_admin_credential_changes_and_old_tokens_stop_on_every_replica() {
    let h = harness().await;
    // A second replica on the same store, its cache warm with the old token.
    let other = harness_on(h.backend.clone(), ServerConfig::default(), false).await;
    let old = format!("Bearer {ADMIN}");
    for r in [&h, &other] {
        let a = r
            .call("GET", "/v1/tenants", &[("authorization", &old)], "")
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    for bad in ["short", &"x".repeat(73)] {
        let a = h
            .admin("PUT", "/v1/admin/credential", json!({ "token": bad }))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let new72 = "n".repeat(72);
    let a = h
        .admin("PUT", "/v1/admin/credential", json!({ "token": new72 }))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["generation"], 2);
    for r in [&h, &other] {
        let a = r
            .call("GET", "/v1/tenants", &[("authorization", &old)], "")
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "the old token stopped");
        let new = format!("Bearer {new72}");
        let a = r
            .call("GET", "/v1/tenants", &[("authorization", &new)], "")
            .await;
        assert_eq!(a.status, StatusCode::OK, "the new token works");
        // A longer token sharing its first 72 bytes is refused, never cut.
        let longer = format!("Bearer {new72}zzz");
        let a = r
            .call("GET", "/v1/tenants", &[("authorization", &longer)], "")
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "117-byte prefix trick");
    }
}

#[tokio::test]
async fn patching_a_deleted_tenant_is_a_conflict_not_a_failed_precondition() {
    for store in common::stores("patching_a_deleted_tenant").await {
        let h = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
        h.create_tenant("acme", json!({})).await;
        let deleted = h
            .admin("DELETE", "/v1/tenants/acme", Value::Null)
            .await
            .expect(200)
            .json();
        let rev = deleted["revision"].as_u64().unwrap();
        for body in [
            json!({"plan": "pro"}),
            json!({"plan": "pro", "expected_revision": rev}),
            json!({"plan": "pro", "expected_revision": rev + 7}),
        ] {
            let a = h.admin("PATCH", "/v1/tenants/acme", body.clone()).await;
            assert_eq!(a.status, StatusCode::CONFLICT, "{}: {body}", store.name);
            assert_eq!(a.error_code(), "conflict");
            let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains("deleted"), "{}: {msg}", store.name);
        }
        let now = h
            .admin("GET", "/v1/tenants/acme", Value::Null)
            .await
            .expect(200);
        assert_eq!(now.json()["status"], "deleted");
        assert_eq!(
            now.json()["plan"],
            "free",
            "{}: nothing changed",
            store.name
        );
        assert_eq!(now.json()["revision"], rev);
        // A stale revision of a live tenant is still the client's failed precondition.
        h.create_tenant("beta", json!({})).await;
        let a = h
            .admin(
                "PATCH",
                "/v1/tenants/beta",
                json!({"expected_revision": 99}),
            )
            .await;
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "{}", store.name);
    }
}

#[tokio::test]
async fn reservations_purge_and_the_credential_generation_over_the_admin_api() {
    let h = harness().await;
    h.create_tenant("acme", json!({})).await;
    let a = h
        .admin("GET", "/v1/admin/credential", Value::Null)
        .await
        .expect(200);
    assert_eq!(a.json()["generation"], 1);

    let r = h
        .admin(
            "POST",
            "/v1/tenants/acme/reservations",
            json!({"resource": "concurrent_jobs", "amount": 2}),
        )
        .await
        .expect(201)
        .json();
    let rid = r["id"].as_str().unwrap().to_string();
    let listed = h
        .admin("GET", "/v1/tenants/acme/reservations", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(listed["reservations"][0]["committed"], false);
    // The body must be the reservation the path names.
    let other = format!(
        "/v1/tenants/acme/reservations/{}/commit",
        uuid::Uuid::new_v4()
    );
    h.admin("POST", &other, json!({"reservation": r}))
        .await
        .expect(400);
    let commit = format!("/v1/tenants/acme/reservations/{rid}/commit");
    h.admin("POST", &commit, json!({"reservation": r}))
        .await
        .expect(204);
    h.admin("POST", &commit, json!({"reservation": r}))
        .await
        .expect(412);
    let release = format!("/v1/tenants/acme/reservations/{rid}/release");
    let a = h
        .admin(
            "POST",
            &release,
            json!({"reservation": r, "event": "job_completed"}),
        )
        .await
        .expect(200);
    assert_eq!(a.json()["released"], true);
    let a = h
        .admin(
            "POST",
            &release,
            json!({"reservation": r, "event": "job_completed"}),
        )
        .await
        .expect(200);
    assert_eq!(a.json()["released"], false, "an outcome is counted once");
    let u = h
        .admin(
            "POST",
            "/v1/tenants/acme/usage",
            json!({"event": {"cost": 5}}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        (
            u["jobs_active"].clone(),
            u["jobs_completed"].clone(),
            u["cost_this_month"].clone()
        ),
        (json!(0), json!(1), json!(5))
    );
    h.admin(
        "POST",
        "/v1/tenants/acme/reservations",
        json!({"resource": "concurrent_jobs", "amount": 99}),
    )
    .await
    .expect(429);

    // Purge: only a deleted tenant's archive.
    let purge = json!({"grace_seconds": 0});
    h.admin("POST", "/v1/tenants/acme/purge", purge.clone())
        .await
        .expect(409);
    h.admin("DELETE", "/v1/tenants/acme", Value::Null)
        .await
        .expect(200);
    let a = h
        .admin("POST", "/v1/tenants/acme/purge", purge)
        .await
        .expect(200);
    assert!(a.json()["removed"].as_u64().is_some());

    // A tenant id from the display name.
    let a = h
        .admin(
            "POST",
            "/v1/tenants",
            json!({"display_name": "Globex Corp"}),
        )
        .await
        .expect(201);
    assert_eq!(a.json()["tenant"]["id"], "globex-corp");
    assert_eq!(a.json()["tenant"]["state_version"], "v1");
}

#[tokio::test]
async fn the_admin_lists_and_force_unlocks_a_tenants_locks() {
    let h = harness().await;
    let acme = h.create_tenant("acme", json!({})).await;
    let globex = h.create_tenant("globex", json!({})).await;
    let taken = h
        .call(
            "POST",
            "/v1/locks/stack:web:env:prod",
            &[("x-api-key", &acme), ("content-type", "application/json")],
            r#"{"ttl_seconds": 60}"#,
        )
        .await
        .expect(201)
        .json();
    let id = taken["lock_id"].as_str().unwrap().to_string();
    let listed = h
        .admin("GET", "/v1/tenants/acme/locks", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(listed["locks"][0]["lock_id"], id.as_str());
    assert_eq!(listed["locks"][0]["key"], "stack:web:env:prod");
    let none = h
        .admin("GET", "/v1/tenants/globex/locks", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(none["locks"], json!([]));
    h.admin("GET", "/v1/tenants/ghost/locks", Value::Null)
        .await
        .expect(404);
    // A tenant's credential is not the admin's.
    for key in [&acme, &globex] {
        let a = h
            .call("GET", "/v1/tenants/acme/locks", &[("x-api-key", key)], "")
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let wrong = uuid::Uuid::new_v4();
    h.admin(
        "DELETE",
        &format!("/v1/tenants/acme/locks/stack:web:env:prod?lock_id={wrong}"),
        Value::Null,
    )
    .await
    .expect(409);
    h.admin(
        "DELETE",
        &format!("/v1/tenants/acme/locks/stack:web:env:prod?lock_id={id}"),
        Value::Null,
    )
    .await
    .expect(204);
    h.admin(
        "DELETE",
        &format!("/v1/tenants/acme/locks/stack:web:env:prod?lock_id={id}"),
        Value::Null,
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn a_mistyped_key_is_refused_by_its_checksum() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    assert!(tenancy_core::credentials::has_checksum(&secret), "{secret}");
    let mut typo = secret.clone().into_bytes();
    let at = typo.len() - 1;
    typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let a = h
        .call("GET", "/v1/tenant", &[("x-api-key", &typo)], "")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&a.bytes).contains("checksum"));
    let a = h
        .call("GET", "/v1/tenant", &[("x-api-key", &secret)], "")
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn tenants_come_with_their_usage_when_asked() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    h.call(
        "POST",
        "/v1/stacks/web/prod/state",
        &[("x-api-key", &key)],
        "{}",
    )
    .await
    .expect(200);
    let plain = h
        .admin("GET", "/v1/tenants", Value::Null)
        .await
        .expect(200)
        .json();
    assert!(plain["tenants"][0].get("usage").is_none(), "{plain}");
    let with = h
        .admin("GET", "/v1/tenants?include=usage", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(with["tenants"][0]["usage"]["stacks"], 1, "{with}");
    let one = h
        .admin("GET", "/v1/tenants/acme?include=usage", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(one["usage"]["stacks"], 1, "{one}");
    h.admin("GET", "/v1/tenants?include=secrets", Value::Null)
        .await
        .expect(400);
}
