//! Races between a cold-cache key verification and a tenant change: the
//! verification is held between its record read and its bcrypt (a gated
//! `BlockingRunner`), the change lands, then the verification finishes. The
//! change must win on the very next request, for suspend, rotate and delete,
//! and abandoned verifications must keep holding the pool's bound.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use futures::future::BoxFuture;
use tenancy_core::{MemoryBackend, NewTenant, Secret, SystemClock, TenantId, TenantRegistry};
use tenancy_server::{AuthConfig, TenantAuth};
use tenancy_state::{BlockingRunner, StoreRegistry};
use tokio::sync::Notify;

/// Runs jobs on tokio's blocking pool; while armed, the next job first says
/// it was entered and waits to be released. Counts the jobs running at once.
#[derive(Debug, Default)]
struct GateState {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
    running: AtomicUsize,
    most_running: AtomicUsize,
    hold: std::sync::Mutex<Option<Duration>>,
}

#[derive(Debug, Clone, Default)]
struct Gate(Arc<GateState>);

impl BlockingRunner for Gate {
    fn run(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()> {
        let gate = self.0.clone();
        Box::pin(async move {
            if gate.armed.swap(false, Ordering::SeqCst) {
                gate.entered.notify_one();
                gate.release.notified().await;
            }
            let hold = *gate.hold.lock().unwrap();
            let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
            gate.most_running.fetch_max(now, Ordering::SeqCst);
            tokio::task::spawn_blocking(move || {
                if let Some(d) = hold {
                    std::thread::sleep(d);
                }
                job()
            })
            .await
            .unwrap();
            gate.running.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

struct Setup {
    gate: Arc<GateState>,
    registry: Arc<dyn TenantRegistry>,
    auth: TenantAuth,
    watched: Arc<dyn TenantRegistry>,
}

async fn setup(config: AuthConfig) -> Setup {
    let gate = Gate::default();
    let store = StoreRegistry::new(Arc::new(MemoryBackend::new()))
        .with_bcrypt_cost(4)
        .with_blocking(Arc::new(gate.clone()));
    let registry: Arc<dyn TenantRegistry> = Arc::new(store);
    registry
        .bootstrap(&Secret::new("admin-password"))
        .await
        .unwrap();
    let auth = TenantAuth::with_config(registry.clone(), config, Arc::new(SystemClock));
    let watched = auth.watching(registry.clone());
    Setup {
        gate: gate.0,
        registry,
        auth,
        watched,
    }
}

fn headers(key: &Secret) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_str(key.expose()).unwrap());
    h
}

async fn status(auth: &TenantAuth, key: &Secret) -> StatusCode {
    match auth.authenticate(&headers(key)).await {
        Ok(_) => StatusCode::OK,
        Err(refused) => refused.error.status(),
    }
}

/// Which change lands while the verification is held.
#[derive(Debug, Clone, Copy)]
enum Change {
    Suspend,
    Rotate,
    Delete,
}

async fn change_during_cold_verification(change: Change) -> StatusCode {
    let s = setup(AuthConfig {
        refresh_interval: Duration::from_secs(600),
        ..AuthConfig::default()
    })
    .await;
    let id = TenantId::new(format!("race-{change:?}").to_lowercase()).unwrap();
    let key = s
        .registry
        .create(NewTenant::new(id.clone()))
        .await
        .unwrap()
        .secret;
    let g = s.gate.clone();
    g.armed.store(true, Ordering::SeqCst);
    let (auth, k) = (s.auth.clone(), key.clone());
    let inflight = tokio::spawn(async move { status(&auth, &k).await });
    // The verification has read the (still active) record; bcrypt is held.
    g.entered.notified().await;
    match change {
        Change::Suspend => {
            s.watched.suspend(&id, None).await.unwrap();
        }
        Change::Rotate => {
            s.watched.rotate(&id).await.unwrap();
        }
        Change::Delete => {
            s.watched.delete(&id).await.unwrap();
        }
    }
    g.release.notify_one();
    let _ = inflight.await.unwrap();
    status(&s.auth, &key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_a_cold_verification_wins_on_the_next_request() {
    assert_eq!(
        change_during_cold_verification(Change::Suspend).await,
        StatusCode::FORBIDDEN,
        "suspend"
    );
    assert_eq!(
        change_during_cold_verification(Change::Rotate).await,
        StatusCode::UNAUTHORIZED,
        "rotate"
    );
    assert_eq!(
        change_during_cold_verification(Change::Delete).await,
        StatusCode::FORBIDDEN,
        "delete"
    );
}

/// 12 verifications of distinct valid keys, each request dropped after 5 ms
/// while its (slowed) bcrypt runs, never run more than the bound at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_verifications_keep_their_bcrypt_inside_the_pool_bound() {
    let bound = 2;
    let s = setup(AuthConfig {
        max_concurrent_verifications: bound,
        ..AuthConfig::default()
    })
    .await;
    let mut keys = Vec::new();
    for i in 0..12 {
        let id = TenantId::new(format!("pool-{i}")).unwrap();
        keys.push(s.registry.create(NewTenant::new(id)).await.unwrap().secret);
    }
    let g = s.gate.clone();
    g.most_running.store(0, Ordering::SeqCst);
    *g.hold.lock().unwrap() = Some(Duration::from_millis(60));
    for k in &keys {
        let _ = tokio::time::timeout(Duration::from_millis(5), status(&s.auth, k)).await;
    }
    tokio::time::sleep(Duration::from_millis(60 * 12 / bound as u64 + 300)).await;
    *g.hold.lock().unwrap() = None;
    assert!(
        g.most_running.load(Ordering::SeqCst) <= bound,
        "{} bcrypt jobs ran at once, bound {bound}",
        g.most_running.load(Ordering::SeqCst)
    );
    // The abandoned verifications still reached the cache.
    assert!(s.auth.cached_keys() >= 1);
}
