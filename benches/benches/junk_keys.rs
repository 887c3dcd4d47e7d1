//! What junk keys cost the tenant middleware, and what they cost everyone
//! else: `TenantAuth::authenticate` with bcrypt on tokio's blocking pool
//! (`TokioBlocking`, as the server wires it), at bcrypt cost 10 (the
//! production default), on core's `MemoryBackend`.
//!
//! Run: `cargo bench -p tenancy-benches --bench junk_keys`.
//!
//! - `cache_hit`: a verified key (the floor).
//! - `malformed_key_401` / `unknown_key_401`: a key that is not a secret, and
//!   a well-formed secret whose lookup id names no tenant, each distinct per
//!   iteration (so the failed-key cache never helps): refused without bcrypt.
//! - `uncached_valid_key`: a valid key on a cold cache: one bcrypt verify.
//! - `uncached_valid_key_under_junk_flood`: the same while 16 tasks send
//!   distinct junk keys as fast as they can.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use criterion::Criterion;
use tenancy_core::credentials::generate_secret;
use tenancy_core::{MemoryBackend, NewTenant, Secret, TenantId, TenantRegistry};
use tenancy_server::{TenantAuth, TokioBlocking};
use tenancy_state::StoreRegistry;

fn headers(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_str(key).expect("header"));
    h
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (registry, key) = rt.block_on(async {
        let registry: Arc<dyn TenantRegistry> = Arc::new(
            StoreRegistry::new(Arc::new(MemoryBackend::new()))
                .with_bcrypt_cost(10)
                .with_blocking(Arc::new(TokioBlocking)),
        );
        registry
            .bootstrap(&Secret::new("bench-admin-password"))
            .await
            .expect("bootstrap");
        let mut new = NewTenant::new(TenantId::new("bench").expect("id"));
        new.limits.requests_per_second = Some(1_000_000_000);
        new.limits.burst = Some(1_000_000_000);
        let created = registry.create(new).await.expect("create");
        (registry, created.secret.expose().to_string())
    });
    let warm = TenantAuth::new(registry.clone());
    let valid = headers(&key);
    rt.block_on(async { warm.authenticate(&valid).await.expect("warm-up") });
    let n = AtomicU64::new(0);

    let mut g = c.benchmark_group("junk_keys");
    g.bench_function("cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { warm.authenticate(&valid).await.expect("authorized") })
    });
    g.bench_function("malformed_key_401", |b| {
        b.to_async(&rt).iter(|| async {
            let junk = headers(&format!("junk{}", n.fetch_add(1, Ordering::Relaxed)));
            assert!(warm.authenticate(&junk).await.is_err());
        })
    });
    g.bench_function("unknown_key_401", |b| {
        b.to_async(&rt).iter(|| async {
            let junk = generate_secret("tnc").expect("a secret");
            assert!(warm.authenticate(&headers(junk.expose())).await.is_err());
        })
    });
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("uncached_valid_key", |b| {
        b.to_async(&rt).iter(|| async {
            let cold = TenantAuth::new(registry.clone());
            cold.authenticate(&valid).await.expect("authorized")
        })
    });
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = TenantAuth::new(registry.clone());
    let floods: Vec<_> = (0..16)
        .map(|_| {
            let (auth, on) = (flood.clone(), flooding.clone());
            rt.spawn(async move {
                while on.load(Ordering::Relaxed) {
                    let junk = generate_secret("tnc").expect("a secret");
                    let _ = auth.authenticate(&headers(junk.expose())).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    g.bench_function("uncached_valid_key_under_junk_flood", |b| {
        b.to_async(&rt).iter(|| async {
            let cold = TenantAuth::new(registry.clone());
            cold.authenticate(&valid).await.expect("authorized")
        })
    });
    flooding.store(false, Ordering::Relaxed);
    rt.block_on(async {
        for f in floods {
            let _ = f.await;
        }
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
