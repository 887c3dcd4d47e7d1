//! The jobs-and-workers routes. The multi-step operations (reserve, write,
//! commit; swap, release) run in their own task, so a client that goes away
//! or a request timeout never stops one halfway and leaks quota.

use std::future::Future;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::Audit;
use crate::app_state::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, OptionalJson, Path, Query};
use crate::jobs::{
    parse_id, Job, JobStatus, JobStore, JsonObject, NewJob, NewWorker, Outcome, Worker,
};

fn store(state: &AppState, who: &AuthenticatedTenant) -> ApiResult<JobStore> {
    Ok(state.jobs(who.tenant())?)
}

/// Runs `fut` to completion in its own task, whatever happens to the request.
async fn detached<T, F>(fut: F) -> ApiResult<T>
where
    F: Future<Output = tenancy_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(fut)
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// Drops the tenant's cached usage (it just changed) and refreshes its
/// quota gauges in the background.
fn refresh_usage(state: &AppState, who: &AuthenticatedTenant) {
    state.usage_cache().invalidate(who.id());
    let state = state.clone();
    let tenant = who.tenant_arc();
    tokio::spawn(async move {
        if let Ok(usage) = state.usage(&tenant).await {
            state.metrics().record_usage(&tenant, &usage);
        }
    });
}

/// A job state change refused because of the job's state is a 409.
fn job_conflict(e: ApiError) -> ApiError {
    if e.status() == StatusCode::PRECONDITION_FAILED {
        let msg = e
            .message()
            .strip_prefix("precondition failed: ")
            .unwrap_or(e.message())
            .to_string();
        ApiError::conflict(msg)
    } else {
        e
    }
}

/// Creates a job, within the tenant's quotas (429 over quota).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = NewJob,
    security(("api_key" = [])),
    responses((status = 201, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create_job(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Json(new): Json<NewJob>,
) -> ApiResult<(StatusCode, axum::Json<Job>)> {
    let jobs = state.jobs_through(who.tenant(), audit.registry())?;
    let job = detached(async move { jobs.create_job(new).await }).await?;
    refresh_usage(&state, &who);
    Ok((StatusCode::CREATED, axum::Json(job)))
}

/// The most jobs one listing returns.
const MAX_JOB_LIST: usize = 1000;

/// Filters of `GET /v1/jobs` (and the admin's `GET /v1/tenants/{id}/jobs`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListJobs {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// The most jobs to return (default 100; 1 to 1000, else 400).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl ListJobs {
    /// The limit asked for, refused outside 1..=[`MAX_JOB_LIST`].
    fn limit(&self) -> ApiResult<usize> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=MAX_JOB_LIST).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit {n} is outside 1..={MAX_JOB_LIST}"
            ))),
        }
    }
}

/// A list of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobList {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
}

/// Lists the tenant's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListJobs),
    security(("api_key" = [])),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Query(q): Query<ListJobs>,
) -> ApiResult<axum::Json<JobList>> {
    let limit = q.limit()?;
    let jobs = store(&state, &who)?.list_jobs(q.status, limit).await?;
    Ok(axum::Json(JobList { jobs }))
}

/// The job store of the tenant an admin route names (404 when there is none).
async fn tenant_store(state: &AppState, id: &str) -> ApiResult<JobStore> {
    let id = tenancy_core::TenantId::new(id)?;
    let tenant = state.registry().get(&id).await?;
    Ok(state.jobs(&tenant)?)
}

/// A tenant's jobs, newest first, as its own `GET /v1/jobs` shows them (admin).
#[utoipa::path(get, path = "/v1/tenants/{id}/jobs", tag = "admin",
    operation_id = "admin_list_tenant_jobs",
    params(("id" = String, Path, description = "tenant id"), ListJobs),
    security(("admin" = [])),
    responses((status = 200, description = "the tenant's jobs", body = JobList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_list_jobs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListJobs>,
) -> ApiResult<axum::Json<JobList>> {
    let limit = q.limit()?;
    let jobs = tenant_store(&state, &id)
        .await?
        .list_jobs(q.status, limit)
        .await?;
    Ok(axum::Json(JobList { jobs }))
}

/// A tenant's registered workers, oldest first, as its own `GET
/// /v1/workers` shows them (admin).
#[utoipa::path(get, path = "/v1/tenants/{id}/workers", tag = "admin",
    operation_id = "admin_list_tenant_workers",
    params(("id" = String, Path, description = "tenant id")),
    security(("admin" = [])),
    responses((status = 200, description = "the tenant's workers", body = WorkerList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn admin_list_workers(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<WorkerList>> {
    let workers = tenant_store(&state, &id).await?.list_workers().await?;
    Ok(axum::Json(WorkerList { workers }))
}

/// One job of the tenant.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id")), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Job>> {
    let id = parse_id("job", &id)?;
    Ok(axum::Json(store(&state, &who)?.get_job(&id).await?))
}

/// The body of `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteJob {
    /// The worker that holds the job.
    pub worker_id: Uuid,
    /// The result: a JSON object (anything else is refused).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub result: Option<JsonObject>,
}

/// The body of `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailJob {
    /// The worker that holds the job.
    pub worker_id: Uuid,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

async fn finish(
    state: AppState,
    who: AuthenticatedTenant,
    id: String,
    worker: Uuid,
    outcome: Outcome,
) -> ApiResult<axum::Json<Job>> {
    let id = parse_id("job", &id)?;
    let jobs = store(&state, &who)?;
    let job = detached(async move { jobs.finish(&id, &worker, outcome).await })
        .await
        .map_err(job_conflict)?;
    refresh_usage(&state, &who);
    Ok(axum::Json(job))
}

/// Completes a job held by the given worker; its quota is given back.
#[utoipa::path(post, path = "/v1/jobs/{id}/complete", tag = "jobs", request_body = CompleteJob,
    params(("id" = String, Path, description = "job id")), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn complete_job(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
    Json(body): Json<CompleteJob>,
) -> ApiResult<axum::Json<Job>> {
    finish(
        state,
        who,
        id,
        body.worker_id,
        Outcome::Completed(body.result),
    )
    .await
}

/// Fails a job held by the given worker; its quota is given back.
#[utoipa::path(post, path = "/v1/jobs/{id}/fail", tag = "jobs", request_body = FailJob,
    params(("id" = String, Path, description = "job id")), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn fail_job(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
    Json(body): Json<FailJob>,
) -> ApiResult<axum::Json<Job>> {
    finish(state, who, id, body.worker_id, Outcome::Failed(body.error)).await
}

/// Cancels a queued or running job; its quota is given back (409 if it
/// already finished). A worker still running it gets 409 when it reports.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "job id")), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
    OptionalJson(_empty): OptionalJson<ClaimJob>,
) -> ApiResult<axum::Json<Job>> {
    let id = parse_id("job", &id)?;
    let jobs = store(&state, &who)?;
    let job = detached(async move { jobs.cancel(&id).await })
        .await
        .map_err(job_conflict)?;
    refresh_usage(&state, &who);
    Ok(axum::Json(job))
}

/// A list of workers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WorkerList {
    /// The workers, oldest first.
    pub workers: Vec<Worker>,
}

/// Lists the tenant's registered workers.
#[utoipa::path(get, path = "/v1/workers", tag = "jobs", security(("api_key" = [])),
    responses((status = 200, body = WorkerList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_workers(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
) -> ApiResult<axum::Json<WorkerList>> {
    let workers = store(&state, &who)?.list_workers().await?;
    Ok(axum::Json(WorkerList { workers }))
}

/// Registers a worker, within the worker quota (429 over it).
#[utoipa::path(post, path = "/v1/workers", tag = "jobs", request_body = NewWorker,
    security(("api_key" = [])),
    responses((status = 201, body = Worker), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn register_worker(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Json(new): Json<NewWorker>,
) -> ApiResult<(StatusCode, axum::Json<Worker>)> {
    let jobs = state.jobs_through(who.tenant(), audit.registry())?;
    let worker = detached(async move { jobs.register_worker(new).await }).await?;
    refresh_usage(&state, &who);
    Ok((StatusCode::CREATED, axum::Json(worker)))
}

/// Removes a worker; jobs it held go back to the queue.
#[utoipa::path(delete, path = "/v1/workers/{id}", tag = "jobs",
    params(("id" = String, Path, description = "worker id")), security(("api_key" = [])),
    responses((status = 204, description = "removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_worker(
    State(state): State<AppState>,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id("worker", &id)?;
    let jobs = store(&state, &who)?;
    detached(async move { jobs.delete_worker(&id).await }).await?;
    refresh_usage(&state, &who);
    Ok(StatusCode::NO_CONTENT)
}

/// The optional body of a claim or a cancel: an empty object (no options yet).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimJob {}

/// Gives the worker the oldest queued job of the same tenant, or 204.
#[utoipa::path(post, path = "/v1/workers/{id}/claim", tag = "jobs",
    params(("id" = String, Path, description = "worker id")), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 204, description = "no queued job"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    audit: Audit,
    who: AuthenticatedTenant,
    Path(id): Path<String>,
    OptionalJson(_empty): OptionalJson<ClaimJob>,
) -> ApiResult<Response> {
    let id = parse_id("worker", &id)?;
    let jobs = state.jobs_through(who.tenant(), audit.registry())?;
    match detached(async move { jobs.claim(&id).await }).await? {
        Some(job) => Ok((StatusCode::OK, axum::Json(job)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
