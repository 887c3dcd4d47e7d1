//! End to end over real TCP: the built `tenancy-server` binary on a free
//! loopback port, driven through the whole admin and tenant flow, on local
//! files and on S3 (moto; `source scripts/s3-server.sh`). Two server
//! processes on one store share a tenant's quota.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "e2e-admin-token-0123456789";

struct Server {
    child: Child,
    base: String,
    lines: mpsc::Receiver<String>,
    /// Stdout lines printed before the address (the generated admin token).
    early: Vec<String>,
    /// The metrics listener's base URL.
    metrics: String,
}

impl Server {
    fn start(backend: &str, admin_token: Option<&str>, extra: &[&str]) -> Server {
        let mut args = vec!["--backend", backend];
        args.extend_from_slice(extra);
        Server::start_with(&args, admin_token, None)
    }

    /// Starts the binary with `args` (after `--listen`), and `TENANCY_HOME`
    /// set to `home` when given.
    fn start_with(
        args: &[&str],
        admin_token: Option<&str>,
        home: Option<&std::path::Path>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("TENANCY_BACKEND")
            .env("TENANCY_BCRYPT_COST", "4")
            .env("RUST_LOG", "warn")
            .env_remove("TENANCY_ADMIN_TOKEN")
            .env_remove("TENANCY_ADMIN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t) = admin_token {
            cmd.env("TENANCY_ADMIN_TOKEN", t);
        }
        if let Some(h) = home {
            cmd.env("TENANCY_HOME", h);
        }
        let mut child = cmd.spawn().expect("start tenancy-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            lines,
            early: Vec::new(),
            metrics: String::new(),
        };
        loop {
            let line = server
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the server prints its address within 60 s");
            if let Some(rest) = line.strip_prefix("tenancy-server listening on ") {
                let addr = rest.split_whitespace().next().unwrap();
                server.base = format!("http://{addr}");
                let line = server
                    .lines
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the server prints its metrics address");
                let url = line
                    .strip_prefix("tenancy-server metrics on ")
                    .unwrap_or_else(|| panic!("not the metrics line: {line}"));
                server.metrics = url.trim_end_matches("/metrics").to_string();
                break;
            }
            // Earlier lines (the generated admin token) stay readable.
            server.early.push(line);
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status within 30 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Api {
    http: Client,
}

impl Api {
    fn new() -> Api {
        // reqwest comes without a TLS crypto provider here (tenancy-state's s3
        // feature picks ring); the tests speak plain HTTP but reqwest wants one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    async fn admin(
        &self,
        s: &Server,
        method: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = self
            .http
            .request(method.parse().unwrap(), s.url(path))
            .bearer_auth(ADMIN);
        let req = if body.is_null() { req } else { req.json(&body) };
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn tenant(
        &self,
        s: &Server,
        key: &str,
        method: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = self
            .http
            .request(method.parse().unwrap(), s.url(path))
            .header("x-api-key", key);
        let req = if body.is_null() { req } else { req.json(&body) };
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        if status.is_client_error() || status.is_server_error() {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: error body is not JSON: {text}"));
            assert!(v["error"]["code"].is_string(), "{v}");
            return (status, v);
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn whole_flow(backend: &str) {
    let s = Server::start(backend, Some(ADMIN), &[]);
    let api = Api::new();
    assert_eq!(
        api.http
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        api.http
            .get(s.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let doc: Value = api
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/workers/{id}/claim"].is_object());

    let (st, body) = api.admin(&s, "GET", "/v1/tenants", Value::Null).await;
    assert_eq!(st, 200);
    assert!(body["tenants"].as_array().unwrap().is_empty());
    let res = api.http.get(s.url("/v1/tenants")).send().await.unwrap();
    assert_eq!(res.status(), 401);

    let (st, created) = api
        .admin(
            &s,
            "POST",
            "/v1/tenants",
            json!({"id": "acme", "plan": "free", "secret_prefix": "acme"}),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let key = created["secret"].as_str().unwrap().to_string();
    let (st, _) = api
        .admin(&s, "POST", "/v1/tenants", json!({"id": "acme"}))
        .await;
    assert_eq!(st, 409);

    let (st, me) = api.tenant(&s, &key, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(st, 200);
    assert_eq!(me["id"], "acme");
    let res = api
        .http
        .get(s.url("/v1/tenant"))
        .bearer_auth(&key)
        .header("x-tenant-id", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-ratelimit-remaining"));
    assert!(res.headers().contains_key("x-request-id"));

    // State with ETags.
    let res = api
        .http
        .put(s.url("/v1/state/apps/web/prod/state.json"))
        .header("x-api-key", &key)
        .header("if-none-match", "*")
        .body("{\"serial\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let res = api
        .http
        .get(s.url("/v1/state/apps/web/prod/state.json"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(res.text().await.unwrap(), "{\"serial\":1}");
    let res = api
        .http
        .put(s.url("/v1/state/apps/web/prod/state.json"))
        .header("x-api-key", &key)
        .header("if-match", &etag)
        .body("{\"serial\":2}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api
        .http
        .put(s.url("/v1/state/apps/web/prod/state.json"))
        .header("x-api-key", &key)
        .header("if-match", &etag)
        .body("{\"serial\":3}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let (st, list) = api
        .tenant(&s, &key, "GET", "/v1/state?prefix=apps", Value::Null)
        .await;
    assert_eq!(st, 200);
    assert_eq!(list["keys"][0]["key"], "apps/web/prod/state.json");
    let (st, _) = api
        .tenant(
            &s,
            &key,
            "GET",
            "/v1/state/..%2F..%2Ftenants.yaml",
            Value::Null,
        )
        .await;
    assert_eq!(st, 400);

    // Locks.
    let (st, lease) = api
        .tenant(
            &s,
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 30, "operation": "apply"}),
        )
        .await;
    assert_eq!(st, 201, "{lease}");
    let lock_id = lease["lock_id"].as_str().unwrap().to_string();
    let (st, held) = api
        .tenant(
            &s,
            &key,
            "POST",
            "/v1/locks/stack:web:env:prod",
            json!({"ttl_seconds": 30}),
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(held["error"]["holder"]["operation"], "apply");
    let (st, _) = api
        .tenant(
            &s,
            &key,
            "PUT",
            &format!("/v1/locks/stack:web:env:prod?lock_id={lock_id}&ttl_seconds=60"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);
    let (_, locks) = api.tenant(&s, &key, "GET", "/v1/locks", Value::Null).await;
    assert_eq!(locks["locks"].as_array().unwrap().len(), 1);
    let (st, _) = api
        .tenant(
            &s,
            &key,
            "DELETE",
            &format!("/v1/locks/stack:web:env:prod?lock_id={lock_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 204);

    // Jobs and workers.
    let (st, worker) = api
        .tenant(
            &s,
            &key,
            "POST",
            "/v1/workers",
            json!({"name": "w1", "cpu": 1}),
        )
        .await;
    assert_eq!(st, 201, "{worker}");
    let worker = worker["id"].as_str().unwrap().to_string();
    let (st, _) = api
        .tenant(&s, &key, "POST", "/v1/workers", json!({"name": "w2"}))
        .await;
    assert_eq!(st, 429, "free plan: one worker");
    let (st, job) = api
        .tenant(
            &s,
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": "render", "cpu": 2, "payload": {"frame": 7}}),
        )
        .await;
    assert_eq!(st, 201);
    let job_id = job["id"].as_str().unwrap().to_string();
    let (st, claimed) = api
        .tenant(
            &s,
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(claimed["id"], job_id.as_str());
    let (st, _) = api
        .tenant(
            &s,
            &key,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 204);
    let (st, done) = api
        .tenant(
            &s,
            &key,
            "POST",
            &format!("/v1/jobs/{job_id}/complete"),
            json!({"worker_id": worker, "result": {"frames": 1}}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(done["status"], "completed");
    let (st, stats) = api
        .admin(&s, "GET", "/v1/tenants/acme/stats", Value::Null)
        .await;
    assert_eq!(st, 200);
    assert_eq!(stats["usage"]["jobs_completed"], 1);
    assert_eq!(stats["usage"]["jobs_active"], 0);
    assert_eq!(stats["usage"]["cpu_cores"], 1);

    // Another tenant sees none of it.
    let (_, other) = api
        .admin(&s, "POST", "/v1/tenants", json!({"id": "other"}))
        .await;
    let other = other["secret"].as_str().unwrap().to_string();
    let (st, _) = api
        .tenant(
            &s,
            &other,
            "GET",
            &format!("/v1/jobs/{job_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = api
        .tenant(
            &s,
            &other,
            "GET",
            "/v1/state/apps/web/prod/state.json",
            Value::Null,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = api
        .tenant(
            &s,
            &other,
            "POST",
            &format!("/v1/workers/{worker}/claim"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 404);

    // Lifecycle: rotation, suspension, deletion take effect on the next request.
    let (st, rotated) = api
        .admin(&s, "POST", "/v1/tenants/acme/rotate", Value::Null)
        .await;
    assert_eq!(st, 200);
    let new_key = rotated["secret"].as_str().unwrap().to_string();
    assert_eq!(
        api.tenant(&s, &key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        401
    );
    assert_eq!(
        api.tenant(&s, &new_key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        api.admin(
            &s,
            "POST",
            "/v1/tenants/acme/suspend",
            json!({"reason": "audit"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.tenant(&s, &new_key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        403
    );
    assert_eq!(
        api.admin(&s, "POST", "/v1/tenants/acme/activate", Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        api.tenant(&s, &new_key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        api.admin(&s, "DELETE", "/v1/tenants/acme", Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        api.tenant(&s, &new_key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        403
    );

    let public = api.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(
        public.status(),
        404,
        "the public listener serves no metrics"
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", s.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tenancy_tenants 2"), "{metrics}");
    promtool_accepts(&metrics);
    assert!(
        metrics.contains(
            r#"tenant_api_requests_total{tenant="other",route="/v1/jobs/{id}",status="404"} 1"#
        ),
        "{metrics}"
    );

    let status = s.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// 32 concurrent job creations by a free-plan tenant (5 concurrent jobs),
/// spread over two server processes on one store: exactly 5 get 201.
async fn two_servers_share_the_quota(backend: &str) {
    let a = Server::start(backend, Some(ADMIN), &[]);
    let b = Server::start(backend, Some(ADMIN), &[]);
    let api = Api::new();
    let (st, created) = api
        .admin(
            &a,
            "POST",
            "/v1/tenants",
            json!({"id": "burst", "plan": "free"}),
        )
        .await;
    assert_eq!(st, 201);
    let key = created["secret"].as_str().unwrap().to_string();
    // Warm both caches so the burst measures the quota, not bcrypt.
    assert_eq!(
        api.tenant(&a, &key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        api.tenant(&b, &key, "GET", "/v1/tenant", Value::Null)
            .await
            .0,
        200
    );
    let calls = (0..32).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        api.tenant(
            server,
            &key,
            "POST",
            "/v1/jobs",
            json!({"name": format!("job-{i}")}),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let created = answers.iter().filter(|(st, _)| *st == 201).count();
    let refused = answers.iter().filter(|(st, _)| *st == 429).count();
    assert_eq!((created, refused), (5, 27), "{answers:?}");
    let (_, stats) = api
        .admin(&b, "GET", "/v1/tenants/burst/stats", Value::Null)
        .await;
    assert_eq!(stats["usage"]["jobs_active"], 5);
    // Both replicas list the same five jobs.
    let (_, la) = api.tenant(&a, &key, "GET", "/v1/jobs", Value::Null).await;
    let (_, lb) = api.tenant(&b, &key, "GET", "/v1/jobs", Value::Null).await;
    assert_eq!(la["jobs"].as_array().unwrap().len(), 5);
    assert_eq!(la, lb);
}

/// One client's create -> claim -> complete/fail loop with worker churn,
/// every failure ignored (the server dies under it).
async fn churn(http: Client, base: String, key: String) {
    let call = |method: &'static str, path: String, body: Value| {
        let req = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("x-api-key", &key)
            .json(&body);
        async move {
            let res = req.send().await.ok()?;
            let ok = res.status().is_success();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            ok.then_some(v)
        }
    };
    for round in 0u64.. {
        let worker = call("POST", "/v1/workers".into(), json!({"name": "w", "cpu": 1}))
            .await
            .and_then(|w| w["id"].as_str().map(str::to_string));
        for _ in 0..2 {
            call("POST", "/v1/jobs".into(), json!({"name": "j", "cpu": 1})).await;
        }
        let Some(w) = worker else { continue };
        for _ in 0..2 {
            let claimed = call("POST", format!("/v1/workers/{w}/claim"), json!({})).await;
            let Some(id) = claimed.and_then(|j| j["id"].as_str().map(str::to_string)) else {
                break;
            };
            let how = if round % 3 == 0 { "fail" } else { "complete" };
            call(
                "POST",
                format!("/v1/jobs/{id}/{how}"),
                json!({"worker_id": w}),
            )
            .await;
        }
        if round % 2 == 1 {
            call("DELETE", format!("/v1/workers/{w}"), Value::Null).await;
        }
    }
}

/// Usage against the live records: Ok when they agree, else what differs.
async fn usage_matches_records(api: &Api, s: &Server, key: &str) -> Result<(), String> {
    let (_, jobs) = api
        .tenant(s, key, "GET", "/v1/jobs?limit=1000", Value::Null)
        .await;
    let (_, workers) = api.tenant(s, key, "GET", "/v1/workers", Value::Null).await;
    let (_, me) = api.tenant(s, key, "GET", "/v1/tenant", Value::Null).await;
    let jobs = jobs["jobs"].as_array().cloned().unwrap_or_default();
    let workers = workers["workers"].as_array().cloned().unwrap_or_default();
    let count = |st: &str| jobs.iter().filter(|j| j["status"] == st).count() as u64;
    let live = count("queued") + count("running");
    let cpu: u64 = jobs
        .iter()
        .filter(|j| j["status"] == "queued" || j["status"] == "running")
        .chain(workers.iter())
        .map(|x| x["cpu"].as_u64().unwrap_or(0))
        .sum();
    let u = &me["usage"];
    let want = json!({
        "jobs_active": live, "workers": workers.len(), "cpu_cores": cpu,
        "jobs_completed": count("completed"), "jobs_failed": count("failed"),
    });
    let got = json!({
        "jobs_active": u["jobs_active"], "workers": u["workers"], "cpu_cores": u["cpu_cores"],
        "jobs_completed": u["jobs_completed"], "jobs_failed": u["jobs_failed"],
    });
    if want == got {
        Ok(())
    } else {
        Err(format!("records say {want}, usage says {got}"))
    }
}

/// kill -9 of the server at 20 pseudo-random points of a busy job and
/// worker loop; then, within a few reconcile intervals of the next start,
/// usage equals exactly what the live records hold and every queued job is
/// claimable.
async fn kill_nine_loop(backend: &str) {
    let api = Api::new();
    let fast = [
        "--reconcile-interval-secs",
        "1",
        "--reconcile-grace-secs",
        "1",
    ];
    let key = {
        let s = Server::start(backend, Some(ADMIN), &fast);
        let (st, t) = api
            .admin(
                &s,
                "POST",
                "/v1/tenants",
                json!({"id": "crashy", "plan": "free",
                    "limits": {"max_workers": 3, "max_jobs_per_hour": 100000, "max_cpu_cores": 1000}}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{t}");
        t["secret"].as_str().unwrap().to_string()
    };
    for i in 0..20u64 {
        let s = Server::start(backend, Some(ADMIN), &fast);
        let clients: Vec<_> = (0..3)
            .map(|_| tokio::spawn(churn(api.http.clone(), s.base.clone(), key.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(40 + (i * 61) % 260)).await;
        drop(s); // SIGKILL, then wait for the process
        for c in clients {
            c.abort();
        }
    }
    let s = Server::start(backend, Some(ADMIN), &fast);
    let mut last = Err(String::new());
    for _ in 0..80 {
        last = usage_matches_records(&api, &s, &key).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last,
        Ok(()),
        "usage never matched the records after the crashes"
    );
    // Every queued job is claimable: free the worker slots, then claim all.
    let (_, workers) = api
        .tenant(&s, &key, "GET", "/v1/workers", Value::Null)
        .await;
    for w in workers["workers"].as_array().unwrap() {
        let id = w["id"].as_str().unwrap();
        let (st, _) = api
            .tenant(
                &s,
                &key,
                "DELETE",
                &format!("/v1/workers/{id}"),
                Value::Null,
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    let (_, w) = api
        .tenant(&s, &key, "POST", "/v1/workers", json!({"name": "sweeper"}))
        .await;
    let w = w["id"].as_str().unwrap().to_string();
    let (_, jobs) = api
        .tenant(
            &s,
            &key,
            "GET",
            "/v1/jobs?status=queued&limit=1000",
            Value::Null,
        )
        .await;
    let queued = jobs["jobs"].as_array().unwrap().len();
    let mut claimed = 0;
    // A job whose create was killed between its record and its queue
    // marker gets the marker back from the reconciler once it is older than
    // the grace (1 s here, every 1 s): keep claiming until all are claimed
    // or well past that bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (st, j) = api
            .tenant(
                &s,
                &key,
                "POST",
                &format!("/v1/workers/{w}/claim"),
                Value::Null,
            )
            .await;
        if st == StatusCode::NO_CONTENT {
            if claimed >= queued || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(st, StatusCode::OK, "{j}");
        claimed += 1;
        let id = j["id"].as_str().unwrap();
        api.tenant(
            &s,
            &key,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            json!({"worker_id": w}),
        )
        .await;
    }
    assert!(
        claimed >= queued,
        "{claimed} of {queued} queued jobs were claimable within 15 s"
    );
    assert_eq!(usage_matches_records(&api, &s, &key).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_no_quota_and_strands_no_job_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    kill_nine_loop(&format!("file://{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_no_quota_and_strands_no_job_on_s3() {
    if let Some(url) = s3_url("kill_nine_loses_no_quota_and_strands_no_job_on_s3") {
        kill_nine_loop(&url).await;
    }
}

fn s3_url(test: &str) -> Option<String> {
    tenancy_state::testing::s3_url_or_skip(test, "e2e")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_on_postgres() {
    if let Some(url) = tenancy_state::testing::postgres_url_or_skip("whole_flow_on_postgres") {
        whole_flow(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_no_quota_and_strands_no_job_on_postgres() {
    if let Some(url) = tenancy_state::testing::postgres_url_or_skip(
        "kill_nine_loses_no_quota_and_strands_no_job_on_postgres",
    ) {
        kill_nine_loop(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    whole_flow(&format!("file://{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_on_s3() {
    if let Some(url) = s3_url("whole_flow_on_s3") {
        whole_flow(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_quota_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    two_servers_share_the_quota(&format!("file://{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_quota_on_s3() {
    if let Some(url) = s3_url("two_processes_share_the_quota_on_s3") {
        two_servers_share_the_quota(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_token_is_printed_once_and_only_its_hash_kept() {
    let dir = tempfile::tempdir().unwrap();
    let backend = format!("file://{}", dir.path().display());
    let first = Server::start(&backend, None, &[]);
    let token = first
        .early
        .iter()
        .find_map(|l| l.strip_prefix("admin token (shown once, only its hash is kept): "))
        .expect("the first start prints the generated token")
        .to_string();
    // ... and how the CLI uses it, with this server's address.
    let login = format!("log in with: tenancy --backend {} admin login", first.base);
    assert!(
        first.early.iter().any(|l| l.starts_with(&login)),
        "{:?}",
        first.early
    );
    let api = Api::new();
    let res = api
        .http
        .get(first.url("/v1/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(first.terminate().success());
    // Only the hash is on disk.
    let manifest = std::fs::read_to_string(dir.path().join("tenants.yaml")).unwrap();
    assert!(!manifest.contains(&token));
    // A second start prints no token and accepts the first one.
    let second = Server::start(&backend, None, &[]);
    assert!(second.early.iter().all(|l| !l.contains("admin token")));
    let res = api
        .http
        .get(second.url("/v1/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = api
        .http
        .get(second.url("/v1/tenants"))
        .bearer_auth("wrong-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    drop(second);
    // There is one admin credential: a token file that does not match it
    // stops the start with a message (it never becomes a second credential),
    // and so does a token outside 8..=72 bytes; the matching one works.
    let file = dir.path().join("admin-token");
    for (bad, says) in [
        (
            "file-token-0123456789",
            "does not match this store's admin credential",
        ),
        ("x", "must be 8 to 72 bytes"),
        (&*"y".repeat(117), "must be 8 to 72 bytes"),
    ] {
        std::fs::write(&file, format!("{bad}\n")).unwrap();
        let err = failed_start(&backend, &["--admin-token-file", file.to_str().unwrap()]);
        assert!(err.contains(says), "{bad}: {err}");
    }
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let third = Server::start(
        &backend,
        None,
        &["--admin-token-file", file.to_str().unwrap()],
    );
    let res = api
        .http
        .get(third.url("/v1/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `promtool check metrics` (Prometheus's own linter) accepts the whole
/// scrape: exit 0 and nothing reported. Required in CI (`.ci/run` installs
/// it); elsewhere skipped loudly when promtool is missing.
fn promtool_accepts(text: &str) {
    if let Some(findings) = promtool_findings(text) {
        assert!(findings.is_empty(), "promtool check metrics: {findings}");
    }
}

/// What `promtool check metrics` reports on `text` (empty when it accepts
/// it; a failing exit without output is reported too), or `None` when
/// promtool is not installed outside CI.
fn promtool_findings(text: &str) -> Option<String> {
    use std::io::Write as _;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED promtool check: promtool not found ({e})");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && findings.trim().is_empty() {
        findings = format!("exit {}", out.status);
    }
    Some(findings.trim().to_string())
}

/// The promtool check can fail: a counter without `_total` is reported.
#[test]
fn promtool_reports_a_metric_against_the_conventions() {
    let bad = "# HELP jobs_count Jobs.\n# TYPE jobs_count counter\njobs_count 1\n";
    if let Some(findings) = promtool_findings(bad) {
        assert!(findings.contains("_total"), "{findings}");
    }
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn failed_start(backend: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--backend",
            backend,
        ])
        .args(extra)
        .env("TENANCY_BCRYPT_COST", "4")
        .env_remove("TENANCY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_backend_fails_the_start_with_a_message() {
    let err = failed_start("ftp://nowhere", &[]);
    assert!(err.contains("unsupported scheme"), "{err}");
}

/// A `--listen` that is no address exits 2 with one line saying so, before
/// anything starts.
#[test]
fn a_bad_listen_address_exits_2_with_one_line() {
    for bad in [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:99999",
        "http://127.0.0.1:80",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tenancy-server"))
            .args(["--listen", bad, "--backend", "memory://"])
            .env_remove("TENANCY_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(
            err.starts_with("tenancy-server: --listen ") && err.contains("HOST:PORT"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "nothing started");
    }
}

/// `--log-format json` writes one JSON object per line, and text logs to a
/// pipe have no ANSI colour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_or_plain_text_on_a_pipe() {
    let api = Api::new();
    for (format, json) in [("json", true), ("text", false)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(["--backend", "memory://", "--log-format", format])
            .env("TENANCY_ADMIN_TOKEN", ADMIN)
            .env("TENANCY_BCRYPT_COST", "4")
            .env("RUST_LOG", "info")
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("tenancy-server listening on ") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "no address");
        }
        let addr = line.split_whitespace().nth(3).unwrap().to_string();
        let res = api
            .http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("finished processing request"),
            "{format}: {err}"
        );
        assert!(
            !err.contains('\u{1b}'),
            "{format}: ANSI escapes on a pipe: {err}"
        );
        for l in err.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = serde_json::from_str::<Value>(l);
            assert_eq!(parsed.is_ok(), json, "{format}: {l}");
        }
    }
}

/// What the stack writer of the restart test saw.
#[derive(Debug, Default)]
struct Saves {
    /// Documents (`{"n": n}`) the server acknowledged with 200.
    acked: Vec<u64>,
    /// The highest `n` sent.
    sent: u64,
    /// Every status answered, with how often.
    statuses: std::collections::BTreeMap<u16, u64>,
}

/// How far the stack writer has got, for the test to wait on.
#[derive(Debug, Default)]
struct Progress {
    stop: std::sync::atomic::AtomicBool,
    acked: std::sync::atomic::AtomicU64,
    unavailable: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Waits (a bounded poll, at most 30 s) until `counter` reaches `at_least`.
    async fn wait(&self, what: &str, counter: fn(&Progress) -> u64, at_least: u64) {
        for _ in 0..3000 {
            if counter(self) >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the writer never got to {at_least} {what} in 30 s: {self:?}");
    }

    fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn unavailable(&self) -> u64 {
        self.unavailable.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Saves `{"n": 1}`, `{"n": 2}`, ... to stack `web/prod` until told to stop.
async fn save_loop(
    http: Client,
    base: String,
    key: String,
    progress: std::sync::Arc<Progress>,
) -> Saves {
    use std::sync::atomic::Ordering;
    let mut saves = Saves::default();
    while !progress.stop.load(Ordering::Relaxed) {
        let n = saves.sent + 1;
        saves.sent = n;
        let res = http
            .post(format!("{base}/v1/stacks/web/prod/state"))
            .header("x-api-key", &key)
            .body(json!({ "n": n }).to_string())
            .send()
            .await;
        match res {
            Ok(r) => {
                *saves.statuses.entry(r.status().as_u16()).or_default() += 1;
                if r.status() == StatusCode::OK {
                    saves.acked.push(n);
                    progress.acked.fetch_add(1, Ordering::Relaxed);
                } else if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                    progress.unavailable.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => panic!("the server itself stopped answering: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    saves
}

/// The database crashes (`pg_ctl stop -m immediate`) and comes back while
/// the server is saving a stack. While it is down, requests get 503 with a
/// JSON error and `/readyz` says so, and the server stays up; once it is
/// back, requests succeed again without restarting the server; and nothing
/// is half-written: the stack's state is one of the documents sent, no
/// older than the last one acknowledged, it is the newest version of the
/// history, and the tenant's stack count is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_gives_503_then_recovers_with_nothing_half_written() {
    use std::sync::atomic::Ordering;
    let Some(pg) = tenancy_state::testing::PostgresCluster::start_or_skip(
        "a_database_restart_mid_run_gives_503_then_recovers_with_nothing_half_written",
    ) else {
        return;
    };
    let api = Api::new();
    let s = Server::start(&pg.url(), Some(ADMIN), &[]);
    let (st, t) = api
        .admin(
            &s,
            "POST",
            "/v1/tenants",
            json!({"id": "steady", "plan": "pro"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let key = t["secret"].as_str().unwrap().to_string();
    let path = "/v1/stacks/web/prod/state";

    let progress = std::sync::Arc::new(Progress::default());
    let writer = tokio::spawn(save_loop(
        api.http.clone(),
        s.base.clone(),
        key.clone(),
        progress.clone(),
    ));
    progress.wait("saves", Progress::acked, 5).await;
    pg.crash();

    // Down: 503 with a JSON error and Retry-After (the cause, with the
    // database's address, goes to the server's log, not to tenants), and
    // readiness says so.
    let res = api
        .http
        .get(s.url(path))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
    let ready = api.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    progress
        .wait("refused saves", Progress::unavailable, 1)
        .await;

    pg.start();
    let mut back = false;
    for _ in 0..300 {
        let (st, _) = api.tenant(&s, &key, "GET", path, Value::Null).await;
        if st == StatusCode::OK {
            back = true;
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "the server did not recover within 30 s of the restart"
    );
    // The writer saves a few more through the new connections.
    progress
        .wait("saves", Progress::acked, progress.acked() + 3)
        .await;
    progress.stop.store(true, Ordering::Relaxed);
    let saves = writer.await.unwrap();

    let only: Vec<u16> = saves.statuses.keys().copied().collect();
    assert_eq!(only, vec![200, 503], "only saves and 503s: {saves:?}");
    let last_acked = *saves.acked.last().unwrap();
    assert!(
        saves.statuses[&200] >= 2 && saves.statuses[&503] >= 1,
        "{saves:?}"
    );
    let (st, current) = api.tenant(&s, &key, "GET", path, Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    let n = current["n"].as_u64().expect("a whole document");
    assert!(
        n >= last_acked && n <= saves.sent,
        "state {n}: acknowledged up to {last_acked}, sent up to {}",
        saves.sent
    );
    let (_, list) = api.tenant(&s, &key, "GET", "/v1/stacks", Value::Null).await;
    let stacks = list["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 1, "{list}");
    assert!(stacks[0]["damaged"].is_null(), "{list}");
    let serial = stacks[0]["serial"].as_u64().unwrap();
    let (_, history) = api
        .tenant(&s, &key, "GET", "/v1/stacks/web/prod/history", Value::Null)
        .await;
    assert_eq!(history["damaged"], json!([]), "{history}");
    let newest = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["serial"].as_u64())
        .max();
    assert_eq!(newest, Some(serial), "{history}");
    let (_, version) = api
        .tenant(
            &s,
            &key,
            "GET",
            &format!("/v1/stacks/web/prod/history/{serial}"),
            Value::Null,
        )
        .await;
    assert_eq!(version, current, "the newest version is the current state");
    let (_, me) = api.tenant(&s, &key, "GET", "/v1/tenant", Value::Null).await;
    assert_eq!(me["usage"]["stacks"], 1, "{me}");
}
