//! Router tests: locks.

use super::*;

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

#[tokio::test]
async fn lock_owner_or_operation_with_control_characters_is_refused_and_takes_nothing() {
    for store in common::stores("lock_owner_or_operation_with_control_characters").await {
        let h = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
        let key = h.create_tenant("acme", json!({})).await;
        let c = h.client(&key);
        for body in [
            json!({"ttl_seconds": 60, "operation": "apply\nINFO forged log line"}),
            json!({"ttl_seconds": 60, "operation": "apply\r"}),
            json!({"ttl_seconds": 60, "owner": "ci\u{1b}[2J@runner"}),
            json!({"ttl_seconds": 60, "owner": "ci\u{0}"}),
        ] {
            let a = c.post("/v1/locks/stack:web", body.clone()).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}: {body}", store.name);
            assert_eq!(a.error_code(), "invalid_input");
            let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains("control character"), "{}: {msg}", store.name);
        }
        let a = c.get("/v1/locks").await.expect(200);
        assert_eq!(
            a.json()["locks"],
            json!([]),
            "{}: nothing taken",
            store.name
        );
        // Printable text, and multi-line free-form info, are fine.
        let a = c
            .post(
                "/v1/locks/stack:web",
                json!({"ttl_seconds": 60, "operation": "apply", "owner": "ci@runner",
                       "info": "{\n  \"pr\": 42\n}"}),
            )
            .await
            .expect(201);
        assert_eq!(a.json()["operation"], "apply", "{}", store.name);
    }
}

#[tokio::test]
async fn a_victims_lock_list_reads_none_of_a_noisy_tenants_lock_objects() {
    for store in common::stores("a_victims_lock_list_reads_none_of_a_noisy").await {
        let counting = Arc::new(tenancy_state::counting::CountingBackend::new(
            store.backend.clone(),
        ));
        let backend: Arc<dyn StateBackend> = counting.clone();
        let h = harness_on(backend, ServerConfig::default(), true).await;
        let noisy = h.client(
            &h.create_tenant("noisy", json!({"plan": "enterprise"}))
                .await,
        );
        let victim = h.client(&h.create_tenant("victim", json!({})).await);
        let long = |i: usize| format!("job:{}{i}", "x".repeat(300));
        for i in 0..40 {
            noisy
                .post(
                    &format!("/v1/locks/{}", long(i)),
                    json!({"ttl_seconds": 600}),
                )
                .await
                .expect(201);
        }
        noisy
            .post("/v1/locks/stack:web", json!({"ttl_seconds": 600}))
            .await
            .expect(201);
        victim
            .post(
                &format!("/v1/locks/{}", long(0)),
                json!({"ttl_seconds": 600}),
            )
            .await
            .expect(201);
        victim
            .post("/v1/locks/stack:web", json!({"ttl_seconds": 600}))
            .await
            .expect(201);
        victim.get("/v1/locks").await.expect(200);

        counting.reset();
        let a = victim.get("/v1/locks").await.expect(200);
        let gets = counting.counts().get;
        assert_eq!(
            a.json()["locks"].as_array().unwrap().len(),
            2,
            "{}",
            store.name
        );
        // the victim's two lock objects, and nothing of the noisy tenant's 41
        assert!(
            gets <= 2,
            "{}: the victim's listing read {gets} objects",
            store.name
        );
        let a = noisy.get("/v1/locks").await.expect(200);
        assert_eq!(
            a.json()["locks"].as_array().unwrap().len(),
            41,
            "{}",
            store.name
        );
    }
}

#[tokio::test]
async fn one_lock_by_key_a_listing_by_prefix_and_force_unlock_by_the_holders_id() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    let other = h.create_tenant("globex", json!({})).await;
    h.tenant(&key, "GET", "/v1/locks/stack:web:env:prod", Value::Null)
        .await
        .expect(404);
    let lease = h
        .tenant(
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 600, "lock_id": "0b6d9c0e-5b7e-4f57-9d55-6d8f6e3c1a2b", "path": "web/prod"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(lease["lock_id"], "0b6d9c0e-5b7e-4f57-9d55-6d8f6e3c1a2b");
    assert_eq!(lease["path"], "web/prod");
    h.tenant(
        &key,
        "POST",
        "/v1/locks/stack:api:env:prod",
        json!({"ttl_seconds": 600}),
    )
    .await
    .expect(201);
    let held = h
        .tenant(&key, "GET", "/v1/locks/stack:web:env:prod", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(held["lock_id"], lease["lock_id"]);
    // Another tenant sees nothing of it.
    h.tenant(&other, "GET", "/v1/locks/stack:web:env:prod", Value::Null)
        .await
        .expect(404);
    let listed = h
        .tenant(&key, "GET", "/v1/locks?prefix=stack:web:", Value::Null)
        .await
        .expect(200)
        .json();
    assert_eq!(listed["locks"].as_array().unwrap().len(), 1);

    // force=true frees it whatever its lease, with the holder's id only.
    let wrong =
        "/v1/locks/stack:web:env:prod?lock_id=5f0a4c1e-0000-4000-8000-000000000000&force=true";
    h.tenant(&key, "DELETE", wrong, Value::Null)
        .await
        .expect(409);
    let right =
        "/v1/locks/stack:web:env:prod?lock_id=0b6d9c0e-5b7e-4f57-9d55-6d8f6e3c1a2b&force=true";
    h.tenant(&key, "DELETE", right, Value::Null)
        .await
        .expect(204);
    h.tenant(&key, "GET", "/v1/locks/stack:web:env:prod", Value::Null)
        .await
        .expect(404);
}

/// Acquires `n` locks `prefix0..` at once; returns how many got 201 and how
/// many 429 `quota_exceeded` naming `locks_held` (anything else fails).
async fn acquire_at_once(h: &common::Harness, key: &str, prefix: &str, n: usize) -> (usize, usize) {
    let tries = (0..n).map(|i| async move {
        let path = format!("/v1/locks/{prefix}{i}");
        h.tenant(key, "POST", &path, json!({"ttl_seconds": 60}))
            .await
    });
    let (mut won, mut refused) = (0, 0);
    for a in futures::future::join_all(tries).await {
        match a.status.as_u16() {
            201 => won += 1,
            429 => {
                assert_eq!(a.error_code(), "quota_exceeded");
                assert_eq!(a.json()["error"]["quota"]["resource"], "locks_held");
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&a.bytes)),
        }
    }
    (won, refused)
}

#[tokio::test]
async fn locks_held_are_limited_per_tenant_and_shown_in_usage() {
    for store in common::stores("locks_held_are_limited_per_tenant").await {
        let name = store.name;
        let h =
            common::harness_on_manual_locks(store.backend.clone(), ServerConfig::default()).await;
        let acme = h
            .create_tenant("acme", json!({"limits": {"max_locks": 3}}))
            .await;
        let globex = h.create_tenant("globex", json!({})).await;
        let (a, g) = (h.client(&acme), h.client(&globex));
        let me = a.get("/v1/tenant").await.expect(200).json();
        assert_eq!(me["limits"]["max_locks"], 3, "{name}");
        assert_eq!(me["usage"]["locks_held"], 0, "{name}");

        // 16 concurrent acquires of distinct keys: exactly 3 succeed.
        assert_eq!(
            acquire_at_once(&h, &acme, "job:", 16).await,
            (3, 13),
            "{name}"
        );
        let refused = a
            .post("/v1/locks/one-more", json!({"ttl_seconds": 60}))
            .await
            .expect(429);
        let quota = &refused.json()["error"]["quota"];
        assert_eq!(
            (&quota["resource"], &quota["limit"], &quota["requested"]),
            (&json!("locks_held"), &json!(3), &json!(4)),
            "{name}"
        );
        // The other tenant is unaffected (free plan: 10).
        assert_eq!(
            acquire_at_once(&h, &globex, "job:", 12).await,
            (10, 2),
            "{name}"
        );
        assert_eq!(
            g.get("/v1/tenant").await.expect(200).json()["usage"]["locks_held"],
            10,
            "{name}"
        );

        // Usage shows it, to the tenant and to the admin.
        let me = a.get("/v1/tenant").await.expect(200).json();
        assert_eq!(me["usage"]["locks_held"], 3, "{name}");
        let stats = h
            .admin("GET", "/v1/tenants/acme/stats", Value::Null)
            .await
            .expect(200)
            .json();
        let q = stats["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["resource"] == "locks_held")
            .cloned()
            .unwrap();
        assert_eq!(
            (&q["used"], &q["limit"], &q["remaining"]),
            (&json!(3), &json!(3), &json!(0)),
            "{name}"
        );

        // Renewing does not count again; releasing frees a slot.
        let held = a.get("/v1/locks").await.expect(200).json()["locks"].clone();
        let first = &held[0];
        let (k, id) = (
            first["key"].as_str().unwrap(),
            first["lock_id"].as_str().unwrap(),
        );
        a.put(
            &format!("/v1/locks/{k}?lock_id={id}&ttl_seconds=120"),
            Value::Null,
        )
        .await
        .expect(200);
        a.post("/v1/locks/one-more", json!({"ttl_seconds": 60}))
            .await
            .expect(429);
        a.delete(&format!("/v1/locks/{k}?lock_id={id}"))
            .await
            .expect(204);
        assert_eq!(
            a.get("/v1/tenant").await.expect(200).json()["usage"]["locks_held"],
            2,
            "{name}: the release shows at once"
        );
        a.post("/v1/locks/one-more", json!({"ttl_seconds": 60}))
            .await
            .expect(201);

        // Leases that run out stop counting, without any release.
        h.clock.advance(Duration::from_secs(121));
        assert_eq!(
            a.get("/v1/tenant").await.expect(200).json()["usage"]["locks_held"],
            0,
            "{name}"
        );
        assert_eq!(
            acquire_at_once(&h, &acme, "later:", 4).await,
            (3, 1),
            "{name}"
        );

        // An admin raises the limit.
        h.admin(
            "PATCH",
            "/v1/tenants/acme",
            json!({"limits": {"max_locks": 4}}),
        )
        .await
        .expect(200);
        a.post("/v1/locks/fourth", json!({"ttl_seconds": 60}))
            .await
            .expect(201);
        assert_eq!(
            a.get("/v1/tenant").await.expect(200).json()["usage"]["locks_held"],
            4,
            "{name}"
        );
    }
}
