//! A claim that races a worker delete must not leave a running job under a
//! deleted worker: the interleaving the reviewer found, forced with a backend
//! wrapper that lets the delete land between the claim's worker check and its
//! job swap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tenancy_core::{
    Capabilities, DeleteMode, Error, ListEntry, ManualClock, MemoryBackend, NewTenant, Object,
    PutMode, Result, Secret, StateBackend, StateKey, TenantId, TenantRegistry, Version,
};
use tenancy_server::jobs::{JobStatus, JobStore, NewJob, NewWorker};
use tenancy_state::StoreRegistry;

/// Before the first job swap after `arm`, marks every worker deleted, as a
/// concurrent `delete_worker` would (its mark and its job scan both land
/// between the claim's worker check and its swap).
#[derive(Debug)]
struct DeleteDuringClaim {
    inner: MemoryBackend,
    armed: AtomicBool,
}

impl DeleteDuringClaim {
    async fn mark_workers_deleted(&self) -> Result<()> {
        use futures::TryStreamExt;
        let prefix = StateKey::new("_server/workers")?;
        let keys: Vec<ListEntry> = self.inner.list(Some(&prefix)).try_collect().await?;
        for e in keys {
            if let Some(obj) = self.inner.get(&e.key).await? {
                let mut v: serde_json::Value = serde_json::from_slice(&obj.bytes)
                    .map_err(|e| Error::invalid(e.to_string()))?;
                v["deleted"] = serde_json::Value::Bool(true);
                let bytes = serde_json::to_vec(&v).map_err(|e| Error::invalid(e.to_string()))?;
                self.inner
                    .put(&e.key, Bytes::from(bytes), PutMode::Update(obj.version))
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateBackend for DeleteDuringClaim {
    fn name(&self) -> &str {
        "delete-during-claim"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        if key.as_str().starts_with("_server/jobs/")
            && matches!(mode, PutMode::Update(_))
            && self.armed.swap(false, Ordering::SeqCst)
        {
            self.mark_workers_deleted().await?;
        }
        self.inner.put(key, value, mode).await
    }
    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        self.inner.delete(key, mode).await
    }
    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        self.inner.list(prefix)
    }
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
    let state = Arc::new(DeleteDuringClaim {
        inner: MemoryBackend::new(),
        armed: AtomicBool::new(false),
    });
    let jobs = job_store(state.clone()).await;
    let w1 = jobs.register_worker(worker("w1")).await.unwrap();
    let job = jobs.create_job(render()).await.unwrap();

    state.armed.store(true, Ordering::SeqCst);
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

/// A store without conditional deletes (like S3) on which a whole worker
/// delete, with its requeue, lands between a claim's job swap and the
/// claim's (unconditional) delete of the queue marker it read.
#[derive(Debug)]
struct RequeueBeforeMarkerDelete {
    inner: MemoryBackend,
    armed: AtomicBool,
    jobs: std::sync::OnceLock<(JobStore, uuid::Uuid)>,
}

#[async_trait]
impl StateBackend for RequeueBeforeMarkerDelete {
    fn name(&self) -> &str {
        "requeue-before-marker-delete"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_delete: false,
            ..self.inner.capabilities()
        }
    }
    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        self.inner.put(key, value, mode).await
    }
    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        if key.as_str().starts_with("_server/queue/") && self.armed.swap(false, Ordering::SeqCst) {
            if let Some((jobs, worker)) = self.jobs.get() {
                jobs.delete_worker(worker).await?;
            }
        }
        let mode = match mode {
            DeleteMode::IfVersion(_) => {
                return Err(Error::not_implemented("conditional delete"));
            }
            m => m,
        };
        self.inner.delete(key, mode).await
    }
    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        self.inner.list(prefix)
    }
}

#[tokio::test]
async fn a_requeue_racing_a_claim_keeps_its_queue_marker_without_conditional_deletes() {
    let state = Arc::new(RequeueBeforeMarkerDelete {
        inner: MemoryBackend::new(),
        armed: AtomicBool::new(false),
        jobs: std::sync::OnceLock::new(),
    });
    let jobs = job_store(state.clone()).await;
    let w1 = jobs.register_worker(worker("w1")).await.unwrap();
    let job = jobs.create_job(render()).await.unwrap();
    state.jobs.set((jobs.clone(), w1.id)).expect("set once");
    state.armed.store(true, Ordering::SeqCst);

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
