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
//! _server/queue/<job-id>     a marker per queued job (what claim scans)
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
//! caller wins a claim, a completion or a worker deletion, and each quota
//! reservation is released exactly once.

use std::sync::Arc;

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
    /// The worker that holds (or held) the job.
    pub worker_id: Option<Uuid>,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a worker claimed it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
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
        }
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
        let mode = if self.state.capabilities().conditional_delete {
            DeleteMode::IfVersion(version)
        } else {
            DeleteMode::Any
        };
        match self.state.delete(key, mode).await {
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
            .reserve_all(&[
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
            .reserve_all(&[
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
        self.state.delete(&key, DeleteMode::Any).await
    }

    async fn requeue_jobs_of(&self, worker: &Uuid) -> Result<()> {
        for key in self.state.list_keys(Some(&Self::prefix("jobs")?)).await? {
            self.requeue(&key, worker).await?;
        }
        Ok(())
    }

    /// Puts the job at `key` back in the queue if it is running on `worker`
    /// (a compare-and-swap, so a job completed or requeued meanwhile is left alone).
    async fn requeue(&self, key: &StateKey, worker: &Uuid) -> Result<()> {
        let Some((mut rec, version)) = self.state.get_json::<JobRecord>(key).await? else {
            return Ok(());
        };
        if rec.job.status != JobStatus::Running || rec.job.worker_id != Some(*worker) {
            return Ok(());
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
                Ok(())
            }
            // Completed, failed or requeued meanwhile: nothing to do.
            Err(Error::Precondition { .. }) => Ok(()),
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
    /// the outcome recorded in the tenant's usage.
    pub(crate) async fn finish(&self, id: &Uuid, worker: &Uuid, outcome: Outcome) -> Result<Job> {
        let (mut rec, version) = self
            .read_job(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        if rec.job.status != JobStatus::Running || rec.job.worker_id != Some(*worker) {
            return Err(Error::precondition(format!(
                "job {id} is {} and not held by worker {worker}",
                match rec.job.status {
                    JobStatus::Queued => "queued",
                    JobStatus::Running => "running",
                    JobStatus::Completed => "completed",
                    JobStatus::Failed => "failed",
                }
            )));
        }
        let now = self.clock.now();
        let event = match outcome {
            Outcome::Completed(result) => {
                rec.job.status = JobStatus::Completed;
                rec.job.result = result;
                UsageEvent::JobCompleted
            }
            Outcome::Failed(error) => {
                if let Some(e) = &error {
                    if e.chars().count() > MAX_ERROR_LEN {
                        return Err(Error::invalid(format!(
                            "error message is longer than {MAX_ERROR_LEN} characters"
                        )));
                    }
                }
                rec.job.status = JobStatus::Failed;
                rec.job.error = error;
                UsageEvent::JobFailed
            }
        };
        rec.job.finished_at = Some(now);
        rec.job.updated_at = now;
        let reservations = std::mem::take(&mut rec.reservations);
        self.state
            .put_json(&Self::key("jobs", id)?, &rec, PutMode::Update(version))
            .await
            .map_err(|e| match e {
                Error::Precondition { .. } => {
                    Error::precondition(format!("job {id} changed meanwhile"))
                }
                e => e,
            })?;
        // Only the caller whose swap won gets here: each reservation is released once.
        self.release_all(&reservations).await;
        self.registry.record_usage(&self.tenant, event).await?;
        Ok(rec.job)
    }
}
