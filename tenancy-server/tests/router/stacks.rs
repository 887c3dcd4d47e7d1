//! Router tests: stack state over HTTP, as Terraform's `http` backend speaks it.

use super::*;
use base64::Engine as _;
use md5::{Digest as _, Md5};

const STATE: &[u8] = b"{\n    \"version\": 3,\n    \"serial\": 1,\n    \"lineage\": \"x\",\n    \"modules\": []\n}\n";
const URL: &str = "/v1/stacks/web/prod/state";
const LOCK_URL: &str = "/v1/stacks/web/prod/lock";

fn basic(tenant: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{tenant}:{secret}"))
    )
}

fn md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

fn lock_info(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ID": id,
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "ci@runner",
        "Version": "0.11.11",
        "Created": "2026-12-01T10:00:00.123456789Z",
        "Path": ""
    }))
    .unwrap()
}

const A: &str = "6f1c4a38-8a3c-4d41-9a3e-1b2f3c4d5e6f";
const B: &str = "0b9e1f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

#[tokio::test]
async fn an_apply_as_terraform_does_it() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];

    // no state yet: 204
    h.call("GET", URL, &au, "").await.expect(204);
    // LOCK: exactly 200
    let a = h
        .call("LOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    assert_eq!(a.json()["ID"], A);
    assert!(a.json()["FencingToken"].as_u64().is_some(), "{}", a.json());
    // a second LOCK: 423 with the holder's LockInfo (Terraform prints its ID)
    let held = h
        .call("LOCK", LOCK_URL, &au, lock_info(B))
        .await
        .expect(423);
    assert_eq!(held.json()["ID"], A);
    assert_eq!(held.json()["Who"], "ci@runner");
    assert_eq!(held.json()["Operation"], "OperationTypeApply");
    // POST ?ID with Content-MD5: saved
    let md5_header = md5(STATE);
    let with_md5 = [
        ("authorization", auth.as_str()),
        ("content-md5", md5_header.as_str()),
        ("content-type", "application/json"),
    ];
    let saved = h
        .call("POST", &format!("{URL}?ID={A}"), &with_md5, STATE)
        .await
        .expect(200);
    assert_eq!(saved.json()["serial"], 1);
    // GET: the same bytes, with their Content-MD5
    let got = h.call("GET", URL, &au, "").await.expect(200);
    assert_eq!(got.bytes, STATE, "byte for byte");
    assert_eq!(got.header("content-md5").unwrap(), md5(STATE));
    // UNLOCK with the holder's LockInfo: exactly 200
    h.call("UNLOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    h.call("LOCK", LOCK_URL, &au, lock_info(B))
        .await
        .expect(200);
    h.call("DELETE", LOCK_URL, &au, lock_info(B))
        .await
        .expect(200);
    // the history and the listing see the apply
    let history = h.call("GET", "/v1/stacks/web/prod/history", &au, "").await;
    assert_eq!(history.expect(200).json()["versions"][0]["serial"], 1);
    let list = h
        .call("GET", "/v1/stacks", &au, "")
        .await
        .expect(200)
        .json();
    assert_eq!(list["stacks"][0]["stack"], "web");
    assert_eq!(list["stacks"][0]["serial"], 1);
    assert!(list["stacks"][0]["locked_by"].is_null());
}

#[tokio::test]
async fn saves_are_refused_while_another_holds_the_lock() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    h.call("POST", URL, &au, STATE).await.expect(200);
    h.call("LOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    // -lock=false (no ID) while locked: 423 with the holder
    let a = h
        .call("POST", URL, &au, &b"{\"serial\": 9}"[..])
        .await
        .expect(423);
    assert_eq!(a.json()["ID"], A);
    // a foreign or stale ID: 409
    h.call("POST", &format!("{URL}?ID={B}"), &au, &b"{}"[..])
        .await
        .expect(409);
    // a rollback and a delete too
    h.call(
        "POST",
        "/v1/stacks/web/prod/rollback",
        &au,
        &br#"{"to": 1}"#[..],
    )
    .await
    .expect(423);
    h.call("DELETE", URL, &au, "").await.expect(423);
    // the listing names the holder
    let list = h
        .call("GET", "/v1/stacks", &au, "")
        .await
        .expect(200)
        .json();
    assert_eq!(list["stacks"][0]["locked_by"]["ID"], A);
    // nothing was lost
    assert_eq!(h.call("GET", URL, &au, "").await.expect(200).bytes, STATE);
    // force-unlock: an empty UNLOCK body
    h.call("UNLOCK", LOCK_URL, &au, "").await.expect(200);
    // the admin's force-unlock ends a lock too
    h.call("LOCK", LOCK_URL, &au, lock_info(B))
        .await
        .expect(200);
    let ended = h
        .admin(
            "DELETE",
            "/v1/tenants/acme/stacks/web/prod/lock",
            Value::Null,
        )
        .await
        .expect(200);
    assert_eq!(ended.json()["ID"], B);
    h.admin(
        "DELETE",
        "/v1/tenants/acme/stacks/web/prod/lock",
        Value::Null,
    )
    .await
    .expect(404);
    h.call("POST", &format!("{URL}?ID={B}"), &au, &b"{}"[..])
        .await
        .expect(409);
    // the old holder's ID is no longer good: 409
    h.call("POST", &format!("{URL}?ID={A}"), &au, &b"{}"[..])
        .await
        .expect(409);
    h.call("POST", URL, &au, &b"{\"after\": 1}"[..])
        .await
        .expect(200);
}

#[tokio::test]
async fn bad_bodies_and_credentials_are_refused_and_nothing_is_saved() {
    let h = harness().await;
    let secret = h.create_tenant("acme", json!({})).await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    // a wrong Content-MD5: 400
    let wrong = [
        ("authorization", auth.as_str()),
        ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
    ];
    let a = h.call("POST", URL, &wrong, STATE).await.expect(400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Content-MD5"));
    // not JSON: 400
    h.call("POST", URL, &au, &b"{\"a\":"[..]).await.expect(400);
    // a LockInfo whose ID is not a UUID: 400
    h.call("LOCK", LOCK_URL, &au, &br#"{"ID": "nope"}"#[..])
        .await
        .expect(400);
    // a wrong password, another tenant's id as the user: 401
    let bad = basic("acme", "tnc_wrong");
    h.call("GET", URL, &[("authorization", bad.as_str())], "")
        .await
        .expect(401);
    let other = h.create_tenant("bravo", json!({})).await;
    let swapped = basic("acme", &other);
    h.call("GET", URL, &[("authorization", swapped.as_str())], "")
        .await
        .expect(401);
    h.call("GET", URL, &[("authorization", "Basic !!!")], "")
        .await
        .expect(401);
    // nothing was saved
    h.call("GET", URL, &au, "").await.expect(204);
    // bad names: 400
    h.call("GET", "/v1/stacks/a:b/prod/state", &au, "")
        .await
        .expect(400);
}

#[tokio::test]
async fn tenants_with_the_same_stack_names_see_nothing_of_each_other() {
    let h = harness().await;
    let a = h.create_tenant("acme", json!({})).await;
    let b = h.create_tenant("bravo", json!({})).await;
    let (aa, bb) = (basic("acme", &a), basic("bravo", &b));
    h.call("POST", URL, &[("authorization", aa.as_str())], STATE)
        .await
        .expect(200);
    h.call(
        "LOCK",
        LOCK_URL,
        &[("authorization", aa.as_str())],
        lock_info(A),
    )
    .await
    .expect(200);
    let bh = [("authorization", bb.as_str())];
    h.call("GET", URL, &bh, "").await.expect(204);
    assert_eq!(
        h.call("GET", "/v1/stacks", &bh, "")
            .await
            .expect(200)
            .json()["stacks"],
        json!([])
    );
    // bravo's lock of the same names is its own
    h.call("LOCK", LOCK_URL, &bh, lock_info(B))
        .await
        .expect(200);
    h.call("POST", &format!("{URL}?ID={B}"), &bh, &b"{\"b\": 1}"[..])
        .await
        .expect(200);
    assert_eq!(
        h.call("GET", URL, &[("authorization", aa.as_str())], "")
            .await
            .expect(200)
            .bytes,
        STATE
    );
}

#[tokio::test]
async fn history_rollback_and_delete() {
    let h = harness().await;
    let secret = h
        .create_tenant("acme", json!({"limits": {"max_stacks": 1}}))
        .await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    h.call("POST", URL, &au, &b"{\"n\": 1}"[..])
        .await
        .expect(200);
    h.call("POST", URL, &au, &b"{\"n\": 2}"[..])
        .await
        .expect(200);
    let v1 = h
        .call("GET", "/v1/stacks/web/prod/history/1", &au, "")
        .await;
    assert_eq!(v1.expect(200).bytes, b"{\"n\": 1}");
    h.call("GET", "/v1/stacks/web/prod/history/9", &au, "")
        .await
        .expect(404);
    let back = h
        .call(
            "POST",
            "/v1/stacks/web/prod/rollback",
            &au,
            &br#"{"to": 1}"#[..],
        )
        .await
        .expect(200);
    assert_eq!(back.json()["serial"], 3);
    assert_eq!(h.call("GET", URL, &au, "").await.bytes, b"{\"n\": 1}");
    // another env of the same stack is the same stack; a second stack is over max_stacks
    h.call("POST", "/v1/stacks/web/dev/state", &au, &b"{}"[..])
        .await
        .expect(200);
    let over = h
        .call("POST", "/v1/stacks/db/prod/state", &au, &b"{}"[..])
        .await
        .expect(429);
    assert_eq!(over.error_code(), "quota_exceeded");
    // deleting both envs of web gives its stack back
    h.call("DELETE", URL, &au, "").await.expect(200);
    h.call("GET", URL, &au, "").await.expect(204);
    h.call("DELETE", "/v1/stacks/web/dev/state", &au, "")
        .await
        .expect(200);
    h.call("DELETE", URL, &au, "").await.expect(404);
    h.call("POST", "/v1/stacks/db/prod/state", &au, &b"{}"[..])
        .await
        .expect(200);
    // the deleted env's history stays
    let history = h.call("GET", "/v1/stacks/web/prod/history", &au, "").await;
    let versions = history.expect(200).json()["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 4, "{versions}");
    assert_eq!(versions[3]["deleted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_holders_late_save_is_fenced_and_the_new_holders_state_survives() {
    for store in common::stores("stacks::a_lapsed_holders_late_save_is_fenced").await {
        lapsed_holder_is_fenced(store).await;
    }
}

async fn lapsed_holder_is_fenced(store: common::TestStore) {
    let h = harness_on(
        store.backend.clone(),
        ServerConfig {
            stack_lock_ttl: Duration::from_secs(1),
            ..ServerConfig::default()
        },
        true,
    )
    .await;
    let secret = h.create_tenant("acme", json!({})).await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    h.call("LOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    h.call(
        "POST",
        &format!("{URL}?ID={A}"),
        &au,
        &b"{\"by\": \"a\"}"[..],
    )
    .await
    .expect(200);
    // A's lease runs out; B takes over and saves
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.call("LOCK", LOCK_URL, &au, lock_info(B))
        .await
        .expect(200);
    h.call(
        "POST",
        &format!("{URL}?ID={B}"),
        &au,
        &b"{\"by\": \"b\"}"[..],
    )
    .await
    .expect(200);
    // A's late save: refused
    let late = h
        .call(
            "POST",
            &format!("{URL}?ID={A}"),
            &au,
            &b"{\"by\": \"a-late\"}"[..],
        )
        .await
        .expect(409);
    assert_eq!(late.error_code(), "lock_lost", "{}", store.name);
    assert_eq!(
        h.call("GET", URL, &au, "").await.bytes,
        b"{\"by\": \"b\"}",
        "{}",
        store.name
    );
}

#[tokio::test]
async fn stack_locks_count_against_max_locks() {
    let h = harness().await;
    let secret = h
        .create_tenant("acme", json!({"limits": {"max_locks": 1}}))
        .await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    let (web, api) = ("/v1/stacks/web/prod/lock", "/v1/stacks/api/prod/lock");
    h.call("LOCK", web, &au, lock_info(A)).await.expect(200);
    let refused = h.call("LOCK", api, &au, lock_info(B)).await.expect(429);
    assert_eq!(refused.error_code(), "quota_exceeded");
    assert_eq!(refused.json()["error"]["quota"]["resource"], "locks_held");
    // The holder's LOCK again: 423 with itself, no second slot.
    let again = h.call("LOCK", web, &au, lock_info(A)).await.expect(423);
    assert_eq!(again.json()["ID"], A);
    // A save under the lock extends it without counting it again.
    h.call("POST", &format!("{URL}?ID={A}"), &au, STATE)
        .await
        .expect(200);
    h.call("LOCK", api, &au, lock_info(B)).await.expect(429);
    let me = h.client(&secret).get("/v1/tenant").await.expect(200).json();
    assert_eq!(me["usage"]["locks_held"], 1);
    // UNLOCK frees the slot, and so does a force-unlock.
    h.call("UNLOCK", web, &au, lock_info(A)).await.expect(200);
    h.call("LOCK", api, &au, lock_info(B)).await.expect(200);
    h.call("UNLOCK", api, &au, "").await.expect(200);
    h.call("LOCK", web, &au, lock_info(A)).await.expect(200);
    let me = h.client(&secret).get("/v1/tenant").await.expect(200).json();
    assert_eq!(me["usage"]["locks_held"], 1);
    // The admin's force-unlock frees it as well.
    h.admin(
        "DELETE",
        "/v1/tenants/acme/stacks/web/prod/lock",
        Value::Null,
    )
    .await
    .expect(200);
    h.call("LOCK", api, &au, lock_info(B)).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_locks_and_max_stacks() {
    for store in common::stores("stacks::two_replicas_share_locks_and_max_stacks").await {
        two_replicas_on(store).await;
    }
}

async fn two_replicas_on(store: common::TestStore) {
    let one = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
    let two = harness_on(store.backend.clone(), ServerConfig::default(), false).await;
    let secret = one
        .create_tenant("acme", json!({"limits": {"max_stacks": 5}}))
        .await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    // a lock taken through one replica is held on the other
    one.call("LOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    let held = two
        .call("LOCK", LOCK_URL, &au, lock_info(B))
        .await
        .expect(423);
    assert_eq!(held.json()["ID"], A);
    two.call("POST", URL, &au, &b"{}"[..]).await.expect(423);
    two.call("UNLOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    // 16 concurrent first saves of distinct stacks, spread over both: exactly 5 land
    let calls = (0..16).map(|i| {
        let h = if i % 2 == 0 { &one } else { &two };
        let url = format!("/v1/stacks/s{i}/prod/state");
        async move { h.call("POST", &url, &au, &b"{}"[..]).await.status }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (5, 11), "{}: {statuses:?}", store.name);
    let listed = one
        .call("GET", "/v1/stacks", &au, "")
        .await
        .expect(200)
        .json();
    assert_eq!(listed["stacks"].as_array().unwrap().len(), 5);
    let usage = one
        .tenant(&secret, "GET", "/v1/tenant", Value::Null)
        .await
        .json();
    assert_eq!(usage["usage"]["stacks"], 5, "{usage}");
}

#[tokio::test]
async fn backend_calls_per_terraform_save_and_cli_put() {
    use tenancy_state::counting::CountingBackend;
    let counting = Arc::new(CountingBackend::new(MemoryBackend::new()));
    let backend: Arc<dyn StateBackend> = counting.clone();
    let h = harness_on(backend.clone(), ServerConfig::default(), true).await;
    let secret = h.create_tenant("acme", json!({})).await;
    let auth = basic("acme", &secret);
    let au = [("authorization", auth.as_str())];
    h.call("POST", URL, &au, STATE).await.expect(200);
    h.call("LOCK", LOCK_URL, &au, lock_info(A))
        .await
        .expect(200);
    // warm: the tenant is cached by the auth layer; each save grows the
    // document, so both pay the state_bytes reservation
    counting.reset();
    h.call(
        "POST",
        &format!("{URL}?ID={A}"),
        &au,
        &br#"{"grown": "by well over the bytes of the first document, which had about eighty of them"}"#[..],
    )
    .await
    .expect(200);
    let terraform = counting.take();
    // the CLI's `state put` on the same store (without its session check,
    // which reads the tenant record): the lock check and the counted save
    let tenant = tenancy_core::TenantRegistry::get(
        &**h.state.registry(),
        &tenancy_core::TenantId::new("acme").unwrap(),
    )
    .await
    .unwrap();
    let scoped = h.state.stores().state(&tenant).unwrap();
    let locks = h.state.stores().locks(&tenant).unwrap();
    let store = tenancy_state::stack::StackStore::new(scoped);
    counting.reset();
    let key = tenancy_core::LockKey::stack_env("web", "prod").unwrap();
    let fence = tenancy_lock::holder_fence(
        &*locks,
        &key,
        Some(tenancy_core::LockId::parse(A).unwrap()),
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let doc = tenancy_state::stack::StateDocument::from_bytes(
        br#"{"grown": "by even more bytes than the Terraform save before it wrote, so it reserves again"}"#,
    )
    .unwrap();
    tenancy_state::stack_quota::StackQuota::new(&store, &**h.state.registry(), &tenant)
        .save(
            "web",
            "prod",
            &doc,
            tenancy_state::stack::SaveOptions::new(tenancy_state::stack::Expected::Latest)
                .fenced(fence),
        )
        .await
        .unwrap();
    let cli = counting.take();
    println!("backend calls per Terraform save: {terraform:?}; per CLI state put (without its session check): {cli:?}");
    // a fresh lease is not renewed, so a Terraform save costs what a CLI put
    // does: lock check, current, the usage record for the growth, claim and
    // commit
    assert_eq!(
        terraform, cli,
        "a Terraform save costs what a CLI put costs"
    );
    assert_eq!(terraform.list, 0);
}

#[tokio::test]
async fn stack_documents_count_against_state_bytes_and_objects() {
    for store in common::stores("stack_documents_count_against_state_bytes").await {
        let h = harness_on(store.backend.clone(), ServerConfig::default(), true).await;
        let secret = h
            .create_tenant(
                "acme",
                json!({"limits": {"max_state_bytes": 100, "max_state_objects": 2}}),
            )
            .await;
        let auth = basic("acme", &secret);
        let au = [("authorization", auth.as_str())];
        let usage = || async {
            let u = h
                .tenant(&secret, "GET", "/v1/tenant", Value::Null)
                .await
                .json();
            (
                u["usage"]["state_bytes"].as_u64().unwrap(),
                u["usage"]["state_objects"].as_u64().unwrap(),
            )
        };
        let doc = |n: usize| format!("{{\"pad\": \"{}\"}}", "x".repeat(n)).into_bytes();
        h.call("POST", URL, &au, doc(50)).await.expect(200);
        assert_eq!(usage().await, (61, 1), "{}", store.name);
        // growing past the limit: refused, nothing stored
        let over = h.call("POST", URL, &au, doc(120)).await.expect(429);
        assert_eq!(over.error_code(), "quota_exceeded");
        assert_eq!(h.call("GET", URL, &au, "").await.bytes, doc(50));
        // shrinking gives back; a second environment is a second object; a third is over
        h.call("POST", URL, &au, doc(10)).await.expect(200);
        h.call("POST", "/v1/stacks/web/dev/state", &au, doc(10))
            .await
            .expect(200);
        assert_eq!(usage().await, (42, 2), "{}", store.name);
        h.call("POST", "/v1/stacks/web/qa/state", &au, doc(1))
            .await
            .expect(429);
        // a delete gives its bytes and object back; a rollback counts again
        h.call("DELETE", URL, &au, "").await.expect(200);
        assert_eq!(usage().await, (21, 1), "{}", store.name);
        h.call(
            "POST",
            "/v1/stacks/web/prod/rollback",
            &au,
            &br#"{"to": 1}"#[..],
        )
        .await
        .expect(200);
        assert_eq!(usage().await, (82, 2), "{}", store.name);
    }
}
