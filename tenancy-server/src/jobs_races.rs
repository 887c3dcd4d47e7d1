//! (unit tests) A claim that races a worker delete must not leave a running job under a
//! deleted worker: the interleaving the reviewer found, forced with a backend
//! wrapper that lets the delete land between the claim's worker check and its
//! job swap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::jobs::{JobStatus, JobStore, NewJob, NewWorker};
use bytes::Bytes;
use futures::FutureExt;
use tenancy_core::testkit::{HookBackend, Op};
use tenancy_core::{
    Capabilities, Error, ListEntry, ManualClock, MemoryBackend, NewTenant, PutMode, Result, Secret,
    StateBackend, StateKey, TenantId, TenantRegistry,
};
use tenancy_state::StoreRegistry;

/// Marks every worker deleted, as a concurrent `delete_worker` would (its
/// mark and its job scan both land between the claim's worker check and its
/// swap). Writes to `inner` directly, past the hook.
async fn mark_workers_deleted(inner: &MemoryBackend) -> Result<()> {
    use futures::TryStreamExt;
    let prefix = StateKey::new("_server/workers")?;
    let keys: Vec<ListEntry> = inner.list(Some(&prefix)).try_collect().await?;
    for e in keys {
        if let Some(obj) = inner.get(&e.key).await? {
            let mut v: serde_json::Value =
                serde_json::from_slice(&obj.bytes).map_err(|e| Error::invalid(e.to_string()))?;
            v["deleted"] = serde_json::Value::Bool(true);
            let bytes = serde_json::to_vec(&v).map_err(|e| Error::invalid(e.to_string()))?;
            inner
                .put(&e.key, Bytes::from(bytes), PutMode::Update(obj.version))
                .await?;
        }
    }
    Ok(())
}

/// Once armed, runs `then` before the first operation that `when` picks.
fn once_before<W, T>(
    state: &HookBackend<Arc<MemoryBackend>>,
    armed: Arc<AtomicBool>,
    when: W,
    then: T,
) where
    W: Fn(&Op) -> bool + Send + Sync + 'static,
    T: Fn() -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync + 'static,
{
    state.set_hook(move |op| {
        if when(&op) && armed.swap(false, Ordering::SeqCst) {
            then()
        } else {
            async { Ok(()) }.boxed()
        }
    });
}

/// The job store of tenant `acme` (two workers allowed) on `state`, with a
/// bootstrapped registry on its own memory store.
async fn job_store(state: Arc<dyn StateBackend>) -> JobStore {
    let clock = Arc::new(ManualClock::starting_now());
    let registry = Arc::new(
        StoreRegistry::new(Arc::new(MemoryBackend::new()))
            .with_clock(clock.clone())
            .with_bcrypt_cost(4),
    );
    registry
        .bootstrap(&Secret::new("an admin password"))
        .await
        .expect("bootstrap");
    let id = TenantId::new("acme").expect("valid id");
    let mut new = NewTenant::new(id.clone());
    new.limits.max_workers = Some(2);
    registry.create(new).await.expect("create tenant");
    JobStore::new(state, registry, id, clock)
}

fn worker(name: &str) -> NewWorker {
    NewWorker {
        name: name.into(),
        cpu: None,
        gpu: None,
    }
}

fn render() -> NewJob {
    NewJob {
        name: "render".into(),
        cpu: None,
        gpu: None,
        payload: None,
    }
}

#[tokio::test]
async fn a_claim_that_loses_its_worker_puts_the_job_back() {
    // Before the claim's job swap, every worker is marked deleted.
    let inner = Arc::new(MemoryBackend::new());
    let state = Arc::new(HookBackend::new(inner.clone()));
    let armed = Arc::new(AtomicBool::new(false));
    once_before(
        &state,
        armed.clone(),
        |op| matches!(op, Op::Put(k, PutMode::Update(_)) if k.as_str().starts_with("_server/jobs/")),
        move || {
            let inner = inner.clone();
            async move { mark_workers_deleted(&inner).await }.boxed()
        },
    );
    let jobs = job_store(state.clone()).await;
    let w1 = jobs.register_worker(worker("w1")).await.unwrap();
    let job = jobs.create_job(render()).await.unwrap();

    armed.store(true, Ordering::SeqCst);
    let claimed = jobs.claim(&w1.id).await;
    assert!(
        matches!(claimed, Err(Error::NotFound { .. })),
        "a claim whose worker was deleted meanwhile must fail, got {claimed:?}"
    );
    let after = jobs.get_job(&job.id).await.unwrap();
    assert_eq!(
        after.status,
        JobStatus::Queued,
        "the job is back in the queue"
    );
    assert_eq!(after.worker_id, None);

    // ...and another worker can take it.
    let w2 = jobs.register_worker(worker("w2")).await.unwrap();
    let again = jobs.claim(&w2.id).await.unwrap().expect("the requeued job");
    assert_eq!(again.id, job.id);
}

#[tokio::test]
async fn a_requeue_racing_a_claim_keeps_its_queue_marker_without_conditional_deletes() {
    // A store without conditional deletes (like S3) on which a whole worker
    // delete, with its requeue, lands between a claim's job swap and the
    // claim's (unconditional) delete of the queue marker it read.
    let inner = Arc::new(MemoryBackend::new());
    let caps = Capabilities {
        conditional_delete: false,
        ..inner.capabilities()
    };
    let state = Arc::new(HookBackend::new(inner).with_capabilities(caps));
    let jobs = job_store(state.clone()).await;
    let w1 = jobs.register_worker(worker("w1")).await.unwrap();
    let job = jobs.create_job(render()).await.unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let (racer, worker_id) = (jobs.clone(), w1.id);
    once_before(
        &state,
        armed,
        |op| matches!(op, Op::Delete(k, _) if k.as_str().starts_with("_server/queue/")),
        move || {
            let racer = racer.clone();
            async move { racer.delete_worker(&worker_id).await.map(|_| ()) }.boxed()
        },
    );

    // w1 claims; its worker is deleted (and the job requeued) before the
    // claim deletes the marker it read.
    let claimed = jobs.claim(&w1.id).await;
    assert!(
        matches!(claimed, Err(Error::NotFound { .. })),
        "got {claimed:?}"
    );
    assert_eq!(
        jobs.get_job(&job.id).await.unwrap().status,
        JobStatus::Queued
    );

    // The requeued job is still claimable: its marker survived.
    let w2 = jobs.register_worker(worker("w2")).await.unwrap();
    let again = jobs.claim(&w2.id).await.unwrap();
    assert_eq!(
        again.map(|j| j.id),
        Some(job.id),
        "the requeued job kept its marker"
    );
}
