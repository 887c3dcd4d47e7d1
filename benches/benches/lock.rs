//! Lock benches: acquire+release per second against the raw `Create`+delete
//! rate of the same backend (memory, local files, and S3 and PostgreSQL
//! when their test servers are up), and backend calls per uncontended
//! operation.
//!
//! Run with `cargo bench -p tenancy-benches --bench lock`. The call counts
//! are printed first (they are exact, not timed); criterion then measures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use tenancy_core::{
    DeleteMode, LockKey, LockManager, LockRequest, MemoryBackend, PutMode, StateBackend, StateKey,
};
use tenancy_lock::{MemoryLockManager, StoreLockManager};
use tenancy_state::counting::CountingBackend;
use tenancy_state::LocalBackend;
use tokio::runtime::Runtime;

mod common;

const TTL: Duration = Duration::from_secs(60);

/// A shared backend that counts its calls.
type Counted = CountingBackend<Arc<dyn StateBackend>>;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A lock object's worth of bytes, so the raw baseline writes what a lock writes.
fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 330])
}

fn raw_create_delete(c: &mut Criterion, rt: &Runtime, group: &str, backend: Arc<dyn StateBackend>) {
    let key = StateKey::new("locks/bench:raw").expect("key");
    let bytes = payload();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_create_delete", |b| {
        b.to_async(rt).iter(|| async {
            backend
                .put(&key, bytes.clone(), PutMode::Create)
                .await
                .expect("create");
            backend.delete(&key, DeleteMode::Any).await.expect("delete");
        })
    });
    g.finish();
}

/// Two conditional writes (`Update`) of a lock-sized object: what an
/// acquire+release costs the backend at the least.
fn raw_update_update(c: &mut Criterion, rt: &Runtime, group: &str, backend: Arc<dyn StateBackend>) {
    let key = StateKey::new("locks/bench:raw-update").expect("key");
    let bytes = payload();
    let mut version = rt
        .block_on(backend.put(&key, bytes.clone(), PutMode::Overwrite))
        .expect("seed");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_update_update", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..2 {
                    version = backend
                        .put(&key, bytes.clone(), PutMode::Update(version.clone()))
                        .await
                        .expect("update");
                }
            })
        })
    });
    g.finish();
}

fn acquire_release(
    c: &mut Criterion,
    rt: &Runtime,
    group: &str,
    name: &str,
    locks: Arc<dyn LockManager>,
) {
    let key = LockKey::new("bench:lock").expect("key");
    let req = LockRequest::new(key.clone(), TTL).operation("bench");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let lease = locks.try_acquire(&req).await.expect("acquire");
            locks
                .release(&key, black_box(lease.lock_id))
                .await
                .expect("release");
        })
    });
    g.finish();
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let backend = Arc::new(MemoryBackend::new());
    raw_create_delete(c, &rt, "lock/core-memory", backend.clone());
    raw_update_update(c, &rt, "lock/core-memory", backend.clone());
    acquire_release(
        c,
        &rt,
        "lock/core-memory",
        "store_acquire_release",
        Arc::new(StoreLockManager::new(backend)),
    );
    acquire_release(
        c,
        &rt,
        "lock/core-memory",
        "memory_manager_acquire_release",
        Arc::new(MemoryLockManager::new()),
    );

    let backend = Arc::new(MemoryBackend::new());
    raw_create_delete(c, &rt, "lock/object-memory", backend.clone());
    raw_update_update(c, &rt, "lock/object-memory", backend.clone());
    acquire_release(
        c,
        &rt,
        "lock/object-memory",
        "store_acquire_release",
        Arc::new(StoreLockManager::new(backend)),
    );
}

fn local(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(LocalBackend::open(dir.path()).expect("local backend"));
    raw_create_delete(c, &rt, "lock/local", backend.clone());
    raw_update_update(c, &rt, "lock/local", backend.clone());
    acquire_release(
        c,
        &rt,
        "lock/local",
        "store_acquire_release",
        Arc::new(StoreLockManager::new(backend)),
    );
}

/// The same on S3 and PostgreSQL, when their test servers are up.
fn shared(c: &mut Criterion) {
    let rt = runtime();
    for (name, backend) in common::shared_stores(&rt, "lock bench") {
        let group = format!("lock/{name}");
        raw_create_delete(c, &rt, &group, backend.clone());
        raw_update_update(c, &rt, &group, backend.clone());
        acquire_release(
            c,
            &rt,
            &group,
            "store_acquire_release",
            Arc::new(StoreLockManager::new(backend)),
        );
    }
}

/// Backend calls of each uncontended operation, on a counting wrapper.
fn print_call_counts() {
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let backends: Vec<(&str, Arc<Counted>)> = vec![
            (
                "core-memory",
                Arc::new(CountingBackend::new(Arc::new(MemoryBackend::new()) as _)),
            ),
            (
                "local",
                Arc::new(CountingBackend::new(Arc::new(
                    LocalBackend::open(dir.path()).expect("local"),
                ) as _)),
            ),
        ];
        println!("backend calls per uncontended lock operation (get/put/delete/list):");
        for (name, backend) in backends {
            let locks = StoreLockManager::new(Arc::clone(&backend));
            let key = LockKey::new("bench:calls").expect("key");
            let req = LockRequest::new(key.clone(), TTL);
            let show = |op: &str| {
                let c = backend.take();
                println!(
                    "  {name:12} {op:34} {} calls ({}/{}/{}/{})",
                    c.total(),
                    c.get,
                    c.put,
                    c.delete,
                    c.list
                );
            };
            let lease = locks.try_acquire(&req).await.expect("acquire");
            show("first acquire of a new key");
            locks.renew(&key, lease.lock_id, TTL).await.expect("renew");
            show("renew");
            locks.release(&key, lease.lock_id).await.expect("release");
            show("release");
            let lease = locks.try_acquire(&req).await.expect("acquire");
            show("acquire (key used before)");
            let cold = StoreLockManager::new(Arc::clone(&backend));
            backend.reset();
            cold.release(&key, lease.lock_id).await.expect("release");
            show("release, new process (cold)");
            let lease = cold.try_acquire(&req).await.expect("acquire");
            show("acquire");
            cold.inspect(&key).await.expect("inspect");
            show("inspect");
            cold.release(&key, lease.lock_id).await.expect("release");
        }
    });
}

fn main() {
    print_call_counts();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    memory(&mut c);
    local(&mut c);
    shared(&mut c);
    c.final_summary();
}
