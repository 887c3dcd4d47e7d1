//! The jobs-and-workers domain: quota-checked jobs that a tenant's own
//! workers claim, run, complete or fail.
//!
//! Everything lives in the tenant's scoped state (below `tenants/<id>/v1/`,
//! under the reserved `_server/` prefix that the state API refuses), so
//! several replicas on one bucket agree and one tenant can never see, claim
//! or complete another's jobs: its store simply has no such keys.
//!
//! ```text
//! _server/jobs/<job-id>      the job record (JSON), with its quota reservations
//! _server/queue/<job-id>[.n] a marker per queued job (what claim scans);
//!                            `.n` after its n-th requeue
//! _server/workers/<id>       the worker record, with its quota reservations
//! ```
//!
//! Job ids are UUID v7, so markers sort in creation order and claims are FIFO.
//! A job's `payload` and `result` are JSON objects or absent, as the OpenAPI
//! document says: anything else is refused at the door (400). A record
//! written before that rule with another value shows it as
//! `{"value": <it>}`, so every answer keeps the documented shape and nothing
//! stored is lost.
//! Every state change is a compare-and-swap on the record, so exactly one
//! caller wins a claim, a completion, a cancel or a worker deletion. Create
//! reserves concurrent jobs, CPU, GPU and, last, jobs per hour (a refusal
//! never burns an hourly slot). Claim reads a marker's version before the
//! job and deletes it conditionally where the backend can; a requeue writes
//! a marker under a new name, so even an unconditional delete (S3) of the
//! marker a claimer read never removes the marker of a later requeue.
//! Deleting a worker requeues the jobs it held; a claim re-reads its worker
//! after its swap and puts the job back if the worker was deleted meanwhile
//! (one of the two always sees the other). A cancelled job's marker is
//! skipped and removed by the next claim.
//!
//! # Safe to stop at any step
//!
//! A server may die (kill -9, power) between any two writes. Every
//! multi-step operation is ordered so that what a crash leaves is
//! recognisable, and [`JobStore::reconcile`] repairs it:
//!
//! - **Every live reservation has an owner record that names it.** Create
//!   and register reserve (pending), write the record naming the
//!   reservations, commit, and (create) write the queue marker. Finish,
//!   cancel and worker delete first swap the record (finished, cancelled,
//!   `deleted`), keeping its reservations listed, and only then release.
//! - **Outcomes count once.** A job's outcome is counted by
//!   `release_recording` on its concurrent-jobs reservation: the release
//!   and the count are one write, done by whoever finds the reservation
//!   still listed, so a redone finish never counts twice.
//! - **The reconciler** (at start, every `reconcile_interval`, and when a
//!   quota is refused) compares the usage record's reservations of the
//!   resources jobs and workers reserve (concurrent jobs, jobs per hour,
//!   CPU, GPU, workers; never stacks, services or state) with the records: a reservation owned by a live job or worker and still pending
//!   after the grace period is committed; one owned by a finished job, a
//!   cancelled job or a deleted worker is released (counting the job's
//!   outcome once); one that no record names is released once it is older
//!   than the grace period (a create in flight has not written its record
//!   yet); a committed one no record names is released at once (its record
//!   was written before the commit). A queued job without a marker, older
//!   than the grace period, gets its marker back; a running job whose
//!   worker is gone goes back to the queue; a worker record left `deleted`
//!   is removed. Every repair is a compare-and-swap or idempotent, so
//!   replicas may reconcile the same tenant at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenancy_core::tenant::MAX_LIMIT_VALUE;
use tenancy_core::{
    Clock, DeleteMode, Error, PutMode, Reservation, Resource, Result, StateBackend,
    StateBackendExt, StateKey, TenantId, TenantRegistry, UsageEvent, Version,
};
use utoipa::ToSchema;
use uuid::Uuid;

/// The first segment of every key the server keeps in a tenant's state.
pub(crate) const SERVER_PREFIX: &str = "_server";
/// The longest job or worker name, in characters.
pub(crate) const MAX_NAME_LEN: usize = 200;
/// The longest failure message kept, in characters.
pub(crate) const MAX_ERROR_LEN: usize = 4096;
/// How old a half-done step must be before the reconciler acts on it: 60 s.
pub(crate) const DEFAULT_RECONCILE_GRACE: Duration = Duration::from_secs(60);

/// A job's `payload` or `result`: a JSON object.
pub(crate) type JsonObject = serde_json::Map<String, Value>;

/// Reads a stored `payload` or `result`: an object or null as it is, any
/// other value of an older record as `{"value": <it>}`.
fn stored_object<'de, D>(d: D) -> std::result::Result<Option<JsonObject>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => Some(JsonObject::from_iter([("value".to_string(), other)])),
    })
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Cancelled by the tenant before it finished.
    Cancelled,
}

impl JobStatus {
    /// The lowercase name, as in the API.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Queued or running: the job still holds its quota.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A job, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Job {
    /// The job id.
    pub id: Uuid,
    /// A name.
    pub name: String,
    /// CPU cores requested.
    pub cpu: u64,
    /// GPUs requested.
    pub gpu: u64,
    /// Free-form input: a JSON object.
    #[serde(default, deserialize_with = "stored_object")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<JsonObject>,
    /// The status.
    pub status: JobStatus,
    /// The worker that holds (or held) the job; absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<Uuid>,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a worker claimed it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed, failed or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// The result given on completion: a JSON object.
    #[serde(default, deserialize_with = "stored_object")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<JsonObject>,
    /// The message given on failure.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    #[serde(flatten)]
    job: Job,
    #[serde(default)]
    reservations: Vec<Reservation>,
    /// How often the job went back to the queue; names its queue marker.
    #[serde(default)]
    requeues: u64,
}

/// A worker, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Worker {
    /// The worker id.
    pub id: Uuid,
    /// A name.
    pub name: String,
    /// CPU cores the worker brings (counted against the quota).
    pub cpu: u64,
    /// GPUs the worker brings (counted against the quota).
    pub gpu: u64,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerRecord {
    #[serde(flatten)]
    worker: Worker,
    #[serde(default)]
    reservations: Vec<Reservation>,
    /// Set by the one delete that won; the record is then gone for everyone.
    #[serde(default)]
    deleted: bool,
}

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewJob {
    /// A name, 1 to 200 characters.
    pub name: String,
    /// CPU cores requested (default 0).
    #[serde(default)]
    pub cpu: Option<u64>,
    /// GPUs requested (default 0).
    #[serde(default)]
    pub gpu: Option<u64>,
    /// Free-form input: a JSON object (anything else is refused).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<JsonObject>,
}

/// The body of `POST /v1/workers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWorker {
    /// A name, 1 to 200 characters.
    pub name: String,
    /// CPU cores the worker brings (default 0).
    #[serde(default)]
    pub cpu: Option<u64>,
    /// GPUs the worker brings (default 0).
    #[serde(default)]
    pub gpu: Option<u64>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Completed, with an optional result.
    Completed(Option<JsonObject>),
    /// Failed, with an optional message.
    Failed(Option<String>),
}

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        Err(Error::invalid(format!(
            "name must be 1 to {MAX_NAME_LEN} characters without control characters"
        )))
    } else {
        Ok(())
    }
}

fn validate_amount(what: &str, v: Option<u64>) -> Result<u64> {
    let v = v.unwrap_or(0);
    if v > MAX_LIMIT_VALUE {
        Err(Error::invalid(format!(
            "{what} = {v} is absurd; the largest allowed is {MAX_LIMIT_VALUE}"
        )))
    } else {
        Ok(v)
    }
}

/// Parses a job or worker id from a path.
pub(crate) fn parse_id(what: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| {
        Error::invalid(format!(
            "{what} id \"{}\" is not a UUID",
            s.chars().take(64).collect::<String>().escape_debug()
        ))
    })
}

/// The jobs and workers of one tenant, on its scoped state.
#[derive(Debug, Clone)]
pub(crate) struct JobStore {
    state: Arc<dyn StateBackend>,
    registry: Arc<dyn TenantRegistry>,
    tenant: TenantId,
    clock: Arc<dyn Clock>,
    grace: Duration,
}

/// What one [`JobStore::reconcile`] repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Reservations given back (orphaned, or owned by a finished owner).
    pub released: u64,
    /// Pending reservations of live owners committed.
    pub committed: u64,
    /// Queue markers written for queued jobs that had none.
    pub markers: u64,
    /// Running jobs of vanished workers put back in the queue.
    pub requeued: u64,
    /// Worker records left `deleted` that were removed.
    pub workers_removed: u64,
}

impl std::ops::AddAssign for Reconciled {
    fn add_assign(&mut self, r: Reconciled) {
        self.released += r.released;
        self.committed += r.committed;
        self.markers += r.markers;
        self.requeued += r.requeued;
        self.workers_removed += r.workers_removed;
    }
}

impl Reconciled {
    /// True if anything was repaired.
    pub(crate) fn changed(&self) -> bool {
        *self != Reconciled::default()
    }
}

/// Who names a reservation.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Job(JobStatus),
    Worker { deleted: bool },
}

impl JobStore {
    /// The job store of `tenant` on its scoped `state`.
    pub(crate) fn new(
        state: Arc<dyn StateBackend>,
        registry: Arc<dyn TenantRegistry>,
        tenant: TenantId,
        clock: Arc<dyn Clock>,
    ) -> Self {
        JobStore {
            state,
            registry,
            tenant,
            clock,
            grace: DEFAULT_RECONCILE_GRACE,
        }
    }

    /// How old a step must be before the reconciler finishes or undoes it
    /// (in-flight operations are younger). Default [`DEFAULT_RECONCILE_GRACE`].
    pub(crate) fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn key(kind: &str, id: &Uuid) -> Result<StateKey> {
        StateKey::new(format!("{SERVER_PREFIX}/{kind}/{id}"))
    }

    /// The queue marker of a job: `queue/<id>` when first queued,
    /// `queue/<id>.<n>` after its n-th requeue. A fresh name per requeue means
    /// a claimer's delete of the marker it read can never remove the marker
    /// of a later requeue, even where deletes cannot be conditional (S3).
    fn marker_key(id: &Uuid, requeues: u64) -> Result<StateKey> {
        if requeues == 0 {
            Self::key("queue", id)
        } else {
            StateKey::new(format!("{SERVER_PREFIX}/queue/{id}.{requeues}"))
        }
    }

    fn prefix(kind: &str) -> Result<StateKey> {
        StateKey::new(format!("{SERVER_PREFIX}/{kind}"))
    }

    async fn reserve_all(&self, wants: &[(Resource, u64)]) -> Result<Vec<Reservation>> {
        let mut taken = Vec::with_capacity(wants.len());
        for &(resource, amount) in wants {
            if amount == 0 {
                continue;
            }
            match self.registry.reserve(&self.tenant, resource, amount).await {
                Ok(r) => taken.push(r),
                Err(e) => {
                    self.release_all(&taken).await;
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// Like [`JobStore::reserve_all`], but a refusal first reconciles the
    /// tenant (a crash may have left capacity taken) and tries once more if
    /// that gave anything back.
    async fn reserve_or_reconcile(&self, wants: &[(Resource, u64)]) -> Result<Vec<Reservation>> {
        match self.reserve_all(wants).await {
            Err(e @ Error::QuotaExceeded { .. }) => match self.reconcile().await {
                Ok(r) if r.released > 0 => self.reserve_all(wants).await,
                Ok(_) => Err(e),
                Err(err) => {
                    tracing::warn!(tenant = %self.tenant, error = %err, "reconcile after a quota refusal failed");
                    Err(e)
                }
            },
            other => other,
        }
    }

    async fn commit_all(&self, rs: &[Reservation]) -> Result<()> {
        for r in rs {
            self.registry.commit(r).await?;
        }
        Ok(())
    }

    async fn release_all(&self, rs: &[Reservation]) {
        for r in rs {
            if let Err(e) = self.registry.release(r).await {
                tracing::warn!(tenant = %self.tenant, resource = %r.resource, error = %e,
                    "could not release a quota reservation");
            }
        }
    }

    async fn delete_quietly(&self, key: &StateKey) {
        if let Err(e) = self.state.delete(key, DeleteMode::Any).await {
            tracing::warn!(tenant = %self.tenant, error = %e, "could not clean up after a failed write");
        }
    }

    /// Deletes a queue marker, conditionally where the backend can.
    async fn delete_marker(&self, key: &StateKey, version: Version) -> Result<()> {
        match self.state.delete_if_unchanged(key, version).await {
            Ok(()) | Err(Error::Precondition { .. }) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a queued job, atomically within the tenant's quotas
    /// (concurrent jobs, jobs per hour, CPU, GPU); `QuotaExceeded` takes nothing.
    pub(crate) async fn create_job(&self, new: NewJob) -> Result<Job> {
        validate_name(&new.name)?;
        let cpu = validate_amount("cpu", new.cpu)?;
        let gpu = validate_amount("gpu", new.gpu)?;
        // The windowed resource goes last: a refusal of an earlier one must
        // not use up an hourly slot that is never given back.
        let reservations = self
            .reserve_or_reconcile(&[
                (Resource::ConcurrentJobs, 1),
                (Resource::CpuCores, cpu),
                (Resource::Gpus, gpu),
                (Resource::JobsPerHour, 1),
            ])
            .await?;
        let now = self.clock.now();
        let job = Job {
            id: Uuid::now_v7(),
            name: new.name,
            cpu,
            gpu,
            payload: new.payload,
            status: JobStatus::Queued,
            worker_id: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        };
        let key = Self::key("jobs", &job.id)?;
        let record = JobRecord {
            job,
            reservations,
            requeues: 0,
        };
        if let Err(e) = self.state.put_json(&key, &record, PutMode::Create).await {
            self.release_all(&record.reservations).await;
            return Err(e);
        }
        let marker = Self::marker_key(&record.job.id, record.requeues)?;
        let finish = async {
            self.commit_all(&record.reservations).await?;
            self.state
                .put(&marker, Bytes::from_static(b"{}"), PutMode::Create)
                .await
        };
        if let Err(e) = finish.await {
            self.release_all(&record.reservations).await;
            self.delete_quietly(&key).await;
            self.delete_quietly(&marker).await;
            return Err(e);
        }
        Ok(record.job)
    }

    async fn read_job(&self, id: &Uuid) -> Result<Option<(JobRecord, Version)>> {
        self.state.get_json(&Self::key("jobs", id)?).await
    }

    /// One job.
    pub(crate) async fn get_job(&self, id: &Uuid) -> Result<Job> {
        self.read_job(id)
            .await?
            .map(|(r, _)| r.job)
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    /// Up to `limit` jobs, newest first, optionally only those in `status`.
    pub(crate) async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let mut keys = self.state.list_keys(Some(&Self::prefix("jobs")?)).await?;
        keys.reverse();
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= limit {
                break;
            }
            if let Some((rec, _)) = self.state.get_json::<JobRecord>(&key).await? {
                if status.is_none_or(|s| s == rec.job.status) {
                    out.push(rec.job);
                }
            }
        }
        Ok(out)
    }

    async fn read_worker(&self, id: &Uuid) -> Result<(WorkerRecord, Version)> {
        match self
            .state
            .get_json::<WorkerRecord>(&Self::key("workers", id)?)
            .await?
        {
            Some((w, v)) if !w.deleted => Ok((w, v)),
            _ => Err(Error::not_found(format!("worker {id}"))),
        }
    }

    /// Registers a worker, atomically within the worker, CPU and GPU quotas.
    pub(crate) async fn register_worker(&self, new: NewWorker) -> Result<Worker> {
        validate_name(&new.name)?;
        let cpu = validate_amount("cpu", new.cpu)?;
        let gpu = validate_amount("gpu", new.gpu)?;
        let reservations = self
            .reserve_or_reconcile(&[
                (Resource::Workers, 1),
                (Resource::CpuCores, cpu),
                (Resource::Gpus, gpu),
            ])
            .await?;
        let record = WorkerRecord {
            worker: Worker {
                id: Uuid::now_v7(),
                name: new.name,
                cpu,
                gpu,
                registered_at: self.clock.now(),
            },
            reservations,
            deleted: false,
        };
        let key = Self::key("workers", &record.worker.id)?;
        if let Err(e) = self.state.put_json(&key, &record, PutMode::Create).await {
            self.release_all(&record.reservations).await;
            return Err(e);
        }
        if let Err(e) = self.commit_all(&record.reservations).await {
            self.release_all(&record.reservations).await;
            self.delete_quietly(&key).await;
            return Err(e);
        }
        Ok(record.worker)
    }

    /// Removes a worker, gives its quota back and puts the jobs it held back in the queue.
    pub(crate) async fn delete_worker(&self, id: &Uuid) -> Result<()> {
        let (mut record, version) = self.read_worker(id).await?;
        let key = Self::key("workers", id)?;
        record.deleted = true;
        // Exactly one concurrent delete wins this swap, and only it releases.
        match self
            .state
            .put_json(&key, &record, PutMode::Update(version))
            .await
        {
            Ok(_) => {}
            Err(Error::Precondition { .. }) => {
                return Err(Error::not_found(format!("worker {id}")));
            }
            Err(e) => return Err(e),
        }
        self.release_all(&record.reservations).await;
        self.requeue_jobs_of(id).await?;
        match self.state.delete(&key, DeleteMode::Any).await {
            // The reconciler may have finished this delete meanwhile.
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tenant's registered workers, oldest first.
    pub(crate) async fn list_workers(&self) -> Result<Vec<Worker>> {
        let mut out = Vec::new();
        for key in self
            .state
            .list_keys(Some(&Self::prefix("workers")?))
            .await?
        {
            if let Some((w, _)) = self.state.get_json::<WorkerRecord>(&key).await? {
                if !w.deleted {
                    out.push(w.worker);
                }
            }
        }
        Ok(out)
    }

    async fn requeue_jobs_of(&self, worker: &Uuid) -> Result<()> {
        for key in self.state.list_keys(Some(&Self::prefix("jobs")?)).await? {
            self.requeue(&key, worker).await?;
        }
        Ok(())
    }

    /// Puts the job at `key` back in the queue if it is running on `worker`
    /// (a compare-and-swap, so a job completed or requeued meanwhile is left alone).
    async fn requeue(&self, key: &StateKey, worker: &Uuid) -> Result<bool> {
        let Some((mut rec, version)) = self.state.get_json::<JobRecord>(key).await? else {
            return Ok(false);
        };
        if rec.job.status != JobStatus::Running || rec.job.worker_id != Some(*worker) {
            return Ok(false);
        }
        rec.job.status = JobStatus::Queued;
        rec.job.worker_id = None;
        rec.job.started_at = None;
        rec.job.updated_at = self.clock.now();
        rec.requeues += 1;
        match self
            .state
            .put_json(key, &rec, PutMode::Update(version))
            .await
        {
            Ok(_) => {
                let marker = Self::marker_key(&rec.job.id, rec.requeues)?;
                self.state
                    .put(&marker, Bytes::from_static(b"{}"), PutMode::Overwrite)
                    .await?;
                Ok(true)
            }
            // Completed, failed or requeued meanwhile: nothing to do.
            Err(Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the oldest queued job of this tenant to `worker`, or `None`.
    pub(crate) async fn claim(&self, worker: &Uuid) -> Result<Option<Job>> {
        self.read_worker(worker).await?;
        let markers = self.state.list_keys(Some(&Self::prefix("queue")?)).await?;
        for marker in markers {
            let name = marker.file_name();
            let Ok(id) = Uuid::parse_str(name.split('.').next().unwrap_or(name)) else {
                continue;
            };
            // Read the marker's version before the job: a requeue rewrites the
            // marker after the job, so a conditional delete never drops a
            // marker of a job that was queued again meanwhile.
            let Some(m) = self.state.get(&marker).await? else {
                continue;
            };
            let Some((mut rec, version)) = self.read_job(&id).await? else {
                self.delete_marker(&marker, m.version).await?;
                continue;
            };
            if rec.job.status != JobStatus::Queued {
                self.delete_marker(&marker, m.version).await?;
                continue;
            }
            let now = self.clock.now();
            rec.job.status = JobStatus::Running;
            rec.job.worker_id = Some(*worker);
            rec.job.started_at = Some(now);
            rec.job.updated_at = now;
            let job_key = Self::key("jobs", &id)?;
            match self
                .state
                .put_json(&job_key, &rec, PutMode::Update(version))
                .await
            {
                Ok(_) => {
                    self.delete_marker(&marker, m.version).await?;
                    // A worker delete marks the worker first and then requeues
                    // its running jobs; if it scanned before this swap landed
                    // it missed this job. Checking the worker after the swap
                    // closes the gap: one of the two always sees the other.
                    return match self.read_worker(worker).await {
                        Ok(_) => Ok(Some(rec.job)),
                        Err(e @ Error::NotFound { .. }) => {
                            self.requeue(&job_key, worker).await?;
                            Err(e)
                        }
                        Err(e) => Err(e),
                    };
                }
                // Another worker won this one; try the next.
                Err(Error::Precondition { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Completes or fails a job held by `worker`; its quota is given back and
    /// the outcome counted in the tenant's usage, once.
    pub(crate) async fn finish(&self, id: &Uuid, worker: &Uuid, outcome: Outcome) -> Result<Job> {
        if let Outcome::Failed(Some(e)) = &outcome {
            if e.chars().count() > MAX_ERROR_LEN {
                return Err(Error::invalid(format!(
                    "error message is longer than {MAX_ERROR_LEN} characters"
                )));
            }
        }
        let (mut rec, version) = self
            .read_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        if rec.job.status != JobStatus::Running || rec.job.worker_id != Some(*worker) {
            return Err(Error::precondition(format!(
                "job {id} is {} and not held by worker {worker}",
                rec.job.status.as_str()
            )));
        }
        match outcome {
            Outcome::Completed(result) => {
                rec.job.status = JobStatus::Completed;
                rec.job.result = result;
            }
            Outcome::Failed(error) => {
                rec.job.status = JobStatus::Failed;
                rec.job.error = error;
            }
        }
        self.close(rec, version).await
    }

    /// Cancels a queued or running job; its quota is given back. A worker
    /// that still runs it gets 409 when it reports the outcome.
    pub(crate) async fn cancel(&self, id: &Uuid) -> Result<Job> {
        let (mut rec, version) = self
            .read_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        if !rec.job.status.is_live() {
            return Err(Error::precondition(format!(
                "job {id} is {} already",
                rec.job.status.as_str()
            )));
        }
        rec.job.status = JobStatus::Cancelled;
        let job = self.close(rec, version).await?;
        // Its marker, if queued, is skipped and removed by the next claim.
        Ok(job)
    }

    /// Swaps a job record to its final status (keeping its reservations
    /// listed, so a crash right after leaves an owner the reconciler
    /// recognises as finished), then gives the reservations back.
    async fn close(&self, mut rec: JobRecord, version: Version) -> Result<Job> {
        let id = rec.job.id;
        let now = self.clock.now();
        rec.job.finished_at = Some(now);
        rec.job.updated_at = now;
        self.state
            .put_json(&Self::key("jobs", &id)?, &rec, PutMode::Update(version))
            .await
            .map_err(|e| match e {
                Error::Precondition { .. } => {
                    Error::precondition(format!("job {id} changed meanwhile"))
                }
                e => e,
            })?;
        // Only the caller whose swap won gets here; the reconciler may race
        // it for the releases, which are exact and count the outcome once.
        self.give_back(rec.job.status, &rec.reservations).await?;
        Ok(rec.job)
    }

    /// Releases the reservations of a job that ended in `status`, counting
    /// its outcome with its concurrent-jobs reservation. Returns how many
    /// this call released.
    async fn give_back(&self, status: JobStatus, rs: &[Reservation]) -> Result<u64> {
        let mut released = 0;
        for r in rs {
            let event = match status {
                JobStatus::Completed => Some(UsageEvent::JobCompleted),
                JobStatus::Failed => Some(UsageEvent::JobFailed),
                _ => None,
            };
            match event {
                Some(event) if r.resource == Resource::ConcurrentJobs => {
                    if self.registry.release_recording(r, event).await? {
                        released += 1;
                    }
                }
                _ => {
                    self.registry.release(r).await?;
                    released += 1;
                }
            }
        }
        Ok(released)
    }

    /// Repairs what crashed operations of this tenant left behind (see the
    /// module docs): usage then equals what the live records hold, and
    /// every queued job is claimable.
    pub(crate) async fn reconcile(&self) -> Result<Reconciled> {
        let mut done = Reconciled::default();
        // The usage snapshot first: a reservation it lists was made before
        // the records below were read.
        let listed = self.registry.reservations(&self.tenant).await?;
        let workers = self.read_all::<WorkerRecord>("workers").await?;
        let jobs = self.read_all::<JobRecord>("jobs").await?;
        let damaged = workers.damaged + jobs.damaged;
        let mut owners: HashMap<Uuid, (Owner, Reservation)> = HashMap::new();
        for (_, w, _) in &workers.records {
            for r in &w.reservations {
                owners.insert(r.id, (Owner::Worker { deleted: w.deleted }, r.clone()));
            }
        }
        for (_, j, _) in &jobs.records {
            for r in &j.reservations {
                owners.insert(r.id, (Owner::Job(j.job.status), r.clone()));
            }
        }
        let now = self.clock.now();
        let old = |at: DateTime<Utc>| {
            now.signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age >= self.grace)
        };
        for l in listed {
            let r = &l.reservation;
            // Stacks, services and state bytes belong to other owners (the
            // CLI's state, the state API): never this reconciler's to judge.
            if !Resource::JOBS_AND_WORKERS.contains(&r.resource) {
                continue;
            }
            let owner = owners.get(&r.id);
            let live = match owner {
                Some((Owner::Job(status), _)) => status.is_live(),
                Some((Owner::Worker { deleted }, _)) => !deleted,
                None => false,
            };
            if live {
                // Its pending reservation is committed once the operation
                // that made it has had time to do so itself.
                if !l.committed && old(r.created_at) {
                    self.commit_quietly(r, &mut done).await;
                }
                continue;
            }
            match owner {
                Some((Owner::Job(status), owned)) => {
                    done.released += self.give_back(*status, std::slice::from_ref(owned)).await?;
                }
                Some((Owner::Worker { .. }, _)) => {
                    self.registry.release(r).await?;
                    done.released += 1;
                }
                // Owned by a record that does not parse: leave it alone.
                None if damaged > 0 => {}
                None if l.committed || old(r.created_at) => {
                    self.registry.release(r).await?;
                    done.released += 1;
                }
                None => {}
            }
        }
        // Queued jobs that lost their marker.
        let mut marked = HashSet::new();
        for m in self.state.list_keys(Some(&Self::prefix("queue")?)).await? {
            let name = m.file_name();
            if let Ok(id) = Uuid::parse_str(name.split('.').next().unwrap_or(name)) {
                marked.insert(id);
            }
        }
        let live_workers: HashSet<Uuid> = workers
            .records
            .iter()
            .filter(|(_, w, _)| !w.deleted)
            .map(|(_, w, _)| w.worker.id)
            .collect();
        for (key, j, _) in &jobs.records {
            match j.job.status {
                JobStatus::Queued if !marked.contains(&j.job.id) && old(j.job.updated_at) => {
                    let marker = Self::marker_key(&j.job.id, j.requeues)?;
                    match self
                        .state
                        .put(&marker, Bytes::from_static(b"{}"), PutMode::Create)
                        .await
                    {
                        Ok(_) => done.markers += 1,
                        Err(Error::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                JobStatus::Running => {
                    let Some(w) = j.job.worker_id else { continue };
                    // Re-read the worker: it may have registered after the
                    // listing above and claimed this job since.
                    if live_workers.contains(&w) || self.read_worker(&w).await.is_ok() {
                        continue;
                    }
                    if self.requeue(key, &w).await? {
                        done.requeued += 1;
                    }
                }
                _ => {}
            }
        }
        // Worker deletes that stopped after their swap.
        for (key, w, _) in &workers.records {
            if w.deleted {
                self.requeue_jobs_of(&w.worker.id).await?;
                match self.state.delete(key, DeleteMode::Any).await {
                    Ok(()) => done.workers_removed += 1,
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if done.changed() {
            tracing::info!(tenant = %self.tenant, released = done.released,
                committed = done.committed, markers = done.markers,
                requeued = done.requeued, workers_removed = done.workers_removed,
                "reconciled what crashed operations left");
        }
        Ok(done)
    }

    async fn commit_quietly(&self, r: &Reservation, done: &mut Reconciled) {
        match self.registry.commit(r).await {
            Ok(()) => done.committed += 1,
            // Committed or released meanwhile, or expired: nothing to do here.
            Err(Error::Precondition { .. }) => {}
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, error = %e, "could not commit a reservation while reconciling");
            }
        }
    }

    /// Every record under `_server/<kind>/` with its key and version;
    /// records that do not parse are counted, not returned.
    async fn read_all<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Records<T>> {
        let mut out = Records {
            records: Vec::new(),
            damaged: 0,
        };
        for key in self.state.list_keys(Some(&Self::prefix(kind)?)).await? {
            match self.state.get_json::<T>(&key).await {
                Ok(Some((rec, version))) => out.records.push((key, rec, version)),
                Ok(None) => {}
                Err(Error::Corrupt { .. }) | Err(Error::InvalidInput { .. }) => {
                    tracing::warn!(tenant = %self.tenant, key = %key, "a job store record does not parse; reconcile leaves its reservations alone");
                    out.damaged += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Records read by [`JobStore::read_all`].
struct Records<T> {
    records: Vec<(StateKey, T, Version)>,
    damaged: usize,
}
