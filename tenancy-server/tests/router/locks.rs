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
