//! State benches: get and put, raw versus `TenantScoped`, on memory, local
//! files, and S3 and PostgreSQL when their test servers are up (in the same
//! run, on the same physical keys), stack-state save and read, saves of 64
//! stacks at once (throughput), and the
//! backend calls of one stack operation.
//!
//! Run with `cargo bench -p tenancy-benches --bench state` (after `source
//! scripts/s3-server.sh; source scripts/postgres-server.sh` for the shared
//! stores). The call counts
//! are printed first (they are exact, not timed); criterion then measures.
//! Target: scoped costs at most 1.05x raw. Also: one audit append
//! (`AuditLog::append`) next to a plain `put` with `Create` of an object of
//! the same size at a new key, on the same backend in the same run, and
//! the backend calls of an append.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use tenancy_core::audit::{Actor, NewEntry, Outcome, Scope};
use tenancy_core::{MemoryBackend, PutMode, StateBackend, StateKey, TenantId};
use tenancy_state::audit::AuditLog;
use tenancy_state::counting::CountingBackend;
use tenancy_state::stack::StackStore;
use tenancy_state::{LocalBackend, TenantScoped};
use tokio::runtime::Runtime;

mod common;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn key(s: &str) -> StateKey {
    StateKey::new(s).expect("valid key")
}

/// 1 KiB, about a small state document.
fn value() -> Bytes {
    Bytes::from(vec![b'x'; 1024])
}

/// The backends under test: (name, raw, scoped). Raw works on the full key
/// `tenants/acme/v1/<k>`, scoped on `<k>`, so both touch the same object.
fn backends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn StateBackend>)> {
    vec![
        ("memory", Arc::new(MemoryBackend::new())),
        (
            "local",
            Arc::new(LocalBackend::open(dir).expect("local backend in a temp dir")),
        ),
    ]
}

/// [`backends`] and the shared stores of [`common::shared_stores`], opened on `rt`.
fn all_backends(rt: &Runtime, dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn StateBackend>)> {
    let mut all = backends(dir);
    all.extend(common::shared_stores(rt, "state bench"));
    all
}

fn get_put(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let acme = TenantId::new("acme").expect("tenant id");
    for (name, raw) in all_backends(&rt, dir.path()) {
        let scoped = TenantScoped::new(raw.clone(), &acme, "v1").expect("scope");
        let short = key("bench/obj.json");
        let full = scoped.prefix().join(&short).expect("joined key");
        rt.block_on(raw.put(&full, value(), PutMode::Overwrite))
            .expect("seed");

        let mut g = c.benchmark_group(format!("state_get/{name}"));
        g.bench_function(BenchmarkId::new("raw", name), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(raw.get(&full).await.expect("get")) })
        });
        g.bench_function(BenchmarkId::new("scoped", name), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(scoped.get(&short).await.expect("get")) })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("state_put/{name}"));
        g.bench_function(BenchmarkId::new("raw", name), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    raw.put(&full, value(), PutMode::Overwrite)
                        .await
                        .expect("put"),
                )
            })
        });
        g.bench_function(BenchmarkId::new("scoped", name), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(
                    scoped
                        .put(&short, value(), PutMode::Overwrite)
                        .await
                        .expect("put"),
                )
            })
        });
        g.finish();
    }
}

fn stack(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let acme = TenantId::new("acme").expect("tenant id");
    let doc = json!({"image": "web:1.0", "replicas": 3, "env": {"A": "1", "B": "2"}});
    for (name, raw) in all_backends(&rt, dir.path()) {
        let store =
            StackStore::new(TenantScoped::new(raw, &acme, "v1").expect("scope")).with_retention(20);
        let mut serial = rt
            .block_on(store.save("web", "prod", &doc, None))
            .expect("first save")
            .serial;
        let mut g = c.benchmark_group(format!("stack/{name}"));
        g.bench_function(BenchmarkId::new("save", name), |b| {
            b.iter(|| {
                serial = rt
                    .block_on(store.save("web", "prod", &doc, Some(serial)))
                    .expect("save")
                    .serial;
            })
        });
        g.bench_function(BenchmarkId::new("current", name), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(store.current("web", "prod").await.expect("read")) })
        });
        g.finish();
    }
}

/// Saves of 64 stacks of one tenant at once (one save each per iteration,
/// all in flight together): the store's throughput when many stacks are
/// applied concurrently. The PostgreSQL pool is the URL's `pool_size`.
fn stacks_at_once(c: &mut Criterion) {
    const STACKS: usize = 64;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let acme = TenantId::new("acme").expect("tenant id");
    let doc = json!({"image": "web:1.0", "replicas": 3, "env": {"A": "1", "B": "2"}});
    let mut g = c.benchmark_group(format!("stack_save_{STACKS}_stacks"));
    g.throughput(Throughput::Elements(STACKS as u64));
    for (name, raw) in all_backends(&rt, dir.path()) {
        if name == "s3" {
            // moto answers one request at a time: an iteration takes seconds.
            g.sample_size(10);
        }
        let store =
            StackStore::new(TenantScoped::new(raw, &acme, "v1").expect("scope")).with_retention(20);
        let envs: Vec<String> = (0..STACKS).map(|i| format!("s{i:02}")).collect();
        let mut serials: Vec<u64> = rt.block_on(async {
            let saves = envs.iter().map(|env| store.save("web", env, &doc, None));
            futures::future::join_all(saves)
                .await
                .into_iter()
                .map(|r| r.expect("first save").serial)
                .collect()
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                serials = rt.block_on(async {
                    let saves = envs
                        .iter()
                        .zip(&serials)
                        .map(|(env, serial)| store.save("web", env, &doc, Some(*serial)));
                    futures::future::join_all(saves)
                        .await
                        .into_iter()
                        .map(|r| r.expect("save").serial)
                        .collect()
                });
            })
        });
    }
    g.finish();
}

/// Median time per call of `raw` and `scoped`, measured in alternating
/// batches (the order flips every round) so that drift and background load
/// hit both alike.
fn interleaved<R, RF, S, SF>(
    rt: &Runtime,
    batch: u32,
    rounds: u32,
    mut raw: R,
    mut scoped: S,
) -> (Duration, Duration)
where
    R: FnMut() -> RF,
    RF: Future<Output = ()>,
    S: FnMut() -> SF,
    SF: Future<Output = ()>,
{
    let mut r = Vec::with_capacity(rounds as usize);
    let mut s = Vec::with_capacity(rounds as usize);
    rt.block_on(async {
        for round in 0..rounds {
            for first_raw in [round % 2 == 0, round % 2 == 1] {
                let t = Instant::now();
                if first_raw {
                    for _ in 0..batch {
                        raw().await;
                    }
                    r.push(t.elapsed() / batch);
                } else {
                    for _ in 0..batch {
                        scoped().await;
                    }
                    s.push(t.elapsed() / batch);
                }
            }
        }
    });
    r.sort();
    s.sort();
    (r[r.len() / 2], s[s.len() / 2])
}

/// Scoped versus raw get and put, interleaved, printed before the criterion runs.
fn print_interleaved_ratios() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let acme = TenantId::new("acme").expect("tenant id");
    for (name, raw) in backends(dir.path()) {
        let scoped = TenantScoped::new(raw.clone(), &acme, "v1").expect("scope");
        let short = key("bench/obj.json");
        let full = scoped.prefix().join(&short).expect("joined key");
        rt.block_on(raw.put(&full, value(), PutMode::Overwrite))
            .expect("seed");
        let (get_batch, put_batch) = if name == "memory" {
            (1000, 1000)
        } else {
            (50, 4)
        };
        let (r, s) = interleaved(
            &rt,
            get_batch,
            200,
            || async {
                black_box(raw.get(&full).await.expect("get"));
            },
            || async {
                black_box(scoped.get(&short).await.expect("get"));
            },
        );
        report_ratio("get", name, r, s);
        let (r, s) = interleaved(
            &rt,
            put_batch,
            200,
            || async {
                black_box(
                    raw.put(&full, value(), PutMode::Overwrite)
                        .await
                        .expect("put"),
                );
            },
            || async {
                black_box(
                    scoped
                        .put(&short, value(), PutMode::Overwrite)
                        .await
                        .expect("put"),
                );
            },
        );
        report_ratio("put", name, r, s);
    }
}

fn report_ratio(op: &str, backend: &str, raw: Duration, scoped: Duration) {
    println!(
        "interleaved {op} {backend:<7} raw {:>10.3?} scoped {:>10.3?} ratio {:.3}",
        raw,
        scoped,
        scoped.as_secs_f64() / raw.as_secs_f64()
    );
}

/// Exact backend calls of stack operations, printed before the timings.
fn print_call_counts() {
    let rt = runtime();
    let acme = TenantId::new("acme").expect("tenant id");
    let counting = Arc::new(CountingBackend::new(
        TenantScoped::new(MemoryBackend::new(), &acme, "v1").expect("scope"),
    ));
    let store = StackStore::new(counting.clone());
    let doc = json!({"n": 1});
    let line = |what: &str| {
        let c = counting.take();
        println!(
            "calls {what:<40} total {} (get {}, put {}, delete {}, list {})",
            c.total(),
            c.get,
            c.put,
            c.delete,
            c.list
        );
    };
    rt.block_on(async {
        store.save("web", "prod", &doc, None).await.expect("save");
        line("first save");
        store
            .save("web", "prod", &doc, Some(1))
            .await
            .expect("save");
        line("save (after a save or read)");
        store.current("web", "prod").await.expect("read");
        line("read current");
        let fresh = StackStore::new(counting.clone());
        fresh
            .save("web", "prod", &doc, Some(2))
            .await
            .expect("save");
        line("save (fresh store, no prior read)");
        store
            .rollback("web", "prod", 1, Some(3))
            .await
            .expect("rollback");
        line("rollback to an older version");
        store
            .rollback("web", "prod", 3, Some(4))
            .await
            .expect("rollback");
        line("rollback to the previous version");
        store.history("web", "prod").await.expect("history");
        line("history (5 versions)");
        let kept = StackStore::new(counting.clone()).with_retention(3);
        kept.current("web", "prod").await.expect("read");
        counting.reset();
        kept.save("web", "prod", &doc, Some(5)).await.expect("save");
        line("save with retention 3");
    });
}

/// An audit entry of the usual size (about 400 bytes stored).
fn audit_entry() -> NewEntry {
    NewEntry {
        actor: Actor::admin().in_session("ses_0123456789abcdef"),
        action: "tenant.update".into(),
        target: "tenant acme".into(),
        via: "server".into(),
        request_id: Some("0123456789ab-00000001".into()),
        outcome: Outcome::Ok,
        detail: json!({ "fields": ["display_name"], "revision": 7 }),
    }
}

/// One audit append against one plain `Create` put of as many bytes at a
/// new key, per backend, in the same run.
fn audit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let scope = Scope::Tenant(TenantId::new("acme").expect("tenant id"));
    for (name, backend) in backends(dir.path()) {
        let log = AuditLog::new(backend.clone());
        rt.block_on(log.append(&scope, audit_entry()))
            .expect("append");
        // about the size of the stored entry
        let bytes = Bytes::from(vec![b'x'; 420]);
        let n = std::sync::atomic::AtomicU64::new(0);
        let mut g = c.benchmark_group(format!("audit_append/{name}"));
        g.bench_function(BenchmarkId::new("plain_put_create", name), |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let k = key(&format!("bench/puts/{i:020}.json"));
                black_box(
                    backend
                        .put(&k, bytes.clone(), PutMode::Create)
                        .await
                        .expect("put"),
                )
            })
        });
        g.bench_function(BenchmarkId::new("audit_append", name), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(log.append(&scope, audit_entry()).await.expect("append"))
            })
        });
        g.finish();
    }
}

/// The backend calls of audit appends: by a log that appended before (the
/// server, a CLI's second entry) and by a fresh one (a CLI's first).
fn print_audit_call_counts() {
    let rt = runtime();
    let counting = Arc::new(CountingBackend::new(MemoryBackend::new()));
    let scope = Scope::Tenant(TenantId::new("acme").expect("tenant id"));
    let line = |what: &str| {
        let c = counting.take();
        println!(
            "calls {what:<40} total {} (get {}, put {}, delete {}, list {})",
            c.total(),
            c.get,
            c.put,
            c.delete,
            c.list
        );
    };
    rt.block_on(async {
        let log = AuditLog::new(counting.clone());
        log.append(&scope, audit_entry()).await.expect("append");
        line("audit append: first of a log");
        log.append(&scope, audit_entry()).await.expect("append");
        line("audit append: by the same log again");
        for _ in 0..20 {
            log.append(&scope, audit_entry()).await.expect("append");
        }
        counting.reset();
        AuditLog::new(counting.clone())
            .append(&scope, audit_entry())
            .await
            .expect("append");
        line("audit append: fresh log, 22 entries");
    });
}

fn main() {
    print_call_counts();
    print_audit_call_counts();
    print_interleaved_ratios();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    get_put(&mut c);
    stack(&mut c);
    stacks_at_once(&mut c);
    audit(&mut c);
    c.final_summary();
}
