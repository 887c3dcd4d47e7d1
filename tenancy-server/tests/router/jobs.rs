//! Router tests: jobs and workers.

use super::*;

#[tokio::test]
async fn thirty_two_concurrent_jobs_on_the_free_plan_give_five_created() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({"plan": "free"})).await;
    // Warm the cache so the burst measures the quota, not bcrypt.
    h.tenant(&key, "GET", "/v1/tenant", Value::Null).await;
    let calls = (0..32).map(|i| {
        h.tenant(
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": format!("job-{i}")}),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((created, refused.len()), (5, 27));
    for a in refused {
        assert_eq!(a.error_code(), "quota_exceeded");
        assert_eq!(a.json()["error"]["quota"]["resource"], "concurrent_jobs");
    }
    let a = h.admin("GET", "/v1/tenants/acme/stats", Value::Null).await;
    let usage = a.json()["usage"].clone();
    assert_eq!(usage["jobs_active"], 5);
    assert_eq!(usage["jobs_this_hour"], 5);
    // The tenant's own view shows this replica's changes at once, whatever its usage cache.
    let me = h
        .tenant(&key, "GET", "/v1/tenant", Value::Null)
        .await
        .json();
    assert_eq!(me["usage"]["jobs_active"], 5);
}

#[tokio::test]
async fn jobs_run_through_workers_and_give_their_quota_back() {
    let h = harness().await;
    let key = h
        .create_tenant("acme", json!({"limits": {"max_concurrent_jobs": 2}}))
        .await;
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w1", "cpu": 1}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let worker = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w2"}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "free plan: one worker"
    );
    assert_eq!(a.json()["error"]["quota"]["resource"], "workers");

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);

    let j1 = h
        .tenant(
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": "first", "cpu": 2, "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(j1.status, StatusCode::CREATED);
    let j1 = j1.json();
    assert_eq!(j1["status"], "queued");
    let j2 = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "second"}))
        .await
        .json();
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "third"}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "gpu", "gpu": 1}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // FIFO claim.
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["id"], j1["id"]);
    assert_eq!(a.json()["status"], "running");
    assert_eq!(a.json()["worker_id"].as_str().unwrap(), worker);
    let id1 = j1["id"].as_str().unwrap();

    // Only the holder may complete.
    let stranger = uuid::Uuid::new_v4();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": stranger}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let id2 = j2["id"].as_str().unwrap();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id2}/complete"),
            json!({"worker_id": worker}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "queued, not held");

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": worker, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "completed");
    assert_eq!(a.json()["result"]["ok"], true);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id1}/complete"),
            json!({"worker_id": worker}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "completed once");

    // The slot is free again.
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "third"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);

    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), id2);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{id2}/fail"),
            json!({"worker_id": worker, "error": "boom"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "failed");
    assert_eq!(a.json()["error"], "boom");

    let a = h.tenant(&key, "GET", "/v1/jobs", Value::Null).await;
    assert_eq!(a.json()["jobs"].as_array().unwrap().len(), 3);
    let a = h
        .tenant(&key, "GET", "/v1/jobs?status=completed", Value::Null)
        .await;
    assert_eq!(a.json()["jobs"].as_array().unwrap().len(), 1);
    let a = h
        .tenant(&key, "GET", &format!("/v1/jobs/{id1}"), Value::Null)
        .await;
    assert_eq!(a.json()["status"], "completed");
    let a = h
        .tenant(&key, "GET", "/v1/jobs?status=bogus", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["jobs_completed"], 1);
    assert_eq!(stats["usage"]["jobs_failed"], 1);
    assert_eq!(stats["usage"]["jobs_active"], 1);
    assert_eq!(
        stats["usage"]["cpu_cores"], 1,
        "the worker's core; the finished job's are back"
    );
    assert_eq!(stats["usage"]["workers"], 1);

    // Deleting a worker requeues what it holds and frees its quota.
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    let held = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/workers/{worker}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h
        .tenant(
            &key,
            "DELETE",
            &format!("/v1/workers/{worker}"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h
        .tenant(&key, "GET", &format!("/v1/jobs/{held}"), Value::Null)
        .await;
    assert_eq!(a.json()["status"], "queued");
    let a = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w3"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let w3 = a.json()["id"].as_str().unwrap().to_string();
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{w3}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), held);
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["workers"], 1);
    assert_eq!(stats["usage"]["cpu_cores"], 0);
}

#[tokio::test]
async fn jobs_per_hour_answers_429_with_retry_after() {
    let h = harness().await;
    let key = h
        .create_tenant(
            "acme",
            json!({"limits": {"max_jobs_per_hour": 2, "max_concurrent_jobs": 10}}),
        )
        .await;
    for _ in 0..2 {
        h.client(&key)
            .post("/v1/jobs", json!({"name": "j"}))
            .await
            .expect(201);
    }
    let a = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j"}))
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"]["quota"]["resource"], "jobs_per_hour");
    let secs: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&secs));
    // The refused request took nothing.
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(stats["usage"]["jobs_active"], 2);
}

#[tokio::test]
async fn jobs_refuse_bad_input() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    for (body, why) in [
        (json!({}), "no name"),
        (json!({"name": ""}), "empty name"),
        (json!({"name": "x".repeat(300)}), "long name"),
        (json!({"name": 5}), "wrong type"),
        (json!({"name": "a", "cpu": -1}), "negative cpu"),
        (json!({"name": "a", "cpu": "two"}), "cpu as text"),
        (json!({"name": "a", "gpu": 99_999_999_999u64}), "absurd gpu"),
        (json!({"name": "a", "extra": 1}), "unknown field"),
    ] {
        let a = h.tenant(&key, "POST", "/v1/jobs", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}");
    }
    let a = h
        .tenant(&key, "GET", "/v1/jobs/not-a-uuid", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .tenant(
            &key,
            "GET",
            &format!("/v1/jobs/{}", uuid::Uuid::new_v4()),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{}/claim", uuid::Uuid::new_v4()),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let stats = h
        .admin("GET", "/v1/tenants/acme/stats", Value::Null)
        .await
        .json();
    assert_eq!(
        stats["usage"]["jobs_active"], 0,
        "refused requests reserve nothing"
    );
}

#[tokio::test]
async fn one_tenant_never_sees_anothers_jobs_workers_state_or_locks() {
    let h = harness().await;
    let a_key = h.create_tenant("alpha", json!({})).await;
    let b_key = h.create_tenant("bravo", json!({})).await;
    let job = h
        .tenant(&a_key, "POST", "/v1/jobs", json!({"name": "secret-job"}))
        .await
        .json();
    let job_id = job["id"].as_str().unwrap();
    let a_worker = h
        .tenant(&a_key, "POST", "/v1/workers", json!({"name": "wa"}))
        .await
        .json();
    let a_worker = a_worker["id"].as_str().unwrap();
    let b_worker = h
        .tenant(&b_key, "POST", "/v1/workers", json!({"name": "wb"}))
        .await
        .json();
    let b_worker = b_worker["id"].as_str().unwrap();
    h.call(
        "PUT",
        "/v1/state/apps/x/prod/state.json",
        &[("x-api-key", &a_key)],
        "alpha-data",
    )
    .await;
    h.tenant(
        &a_key,
        "POST",
        "/v1/locks/stack:x:env:prod",
        json!({"ttl_seconds": 60}),
    )
    .await;

    // Bravo's worker finds nothing to claim: alpha's queue is invisible.
    let a = h
        .tenant(
            &b_key,
            "POST",
            &format!("/v1/workers/{b_worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // Alpha's ids mean nothing to bravo.
    h.client(&b_key)
        .get(&format!("/v1/jobs/{job_id}"))
        .await
        .expect(404);
    h.client(&b_key)
        .send(
            "POST",
            &format!("/v1/workers/{a_worker}/claim"),
            Value::Null,
        )
        .await
        .expect(404);
    h.client(&b_key)
        .delete(&format!("/v1/workers/{a_worker}"))
        .await
        .expect(404);
    h.client(&b_key)
        .send(
            "POST",
            &format!("/v1/jobs/{job_id}/complete"),
            json!({"worker_id": b_worker}),
        )
        .await
        .expect(404);
    let list = h
        .tenant(&b_key, "GET", "/v1/jobs", Value::Null)
        .await
        .json();
    assert!(list["jobs"].as_array().unwrap().is_empty());
    let a = h
        .call(
            "GET",
            "/v1/state/apps/x/prod/state.json",
            &[("x-api-key", &b_key)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.tenant(&b_key, "GET", "/v1/state", Value::Null).await;
    assert!(!String::from_utf8_lossy(&a.bytes).contains("apps/x"));
    let a = h.tenant(&b_key, "GET", "/v1/locks", Value::Null).await;
    assert!(a.json()["locks"].as_array().unwrap().is_empty());
    // The same lock key is a different lock for bravo.
    let a = h
        .tenant(
            &b_key,
            "POST",
            "/v1/locks/stack:x:env:prod",
            json!({"ttl_seconds": 60}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    // Alpha's job is untouched and still claimable by alpha.
    let a = h
        .tenant(
            &a_key,
            "POST",
            &format!("/v1/workers/{a_worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"].as_str().unwrap(), job_id);
}

#[tokio::test]
async fn a_tenant_lists_its_workers_and_cancels_its_jobs() {
    let h = harness().await;
    let key = h
        .create_tenant("acme", json!({"limits": {"max_concurrent_jobs": 1}}))
        .await;
    let other = h.create_tenant("beta", json!({})).await;
    let w = h
        .tenant(&key, "POST", "/v1/workers", json!({"name": "w1", "cpu": 2}))
        .await
        .json();
    let wid = w["id"].as_str().unwrap().to_string();
    let list = h.tenant(&key, "GET", "/v1/workers", Value::Null).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()["workers"][0]["id"], wid.as_str());
    assert_eq!(list.json()["workers"][0]["cpu"], 2);
    let theirs = h.tenant(&other, "GET", "/v1/workers", Value::Null).await;
    assert_eq!(
        theirs.json()["workers"],
        json!([]),
        "another tenant sees none"
    );

    // A queued job is cancelled and gives its slot back at once.
    let job = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j"}))
        .await
        .json();
    let jid = job["id"].as_str().unwrap().to_string();
    let full = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j2"}))
        .await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
    let stranger = h
        .tenant(
            &other,
            "POST",
            &format!("/v1/jobs/{jid}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!(
        stranger.status,
        StatusCode::NOT_FOUND,
        "not another tenant's"
    );
    let c = h
        .tenant(&key, "POST", &format!("/v1/jobs/{jid}/cancel"), Value::Null)
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.json()["status"], "cancelled");
    assert!(c.json()["finished_at"].is_string());
    let again = h
        .tenant(&key, "POST", &format!("/v1/jobs/{jid}/cancel"), Value::Null)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let claim = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/workers/{wid}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(
        claim.status,
        StatusCode::NO_CONTENT,
        "a cancelled job is never claimed"
    );

    // A running job is cancelled; its worker's report is then refused.
    let job = h
        .tenant(&key, "POST", "/v1/jobs", json!({"name": "j3"}))
        .await;
    assert_eq!(job.status, StatusCode::CREATED, "the slot came back");
    let jid = job.json()["id"].as_str().unwrap().to_string();
    h.tenant(
        &key,
        "POST",
        &format!("/v1/workers/{wid}/claim"),
        Value::Null,
    )
    .await;
    let c = h
        .tenant(&key, "POST", &format!("/v1/jobs/{jid}/cancel"), Value::Null)
        .await;
    assert_eq!(c.json()["status"], "cancelled");
    let late = h
        .tenant(
            &key,
            "POST",
            &format!("/v1/jobs/{jid}/complete"),
            json!({"worker_id": wid}),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    let me = h
        .tenant(&key, "GET", "/v1/tenant", Value::Null)
        .await
        .json();
    assert_eq!(me["usage"]["jobs_active"], 0);
    assert_eq!(me["usage"]["jobs_completed"], 0);
    assert_eq!(me["usage"]["cpu_cores"], 2, "the worker's cores only");
}

#[tokio::test]
async fn a_payload_or_result_that_is_not_an_object_is_refused_and_nothing_is_taken() {
    let not_objects = [
        json!([null, null]),
        json!(42),
        json!("text"),
        json!(true),
        json!([]),
    ];
    for store in common::stores("a_payload_or_result_that_is_not_an_object").await {
        let h = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
        let key = h.create_tenant("acme", json!({})).await;
        let c = h.client(&key);
        for bad in &not_objects {
            let a = c
                .post("/v1/jobs", json!({"name": "j", "payload": bad}))
                .await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{}: payload {bad}",
                store.name
            );
            assert_eq!(a.error_code(), "invalid_input");
        }
        assert_eq!(
            c.get("/v1/jobs").await.expect(200).json()["jobs"],
            json!([])
        );
        use tenancy_core::TenantRegistry as _;
        let acme = tenancy_core::TenantId::new("acme").unwrap();
        let usage = h.state.registry().usage(&acme).await.unwrap();
        assert_eq!(usage.jobs_active, 0, "{}: no quota taken", store.name);

        // What the document says: an object, null, or nothing.
        for ok in [
            json!({"payload": {"frame": 7}}),
            json!({"payload": null}),
            json!({}),
        ] {
            let mut body = ok.clone();
            body["name"] = json!("j");
            let a = c.post("/v1/jobs", body).await.expect(201);
            let p = &a.json()["payload"];
            assert!(p.is_object() || p.is_null(), "{}: {p}", store.name);
        }
        let worker = c
            .post("/v1/workers", json!({"name": "w"}))
            .await
            .expect(201);
        let worker = worker.json()["id"].as_str().unwrap().to_string();
        let job = c
            .post(&format!("/v1/workers/{worker}/claim"), Value::Null)
            .await
            .expect(200)
            .json();
        assert_eq!(job["payload"], json!({"frame": 7}));
        let id = job["id"].as_str().unwrap();
        for bad in &not_objects {
            let a = c
                .post(
                    &format!("/v1/jobs/{id}/complete"),
                    json!({"worker_id": worker, "result": bad}),
                )
                .await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{}: result {bad}",
                store.name
            );
        }
        let still = c.get(&format!("/v1/jobs/{id}")).await.expect(200).json();
        assert_eq!(
            still["status"], "running",
            "{}: the job is still held",
            store.name
        );
        assert_eq!(still["result"], Value::Null);
        let done = c
            .post(
                &format!("/v1/jobs/{id}/complete"),
                json!({"worker_id": worker, "result": {"ok": true}}),
            )
            .await
            .expect(200)
            .json();
        assert_eq!(done["result"], json!({"ok": true}));
        for job in c.get("/v1/jobs").await.expect(200).json()["jobs"]
            .as_array()
            .unwrap()
        {
            for field in ["payload", "result"] {
                assert!(
                    job[field].is_object() || job[field].is_null(),
                    "{}: {field} {}",
                    store.name,
                    job[field]
                );
            }
        }
    }
}

#[tokio::test]
async fn a_job_stored_with_a_non_object_payload_is_shown_in_the_documented_shape() {
    let h = harness().await;
    let key = h.create_tenant("acme", json!({})).await;
    let c = h.client(&key);
    let made = c
        .post("/v1/jobs", json!({"name": "old", "payload": {"x": 1}}))
        .await
        .expect(201)
        .json();
    let id = made["id"].as_str().unwrap();
    // Rewrite the record as an older server could have written it.
    let k = StateKey::new(format!("tenants/acme/v1/_server/jobs/{id}")).unwrap();
    let obj = h.backend.get(&k).await.unwrap().unwrap();
    let mut rec: Value = serde_json::from_slice(&obj.bytes).unwrap();
    rec["payload"] = json!([null, null]);
    rec["result"] = json!(42);
    h.backend
        .put(
            &k,
            serde_json::to_vec(&rec).unwrap().into(),
            tenancy_core::PutMode::Overwrite,
        )
        .await
        .unwrap();
    let job = c.get(&format!("/v1/jobs/{id}")).await.expect(200).json();
    assert_eq!(job["payload"], json!({"value": [null, null]}));
    assert_eq!(job["result"], json!({"value": 42}));
}

#[tokio::test]
async fn the_admin_sees_a_tenants_jobs_and_workers_as_the_tenant_does() {
    let h = harness().await;
    let acme = h.create_tenant("acme", json!({})).await;
    let other = h.create_tenant("other", json!({})).await;
    let worker = h
        .tenant(&acme, "POST", "/v1/workers", json!({"name": "w1"}))
        .await
        .expect(201)
        .json();
    for name in ["a1", "a2"] {
        h.tenant(&acme, "POST", "/v1/jobs", json!({"name": name}))
            .await
            .expect(201);
    }
    h.tenant(&other, "POST", "/v1/jobs", json!({"name": "secret-job"}))
        .await
        .expect(201);
    h.tenant(&other, "POST", "/v1/workers", json!({"name": "other-w"}))
        .await
        .expect(201);

    // The same JSON as the tenant's own listings, byte for byte.
    for (own, admin) in [
        ("/v1/jobs", "/v1/tenants/acme/jobs"),
        (
            "/v1/jobs?status=queued&limit=1",
            "/v1/tenants/acme/jobs?status=queued&limit=1",
        ),
        ("/v1/workers", "/v1/tenants/acme/workers"),
    ] {
        let mine = h.tenant(&acme, "GET", own, Value::Null).await.expect(200);
        let seen = h.admin("GET", admin, Value::Null).await.expect(200);
        assert_eq!(seen.json(), mine.json(), "{admin}");
    }
    let jobs = h
        .admin("GET", "/v1/tenants/acme/jobs", Value::Null)
        .await
        .json();
    let mut names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["a1", "a2"], "acme's jobs only");
    let workers = h
        .admin("GET", "/v1/tenants/acme/workers", Value::Null)
        .await
        .json();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1);
    assert_eq!(workers["workers"][0]["id"], worker["id"]);
    let text = serde_json::to_string(&jobs).unwrap() + &workers.to_string();
    assert!(
        !text.contains("secret-job") && !text.contains("other-w"),
        "{text}"
    );

    // Unknown tenant 404, a bad id 400, a bad limit 400.
    for path in ["/v1/tenants/nobody/jobs", "/v1/tenants/nobody/workers"] {
        let a = h.admin("GET", path, Value::Null).await.expect(404);
        assert_eq!(a.error_code(), "not_found");
    }
    h.admin("GET", "/v1/tenants/NO/jobs", Value::Null)
        .await
        .expect(400);
    for limit in ["0", "1001"] {
        let uri = format!("/v1/tenants/acme/jobs?limit={limit}");
        h.admin("GET", &uri, Value::Null).await.expect(400);
        let own = format!("/v1/jobs?limit={limit}");
        h.tenant(&acme, "GET", &own, Value::Null).await.expect(400);
    }

    // Tenant credentials (its secret, or a session) are refused: admin only.
    let session = h
        .tenant(&acme, "POST", "/v1/sessions", Value::Null)
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    for key in [&acme, &session] {
        for path in ["/v1/tenants/acme/jobs", "/v1/tenants/acme/workers"] {
            let bearer = format!("Bearer {key}");
            let a = h.call("GET", path, &[("authorization", &bearer)], "").await;
            assert!(
                a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::FORBIDDEN,
                "{path} with a tenant credential: {}",
                a.status
            );
            assert!(!String::from_utf8_lossy(&a.bytes).contains("a1"));
            let a = h.tenant(key, "GET", path, Value::Null).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} with X-API-Key");
        }
    }
}
