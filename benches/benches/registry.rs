//! Registry benches: `authenticate` (and the bare record read) at 100 and
//! 100k tenants on local files, `list` at 1k / 10k / 100k tenants on local
//! files, and `reserve`+`commit` on 1, 16 and 64 tenants at once on memory
//! and local files; with the S3 and PostgreSQL test servers up (`source
//! scripts/s3-server.sh; source scripts/postgres-server.sh`) also `list` of
//! 10k tenants and `reserve`+`commit` on those, in the same run. The
//! PostgreSQL pool is the URL's (`pool_size`, default 16): append
//! `&pool_size=64` to `TENANCY_TEST_POSTGRES_URL` to give 64 tenants a
//! connection each.
//!
//! Run with `cargo bench -p tenancy-benches --bench registry`.
//!
//! bcrypt runs at cost 4 here (the production default is 10, about 73 ms per
//! verify on the reference machine), so that the read path stays visible
//! next to the hash. Seeding 100k tenants through `create` would take 100k
//! bcrypt hashes and 100k fsynced writes; instead one tenant is created
//! normally and the other records are copies of it (new id, same hash)
//! written straight into the local store's directory as plain files, which is
//! exactly how `LocalBackend::open` keeps objects.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use tenancy_core::{
    LimitOverrides, MemoryBackend, NewTenant, Resource, Secret, StateBackend, Tenant, TenantFilter,
    TenantId, TenantRegistry, TenantRegistryExt,
};
use tenancy_state::LocalBackend;
use tenancy_state::StoreRegistry;
use tokio::runtime::Runtime;

mod common;

/// bcrypt cost used by the benches (see the module docs).
const BENCH_BCRYPT_COST: u32 = 4;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A local-files registry with `n` tenants: `bench-000000` created through
/// the registry (its secret returned), the rest copies written as files.
struct Seeded {
    _dir: tempfile::TempDir,
    registry: StoreRegistry,
    id: TenantId,
    secret: Secret,
}

fn seed_local(rt: &Runtime, n: usize) -> Seeded {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn StateBackend> =
        Arc::new(LocalBackend::open(dir.path()).expect("local backend"));
    let registry = StoreRegistry::new(backend).with_bcrypt_cost(BENCH_BCRYPT_COST);
    let id = TenantId::new("bench-000000").expect("id");
    let created = rt.block_on(async {
        registry
            .bootstrap(&Secret::new("bench admin password"))
            .await
            .expect("bootstrap");
        registry
            .create(NewTenant::new(id.clone()))
            .await
            .expect("create")
    });
    write_copies(dir.path(), &created.tenant, n);
    Seeded {
        _dir: dir,
        registry,
        id,
        secret: created.secret,
    }
}

/// Copies the template tenant's record file `n - 1` times under other ids
/// (the record format is private to tenancy-state, so the bytes are copied
/// with the id replaced, as a store holding many tenants has them).
fn write_copies(root: &Path, template: &Tenant, n: usize) {
    let records = root.join("registry");
    let original = std::fs::read_to_string(records.join(format!("{}.yaml", template.id)))
        .expect("template record");
    for i in 1..n {
        let id = format!("bench-{i:06}");
        let bytes = original.replace(template.id.as_str(), &id);
        std::fs::write(records.join(format!("{id}.yaml")), bytes).expect("write record");
    }
}

fn authenticate(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("registry_authenticate_local");
    g.sample_size(50);
    for n in [100usize, 100_000] {
        let s = seed_local(&rt, n);
        g.bench_with_input(BenchmarkId::new("authenticate", n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    s.registry
                        .authenticate(&s.id, &s.secret)
                        .await
                        .expect("authenticate"),
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("authenticate_key", n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    s.registry
                        .authenticate_key(&s.secret)
                        .await
                        .expect("authenticate_key"),
                )
            })
        });
        if n == 100 {
            // An unknown id must cost what a wrong secret costs (dummy verify).
            let wrong = Secret::new("tnc_0123456789abcdefghijABCDEFGHIJ01");
            let unknown = TenantId::new("no-such-tenant").expect("id");
            g.bench_function(BenchmarkId::new("wrong_secret", n), |b| {
                b.to_async(&rt).iter(|| async {
                    black_box(s.registry.authenticate(&s.id, &wrong).await.is_err())
                })
            });
            g.bench_function(BenchmarkId::new("unknown_id", n), |b| {
                b.to_async(&rt).iter(|| async {
                    black_box(s.registry.authenticate(&unknown, &s.secret).await.is_err())
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("get", n), &n, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(s.registry.get(&s.id).await.expect("get")) })
        });
    }
    g.finish();
}

fn list(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("registry_list_local");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for n in [1_000usize, 10_000, 100_000] {
        let s = seed_local(&rt, n);
        g.throughput(Throughput::Elements(n as u64));
        bench_list(&mut g, &rt, &s.registry, n);
    }
    g.finish();
}

/// `reserve`+`commit` pairs on `tenants` tenants at once (one pair each per
/// iteration, all in flight together): 1 measures a pair's latency, more
/// the store's throughput when many tenants reserve concurrently.
fn reserve_commit_on(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    backend: Arc<dyn StateBackend>,
    tenants: usize,
) {
    let registry = StoreRegistry::new(backend).with_bcrypt_cost(BENCH_BCRYPT_COST);
    let ids: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(format!("busy-{i:02}")).expect("id"))
        .collect();
    rt.block_on(async {
        registry
            .bootstrap(&Secret::new("bench admin password"))
            .await
            .expect("bootstrap");
        for id in &ids {
            registry
                .create(NewTenant {
                    limits: LimitOverrides {
                        max_concurrent_jobs: Some(tenancy_core::tenant::MAX_LIMIT_VALUE),
                        ..Default::default()
                    },
                    ..NewTenant::new(id.clone())
                })
                .await
                .expect("create");
        }
    });
    let group = if tenants == 1 {
        "registry_reserve_commit".to_string()
    } else {
        format!("registry_reserve_commit_{tenants}_tenants")
    };
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(tenants as u64));
    if name == "s3" && tenants > 1 {
        // moto answers one request at a time: an iteration takes seconds.
        g.sample_size(10);
    }
    // Only the pairs are timed; each job is then released (untimed), as a
    // finished job is, so the usage records stay at their steady size.
    // (Timed without the release, every iteration left one more committed
    // reservation in the record, and the pair measured a record that grew
    // to thousands of entries: 17-21 ms on every backend alike.)
    g.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let registry = &registry;
            let ids = &ids;
            async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = std::time::Instant::now();
                    let pairs = ids.iter().map(|id| async move {
                        let r = registry
                            .reserve(id, Resource::ConcurrentJobs, 1)
                            .await
                            .expect("reserve");
                        registry.commit(&r).await.expect("commit");
                        r
                    });
                    let done = futures::future::join_all(pairs).await;
                    timed += start.elapsed();
                    let releases = done.iter().map(|r| registry.release(black_box(r)));
                    for r in futures::future::join_all(releases).await {
                        r.expect("release");
                    }
                }
                timed
            }
        })
    });
    g.finish();
}

fn reserve_commit(c: &mut Criterion) {
    let rt = runtime();
    for tenants in [1, 16, 64] {
        reserve_commit_on(c, &rt, "memory", Arc::new(MemoryBackend::new()), tenants);
        let dir = tempfile::tempdir().expect("tempdir");
        reserve_commit_on(
            c,
            &rt,
            "local",
            Arc::new(LocalBackend::open(dir.path()).expect("local backend")),
            tenants,
        );
        for (name, backend) in common::shared_stores(&rt, "registry bench") {
            reserve_commit_on(c, &rt, name, backend, tenants);
        }
    }
}

/// `list` of 10k tenants on S3 and PostgreSQL: one created, the rest copies
/// of its record (as `write_copies` does on files).
fn list_shared(c: &mut Criterion) {
    let rt = runtime();
    for (name, backend) in common::shared_stores(&rt, "registry bench") {
        list_on(c, &rt, name, backend);
    }
}

fn list_on(c: &mut Criterion, rt: &Runtime, name: &str, backend: Arc<dyn StateBackend>) {
    let n = 10_000usize;
    let registry = StoreRegistry::new(backend.clone()).with_bcrypt_cost(BENCH_BCRYPT_COST);
    rt.block_on(async {
        registry
            .bootstrap(&Secret::new("bench admin password"))
            .await
            .expect("bootstrap");
        let t = registry
            .create(NewTenant::new(TenantId::new("bench-000000").expect("id")))
            .await
            .expect("create");
        let key =
            |id: &str| tenancy_core::StateKey::new(format!("registry/{id}.yaml")).expect("key");
        let original = backend
            .get(&key(t.tenant.id.as_str()))
            .await
            .expect("read")
            .expect("the template record");
        let text = String::from_utf8(original.bytes.to_vec()).expect("yaml");
        // Written 64 at a time: seeding S3 one by one would take minutes.
        let text = &text;
        let template = t.tenant.id.as_str();
        let backend = &backend;
        futures::stream::iter(1..n)
            .map(|i| async move {
                let id = format!("bench-{i:06}");
                let bytes = text.replace(template, &id);
                backend
                    .put(&key(&id), bytes.into(), tenancy_core::PutMode::Overwrite)
                    .await
                    .expect("copy");
            })
            .buffer_unordered(64)
            .collect::<()>()
            .await;
    });
    let mut g = c.benchmark_group(format!("registry_list_{name}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(n as u64));
    bench_list(&mut g, rt, &registry, n);
    g.finish();
}

/// `list_all` of a registry holding `n` tenants, in group `g`.
fn bench_list(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    registry: &StoreRegistry,
    n: usize,
) {
    g.bench_with_input(BenchmarkId::new("list", n), &n, |b, &n| {
        b.to_async(rt).iter(|| async {
            let all = registry
                .list_all(TenantFilter::default())
                .await
                .expect("list");
            assert_eq!(all.len(), n);
            black_box(all)
        })
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    authenticate(&mut c);
    list(&mut c);
    list_shared(&mut c);
    reserve_commit(&mut c);
    c.final_summary();
}
