//! Hostile requests on every route (no auth, bad JSON, wrong types, huge
//! bodies, traversal keys, another tenant's ids): each answer is a 4xx with
//! a JSON error body. And a property test over random requests by two
//! tenants: neither ever reads, lists, locks, claims or completes the
//! other's data.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use common::{harness_with, Answer, Harness, ADMIN};
use proptest::prelude::*;
use serde_json::{json, Value};
use tenancy_server::ServerConfig;
use tenancy_server::ROUTES;

const LIMIT: usize = 4096;

fn assert_json_4xx(a: &Answer, what: &str) {
    assert!(
        a.status.is_client_error(),
        "{what}: expected a 4xx, got {} {}",
        a.status,
        String::from_utf8_lossy(&a.bytes)
    );
    let ct = a.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}"
    );
    a.error_code();
    let text = String::from_utf8_lossy(&a.bytes);
    for leak in ["panicked", "backtrace", "/home/", "/tmp/", "src/", ".rs:"] {
        assert!(!text.contains(leak), "{what}: body leaks {leak:?}: {text}");
    }
}

struct World {
    h: Harness,
    alpha: String,
    bravo: String,
    alpha_job: String,
    alpha_worker: String,
    alpha_lock_id: String,
}

async fn world() -> World {
    let h = harness_with(ServerConfig {
        body_limit: LIMIT,
        stack_body_limit: LIMIT,
        ..ServerConfig::default()
    })
    .await;
    let alpha = h.create_tenant("alpha", json!({})).await;
    let bravo = h.create_tenant("bravo", json!({})).await;
    let job = h
        .tenant(&alpha, "POST", "/v1/jobs", json!({"name": "a"}))
        .await
        .json();
    let worker = h
        .tenant(&alpha, "POST", "/v1/workers", json!({"name": "wa"}))
        .await
        .json();
    h.call(
        "PUT",
        "/v1/state/apps/x/prod/state.json",
        &[("x-api-key", &alpha)],
        "alpha",
    )
    .await;
    let lock = h
        .tenant(
            &alpha,
            "POST",
            "/v1/locks/stack:x",
            json!({"ttl_seconds": 600}),
        )
        .await
        .json();
    World {
        alpha_job: job["id"].as_str().unwrap().to_string(),
        alpha_worker: worker["id"].as_str().unwrap().to_string(),
        alpha_lock_id: lock["lock_id"].as_str().unwrap().to_string(),
        h,
        alpha,
        bravo,
    }
}

/// The route with its parameters filled: alpha's ids, as bravo will use them.
fn concrete(w: &World, path: &str) -> String {
    let id = if path.starts_with("/v1/tenants/") {
        "alpha".to_string()
    } else if path.starts_with("/v1/jobs/") {
        w.alpha_job.clone()
    } else {
        w.alpha_worker.clone()
    };
    path.replace("{*key}", "apps/x/prod/state.json")
        .replace("{key}", "stack:x")
        .replace("{id}", &id)
        .replace("{stack}", "x")
        .replace("{env}", "prod")
        .replace("{serial}", "1")
}

fn with_param(path: &str, value: &str) -> Option<String> {
    ["{*key}", "{key}", "{id}"]
        .iter()
        .find(|p| path.contains(*p))
        .map(|p| path.replace(p, value))
}

fn is_admin(path: &str) -> bool {
    path.starts_with("/v1/tenants")
}

fn is_open(path: &str) -> bool {
    !path.starts_with("/v1/")
}

fn takes_json(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("POST", "/v1/tenants")
            | ("PATCH", "/v1/tenants/{id}")
            | ("POST", "/v1/tenants/{id}/suspend")
            | ("POST", "/v1/locks/{key}")
            | ("PUT", "/v1/locks/{key}")
            | ("POST", "/v1/jobs")
            | ("POST", "/v1/jobs/{id}/complete")
            | ("POST", "/v1/jobs/{id}/fail")
            | ("POST", "/v1/workers")
            | ("POST", "/v1/workers/{id}/claim")
    )
}

fn auth_for(w: &World, path: &str) -> Vec<(&'static str, String)> {
    if is_admin(path) {
        vec![("authorization", format!("Bearer {ADMIN}"))]
    } else {
        vec![("x-api-key", w.bravo.clone())]
    }
}

async fn send(
    w: &World,
    method: &str,
    uri: &str,
    auth: &[(&'static str, String)],
    body: Vec<u8>,
) -> Answer {
    let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    w.h.call(method, uri, &headers, body).await
}

#[tokio::test]
async fn every_route_without_credentials_is_401() {
    let w = world().await;
    for (method, path) in ROUTES {
        if is_open(path) {
            continue;
        }
        let uri = concrete(&w, path);
        let a = send(&w, method, &uri, &[], b"{}".to_vec()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_json_4xx(&a, &format!("{method} {path} without auth"));
        let wrong = if is_admin(path) {
            vec![("authorization", "Bearer not-the-admin-token".to_string())]
        } else {
            vec![(
                "x-api-key",
                "tnc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
            )]
        };
        let a = send(&w, method, &uri, &wrong, b"{}".to_vec()).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} wrong credentials"
        );
        assert_json_4xx(&a, &format!("{method} {path} wrong credentials"));
    }
}

#[tokio::test]
async fn every_route_refuses_a_huge_body_with_413() {
    let w = world().await;
    let huge = vec![b'{'; LIMIT * 4];
    for (method, path) in ROUTES {
        let uri = concrete(&w, path);
        let auth = if is_open(path) {
            vec![]
        } else {
            auth_for(&w, path)
        };
        let a = send(&w, method, &uri, &auth, huge.clone()).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}");
        assert_json_4xx(&a, &format!("{method} {path} huge body"));
    }
}

#[tokio::test]
async fn every_json_route_refuses_bad_json_and_wrong_types() {
    let w = world().await;
    let bodies: [(&str, &[u8]); 5] = [
        ("truncated JSON", b"{\"name\": "),
        ("not JSON", b"\xff\xfe garbage"),
        ("an array", b"[1, 2, 3]"),
        ("wrong types", br#"{"id": [], "name": 5, "ttl_seconds": "soon", "worker_id": 7, "plan": {}, "reason": 1}"#),
        ("unknown fields", br#"{"surprise": true}"#),
    ];
    for (method, path) in ROUTES {
        if !takes_json(method, path) {
            continue;
        }
        let uri = concrete(&w, path);
        let uri = if path.starts_with("/v1/locks/") && *method == "PUT" {
            format!("{uri}?lock_id={}", w.alpha_lock_id)
        } else {
            uri
        };
        for (why, body) in bodies {
            let a = send(&w, method, &uri, &auth_for(&w, path), body.to_vec()).await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{method} {path}: {why}: {}",
                String::from_utf8_lossy(&a.bytes)
            );
            assert_json_4xx(&a, &format!("{method} {path} {why}"));
        }
    }
}

#[tokio::test]
async fn every_route_with_a_parameter_refuses_traversal() {
    let w = world().await;
    for (method, path) in ROUTES {
        for evil in [
            "..%2F..%2Fregistry%2Falpha.yaml",
            "%2e%2e",
            "%2e%2e%2f%2e%2e%2ftenants.yaml",
            "..",
            "a%00b",
            "%252e%252e",
        ] {
            let Some(uri) = with_param(path, evil) else {
                continue;
            };
            let a = send(&w, method, &uri, &auth_for(&w, path), b"{}".to_vec()).await;
            assert_json_4xx(&a, &format!("{method} {uri}"));
        }
    }
    // Nothing was written outside the tenants' prefixes.
    let a =
        w.h.call("GET", "/v1/state", &[("x-api-key", &w.bravo)], "")
            .await;
    for k in a.json()["keys"].as_array().unwrap() {
        let k = k["key"].as_str().unwrap();
        assert!(!k.contains(".."), "{k}");
    }
}

#[tokio::test]
async fn another_tenants_ids_get_4xx_and_change_nothing() {
    let w = world().await;
    let bravo_worker =
        w.h.tenant(&w.bravo, "POST", "/v1/workers", json!({"name": "wb"}))
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
    let cases: Vec<(&str, String, Value)> = vec![
        ("GET", format!("/v1/jobs/{}", w.alpha_job), Value::Null),
        (
            "POST",
            format!("/v1/jobs/{}/complete", w.alpha_job),
            json!({"worker_id": w.alpha_worker}),
        ),
        (
            "POST",
            format!("/v1/jobs/{}/fail", w.alpha_job),
            json!({"worker_id": bravo_worker}),
        ),
        (
            "POST",
            format!("/v1/workers/{}/claim", w.alpha_worker),
            Value::Null,
        ),
        (
            "DELETE",
            format!("/v1/workers/{}", w.alpha_worker),
            Value::Null,
        ),
        (
            "GET",
            "/v1/state/apps/x/prod/state.json".into(),
            Value::Null,
        ),
        (
            "DELETE",
            "/v1/state/apps/x/prod/state.json".into(),
            Value::Null,
        ),
        (
            "PUT",
            format!("/v1/locks/stack:x?lock_id={}", w.alpha_lock_id),
            json!({"ttl_seconds": 60}),
        ),
        (
            "DELETE",
            format!("/v1/locks/stack:x?lock_id={}", w.alpha_lock_id),
            Value::Null,
        ),
    ];
    for (method, uri, body) in cases {
        let a = w.h.tenant(&w.bravo, method, &uri, body).await;
        assert_json_4xx(&a, &format!("bravo {method} {uri}"));
    }
    // A tenant header naming another tenant is refused.
    let a =
        w.h.call(
            "GET",
            "/v1/tenant",
            &[("x-api-key", &w.bravo), ("x-tenant-id", "alpha")],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Alpha's things are untouched.
    let a =
        w.h.call(
            "GET",
            "/v1/state/apps/x/prod/state.json",
            &[("x-api-key", &w.alpha)],
            "",
        )
        .await;
    assert_eq!(a.bytes, b"alpha");
    let a =
        w.h.tenant(
            &w.alpha,
            "GET",
            &format!("/v1/jobs/{}", w.alpha_job),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["status"], "queued");
    let a = w.h.tenant(&w.alpha, "GET", "/v1/locks", Value::Null).await;
    assert_eq!(a.json()["locks"][0]["lock_id"], w.alpha_lock_id.as_str());
    let a =
        w.h.tenant(
            &w.alpha,
            "POST",
            &format!("/v1/workers/{}/claim", w.alpha_worker),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["id"], w.alpha_job.as_str());
}

#[tokio::test]
async fn hostile_headers_are_refused_cleanly() {
    let w = world().await;
    let key = w.bravo.clone();
    for (name, value) in [
        ("if-match", "\"v1\", \"v2\""),
        ("if-none-match", "\"v1\""),
        ("if-match", "\"x4\""),
    ] {
        let a =
            w.h.call(
                "PUT",
                "/v1/state/k",
                &[("x-api-key", &key), (name, value)],
                "x",
            )
            .await;
        assert_json_4xx(&a, &format!("PUT with {name}: {value}"));
    }
    let a =
        w.h.call(
            "PUT",
            "/v1/state/k",
            &[
                ("x-api-key", &key),
                ("if-match", "*"),
                ("if-none-match", "*"),
            ],
            "x",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a =
        w.h.call("GET", "/v1/tenant", &[("authorization", "Bearer")], "")
            .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a =
        w.h.call("GET", "/v1/tenant", &[("authorization", "Bearer    ")], "")
            .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a =
        w.h.call("GET", "/v1/state?limit=-1", &[("x-api-key", &key)], "")
            .await;
    assert_json_4xx(&a, "negative limit");
    let a =
        w.h.call(
            "GET",
            "/v1/state?prefix=a&zzz=1",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert_json_4xx(&a, "unknown query parameter");
}

// ---------------------------------------------------------------- property test

#[derive(Debug, Clone)]
enum Op {
    Put { who: usize, key: usize, value: u8 },
    Get { who: usize, key: usize },
    Delete { who: usize, key: usize },
    List { who: usize },
    CreateJob { who: usize },
    GetJob { who: usize, job: usize },
    Claim { who: usize },
    Complete { who: usize, job: usize },
    Lock { who: usize, key: usize },
    Unlock { who: usize, lock: usize },
    ListLocks { who: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..2usize;
    prop_oneof![
        (who.clone(), 0..4usize, any::<u8>()).prop_map(|(who, key, value)| Op::Put {
            who,
            key,
            value
        }),
        (who.clone(), 0..4usize).prop_map(|(who, key)| Op::Get { who, key }),
        (who.clone(), 0..4usize).prop_map(|(who, key)| Op::Delete { who, key }),
        who.clone().prop_map(|who| Op::List { who }),
        who.clone().prop_map(|who| Op::CreateJob { who }),
        (who.clone(), 0..8usize).prop_map(|(who, job)| Op::GetJob { who, job }),
        who.clone().prop_map(|who| Op::Claim { who }),
        (who.clone(), 0..8usize).prop_map(|(who, job)| Op::Complete { who, job }),
        (who.clone(), 0..3usize).prop_map(|(who, key)| Op::Lock { who, key }),
        (who.clone(), 0..6usize).prop_map(|(who, lock)| Op::Unlock { who, lock }),
        who.prop_map(|who| Op::ListLocks { who }),
    ]
}

#[derive(Default)]
struct Model {
    state: [BTreeMap<usize, u8>; 2],
    /// Every job ever created, with its owner and whether it is still queued.
    jobs: Vec<(usize, String)>,
    /// Every lock lease handed out: (owner, key, lock id).
    locks: Vec<(usize, usize, String)>,
}

async fn run_ops(ops: Vec<Op>) {
    let h = harness_with(ServerConfig::default()).await;
    let generous = json!({"limits": {"max_concurrent_jobs": 1000, "max_jobs_per_hour": 1000,
        "requests_per_second": 100000, "burst": 100000}});
    let keys = [
        h.create_tenant("alpha", generous.clone()).await,
        h.create_tenant("bravo", generous).await,
    ];
    let mut workers = Vec::new();
    for k in &keys {
        let w = h
            .tenant(k, "POST", "/v1/workers", json!({"name": "w"}))
            .await
            .json();
        workers.push(w["id"].as_str().unwrap().to_string());
    }
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Put { who, key, value } => {
                let a = h
                    .call(
                        "PUT",
                        &format!("/v1/state/k/{key}"),
                        &[("x-api-key", &keys[who])],
                        vec![value],
                    )
                    .await;
                assert!(a.status.is_success(), "{a:?}", a = a.status);
                m.state[who].insert(key, value);
            }
            Op::Get { who, key } => {
                let a = h
                    .call(
                        "GET",
                        &format!("/v1/state/k/{key}"),
                        &[("x-api-key", &keys[who])],
                        "",
                    )
                    .await;
                match m.state[who].get(&key) {
                    Some(v) => assert_eq!(a.bytes, vec![*v], "tenant {who} reads its own value"),
                    None => assert_eq!(a.status, StatusCode::NOT_FOUND, "tenant {who} key {key}"),
                }
            }
            Op::Delete { who, key } => {
                let a = h
                    .call(
                        "DELETE",
                        &format!("/v1/state/k/{key}"),
                        &[("x-api-key", &keys[who])],
                        "",
                    )
                    .await;
                if m.state[who].remove(&key).is_some() {
                    assert_eq!(a.status, StatusCode::NO_CONTENT);
                } else {
                    assert_eq!(a.status, StatusCode::NOT_FOUND);
                }
            }
            Op::List { who } => {
                let a = h
                    .call(
                        "GET",
                        "/v1/state?prefix=k",
                        &[("x-api-key", &keys[who])],
                        "",
                    )
                    .await;
                let listed: BTreeSet<String> = a.json()["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k["key"].as_str().unwrap().to_string())
                    .collect();
                let want: BTreeSet<String> =
                    m.state[who].keys().map(|k| format!("k/{k}")).collect();
                assert_eq!(listed, want, "tenant {who} lists exactly its own keys");
            }
            Op::CreateJob { who } => {
                let a = h
                    .tenant(&keys[who], "POST", "/v1/jobs", json!({"name": "j"}))
                    .await;
                assert_eq!(a.status, StatusCode::CREATED);
                m.jobs
                    .push((who, a.json()["id"].as_str().unwrap().to_string()));
            }
            Op::GetJob { who, job } => {
                if let Some((owner, id)) = m.jobs.get(job) {
                    let a = h
                        .tenant(&keys[who], "GET", &format!("/v1/jobs/{id}"), Value::Null)
                        .await;
                    if *owner == who {
                        assert_eq!(a.status, StatusCode::OK);
                    } else {
                        assert_eq!(
                            a.status,
                            StatusCode::NOT_FOUND,
                            "tenant {who} reads another's job"
                        );
                    }
                }
            }
            Op::Claim { who } => {
                let a = h
                    .tenant(
                        &keys[who],
                        "POST",
                        &format!("/v1/workers/{}/claim", workers[who]),
                        Value::Null,
                    )
                    .await;
                if a.status == StatusCode::OK {
                    let id = a.json()["id"].as_str().unwrap().to_string();
                    let owner = m.jobs.iter().find(|(_, j)| *j == id).map(|(o, _)| *o);
                    assert_eq!(owner, Some(who), "tenant {who} claimed another's job");
                } else {
                    assert_eq!(a.status, StatusCode::NO_CONTENT);
                }
            }
            Op::Complete { who, job } => {
                if let Some((owner, id)) = m.jobs.get(job) {
                    let a = h
                        .tenant(
                            &keys[who],
                            "POST",
                            &format!("/v1/jobs/{id}/complete"),
                            json!({"worker_id": workers[who]}),
                        )
                        .await;
                    if *owner != who {
                        assert_eq!(
                            a.status,
                            StatusCode::NOT_FOUND,
                            "tenant {who} completes another's job"
                        );
                    } else {
                        assert!(a.status == StatusCode::OK || a.status == StatusCode::CONFLICT);
                    }
                }
            }
            Op::Lock { who, key } => {
                let a = h
                    .tenant(
                        &keys[who],
                        "POST",
                        &format!("/v1/locks/l:{key}"),
                        json!({"ttl_seconds": 600}),
                    )
                    .await;
                let held_by_self = m.locks.iter().any(|(o, k, _)| *o == who && *k == key);
                if held_by_self {
                    assert_eq!(a.status, StatusCode::CONFLICT);
                    assert_eq!(
                        a.json()["error"]["holder"]["tenant"],
                        ["alpha", "bravo"][who]
                    );
                } else {
                    assert_eq!(
                        a.status,
                        StatusCode::CREATED,
                        "another tenant's lock never blocks"
                    );
                    m.locks
                        .push((who, key, a.json()["lock_id"].as_str().unwrap().to_string()));
                }
            }
            Op::Unlock { who, lock } => {
                if let Some((owner, key, id)) = m.locks.get(lock).cloned() {
                    let a = h
                        .tenant(
                            &keys[who],
                            "DELETE",
                            &format!("/v1/locks/l:{key}?lock_id={id}"),
                            Value::Null,
                        )
                        .await;
                    if owner == who {
                        assert_eq!(a.status, StatusCode::NO_CONTENT);
                        m.locks.remove(lock);
                    } else {
                        assert!(
                            a.status.is_client_error(),
                            "tenant {who} released another's lock"
                        );
                    }
                }
            }
            Op::ListLocks { who } => {
                let a = h.tenant(&keys[who], "GET", "/v1/locks", Value::Null).await;
                let listed: BTreeSet<String> = a.json()["locks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        assert_eq!(l["tenant"], ["alpha", "bravo"][who]);
                        l["lock_id"].as_str().unwrap().to_string()
                    })
                    .collect();
                let want: BTreeSet<String> = m
                    .locks
                    .iter()
                    .filter(|(o, _, _)| *o == who)
                    .map(|(_, _, id)| id.clone())
                    .collect();
                assert_eq!(listed, want);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_cross_tenants(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}
