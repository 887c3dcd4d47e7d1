//! Shared helpers of the router tests: an app on a memory store with a
//! bootstrapped registry (bcrypt cost 4), and a request helper.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tenancy_core::{Clock, ManualClock, MemoryBackend, Secret, StateBackend};
use tenancy_server::{app, AppState, ServerConfig, SharedStores};
use tenancy_state::StoreRegistry;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-for-tests";

pub struct Harness {
    pub app: Router,
    pub state: AppState,
    pub backend: Arc<dyn StateBackend>,
    pub clock: ManualClock,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// Asserts the status (the body is in the message) and passes the answer on.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Asserts a JSON error body with a code and returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {v}"));
        assert!(v["error"]["message"].is_string(), "no error.message in {v}");
        code.to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

pub async fn harness() -> Harness {
    harness_with(ServerConfig::default()).await
}

pub async fn harness_with(config: ServerConfig) -> Harness {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    harness_on(backend, config, true).await
}

pub async fn harness_on(
    backend: Arc<dyn StateBackend>,
    config: ServerConfig,
    bootstrap: bool,
) -> Harness {
    harness_built(backend, config, bootstrap, false).await
}

/// Like [`harness_on`], with the locks (their expiry and the locks-held
/// count) on the harness's manual clock too, instead of the system clock.
pub async fn harness_on_manual_locks(
    backend: Arc<dyn StateBackend>,
    config: ServerConfig,
) -> Harness {
    harness_built(backend, config, true, true).await
}

async fn harness_built(
    backend: Arc<dyn StateBackend>,
    config: ServerConfig,
    bootstrap: bool,
    manual_locks: bool,
) -> Harness {
    let clock = ManualClock::starting_now();
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let registry = Arc::new(
        StoreRegistry::new(backend.clone())
            .with_bcrypt_cost(4)
            .with_clock(clock_dyn.clone())
            .with_blocking(Arc::new(tenancy_server::TokioBlocking)),
    );
    if bootstrap {
        tenancy_core::TenantRegistry::bootstrap(&*registry, &Secret::new(ADMIN))
            .await
            .unwrap();
    }
    let mut stores = SharedStores::new(backend.clone());
    if manual_locks {
        stores = stores.with_clock(clock_dyn.clone());
    }
    let state = AppState::builder(registry, Arc::new(stores))
        .audit(backend.clone())
        .config(config)
        .clock(clock_dyn)
        .build()
        .unwrap();
    Harness {
        app: app(state.clone()),
        state,
        backend,
        clock,
    }
}

/// A store a test runs on, and whatever must outlive it (a temp directory).
pub struct TestStore {
    pub name: &'static str,
    pub backend: Arc<dyn StateBackend>,
    _dir: Option<tempfile::TempDir>,
}

/// The stores of a test that touches one: memory, local files, and S3 and
/// PostgreSQL on the test servers (each skipped loudly without one, see
/// `s3_backend_or_skip`, `postgres_backend_or_skip`).
pub async fn stores(test: &str) -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let local = tenancy_state::LocalBackend::open(dir.path()).unwrap();
    let mut out = vec![
        TestStore {
            name: "memory",
            backend: Arc::new(MemoryBackend::new()),
            _dir: None,
        },
        TestStore {
            name: "local files",
            backend: Arc::new(local),
            _dir: Some(dir),
        },
    ];
    if let Some(backend) = tenancy_state::testing::s3_backend_or_skip(test).await {
        out.push(TestStore {
            name: "s3",
            backend,
            _dir: None,
        });
    }
    if let Some(backend) = tenancy_state::testing::postgres_backend_or_skip(test).await {
        out.push(TestStore {
            name: "postgres",
            backend,
            _dir: None,
        });
    }
    out
}

/// Requests as one tenant: `client.post(path, body).await.expect(201)`.
pub struct Client<'a> {
    harness: &'a Harness,
    key: String,
}

impl Client<'_> {
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, Value::Null).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send("PUT", path, body).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, Value::Null).await
    }

    pub async fn send(&self, method: &str, path: &str, body: Value) -> Answer {
        self.harness.tenant(&self.key, method, path, body).await
    }
}

impl Harness {
    /// A client bound to the tenant whose key this is.
    pub fn client(&self, key: &str) -> Client<'_> {
        Client {
            harness: self,
            key: key.to_string(),
        }
    }

    /// The metrics listener's `GET /metrics` body.
    pub async fn metrics(&self) -> String {
        let res = tenancy_server::metrics_app(self.state.clone())
            .oneshot(
                Request::builder()
                    .uri("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            bytes,
        }
    }

    pub async fn admin(&self, method: &str, uri: &str, body: Value) -> Answer {
        let bearer = format!("Bearer {ADMIN}");
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.call(
            method,
            uri,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    pub async fn tenant(&self, key: &str, method: &str, uri: &str, body: Value) -> Answer {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.call(
            method,
            uri,
            &[("x-api-key", key), ("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Creates a tenant and returns its secret.
    pub async fn create_tenant(&self, id: &str, extra: Value) -> String {
        let mut body = json!({ "id": id });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let a = self.admin("POST", "/v1/tenants", body).await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&a.bytes)
        );
        a.json()["secret"].as_str().unwrap().to_string()
    }
}
