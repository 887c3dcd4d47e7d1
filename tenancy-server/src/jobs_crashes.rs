//! (unit tests) Every job and worker operation stopped at every one of its
//! writes, as a kill -9 would stop it: from that write on, the store (both
//! the registry's and the tenant's) refuses everything, so no cleanup runs.
//! After the store comes back and the grace period passes, one reconcile
//! must leave usage exactly equal to what the live records hold, every
//! queued job claimable, every running job on a live worker, every outcome
//! counted once; a second reconcile must find nothing to do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tenancy_core::testkit::HookBackend;
use tenancy_core::{
    Error, ManualClock, MemoryBackend, NewTenant, Secret, StateBackend, StateBackendExt, StateKey,
    TenantId, TenantRegistry,
};
use tenancy_state::StoreRegistry;
use uuid::Uuid;

use crate::jobs::{JobStatus, JobStore, NewJob, NewWorker, Outcome};

const GRACE: Duration = Duration::from_secs(10);

/// Kills the store at the `at`-th write from now (and everything after).
#[derive(Debug)]
struct Crash {
    writes: AtomicUsize,
    at: AtomicUsize,
    dead: AtomicBool,
}

impl Crash {
    fn arm(&self, at: usize) {
        self.writes.store(0, Ordering::SeqCst);
        self.at.store(at, Ordering::SeqCst);
    }

    fn revive(&self) -> bool {
        self.at.store(usize::MAX, Ordering::SeqCst);
        self.dead.swap(false, Ordering::SeqCst)
    }
}

fn crashing(crash: &Arc<Crash>) -> Arc<HookBackend<Arc<MemoryBackend>>> {
    let b = Arc::new(HookBackend::new(Arc::new(MemoryBackend::new())));
    let c = crash.clone();
    b.set_hook(move |op| {
        let c = c.clone();
        async move {
            if c.dead.load(Ordering::SeqCst) {
                return Err(Error::backend("test", "the server was killed"));
            }
            if op.is_write() {
                let n = c.writes.fetch_add(1, Ordering::SeqCst);
                if n == c.at.load(Ordering::SeqCst) {
                    c.dead.store(true, Ordering::SeqCst);
                    return Err(Error::backend("test", "the server was killed"));
                }
            }
            Ok(())
        }
        .boxed()
    });
    b
}

struct World {
    crash: Arc<Crash>,
    clock: ManualClock,
    registry: Arc<dyn TenantRegistry>,
    state: Arc<dyn StateBackend>,
    jobs: JobStore,
    id: TenantId,
}

async fn world() -> World {
    let crash = Arc::new(Crash {
        writes: AtomicUsize::new(0),
        at: AtomicUsize::new(usize::MAX),
        dead: AtomicBool::new(false),
    });
    let clock = ManualClock::starting_now();
    let registry: Arc<dyn TenantRegistry> = Arc::new(
        StoreRegistry::new(crashing(&crash))
            .with_clock(Arc::new(clock.clone()))
            .with_bcrypt_cost(4),
    );
    registry
        .bootstrap(&Secret::new("an admin password"))
        .await
        .expect("bootstrap");
    let id = TenantId::new("acme").expect("id");
    let mut new = NewTenant::new(id.clone());
    new.limits.max_workers = Some(4);
    new.limits.max_cpu_cores = Some(100);
    registry.create(new).await.expect("tenant");
    let state: Arc<dyn StateBackend> = crashing(&crash);
    let jobs = JobStore::new(
        state.clone(),
        registry.clone(),
        id.clone(),
        Arc::new(clock.clone()),
    )
    .with_grace(GRACE);
    World {
        crash,
        clock,
        registry,
        state,
        jobs,
        id,
    }
}

fn job(cpu: u64) -> NewJob {
    NewJob {
        name: "render".into(),
        cpu: Some(cpu),
        gpu: None,
        payload: None,
    }
}

fn worker(cpu: u64) -> NewWorker {
    NewWorker {
        name: "w".into(),
        cpu: Some(cpu),
        gpu: None,
    }
}

/// The operations stopped part way, each on a world prepared for it.
#[derive(Debug, Clone, Copy)]
enum Step {
    CreateJob,
    RegisterWorker,
    Claim,
    Complete,
    Fail,
    CancelQueued,
    CancelRunning,
    DeleteWorkerWithJob,
}

const STEPS: [Step; 8] = [
    Step::CreateJob,
    Step::RegisterWorker,
    Step::Claim,
    Step::Complete,
    Step::Fail,
    Step::CancelQueued,
    Step::CancelRunning,
    Step::DeleteWorkerWithJob,
];

/// Prepares `w` for `step` (no crash) and returns the ids it works on.
async fn prepare(w: &World, step: Step) -> (Uuid, Uuid) {
    let wk = w.jobs.register_worker(worker(2)).await.expect("worker").id;
    let j = w.jobs.create_job(job(3)).await.expect("job").id;
    if matches!(
        step,
        Step::Complete | Step::Fail | Step::CancelRunning | Step::DeleteWorkerWithJob
    ) {
        w.jobs.claim(&wk).await.expect("claim").expect("a job");
    }
    (wk, j)
}

async fn run(w: &World, step: Step, wk: Uuid, j: Uuid) {
    let _ = match step {
        Step::CreateJob => w.jobs.create_job(job(5)).await.map(drop),
        Step::RegisterWorker => w.jobs.register_worker(worker(7)).await.map(drop),
        Step::Claim => w.jobs.claim(&wk).await.map(drop),
        Step::Complete => w
            .jobs
            .finish(&j, &wk, Outcome::Completed(None))
            .await
            .map(drop),
        Step::Fail => w
            .jobs
            .finish(&j, &wk, Outcome::Failed(None))
            .await
            .map(drop),
        Step::CancelQueued | Step::CancelRunning => w.jobs.cancel(&j).await.map(drop),
        Step::DeleteWorkerWithJob => w.jobs.delete_worker(&wk).await,
    };
}

/// Usage equals the live records; queued jobs have markers; running jobs
/// have live workers.
async fn check(w: &World, what: &str) {
    let jobs = w.jobs.list_jobs(None, 1000).await.expect("jobs");
    let workers = w.jobs.list_workers().await.expect("workers");
    let u = w.registry.usage(&w.id).await.expect("usage");
    let live: Vec<_> = jobs.iter().filter(|j| j.status.is_live()).collect();
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count() as u64;
    let cpu: u64 =
        live.iter().map(|j| j.cpu).sum::<u64>() + workers.iter().map(|w| w.cpu).sum::<u64>();
    assert_eq!(u.jobs_active, live.len() as u64, "{what}: concurrent jobs");
    assert_eq!(u.workers, workers.len() as u64, "{what}: workers");
    assert_eq!(u.cpu_cores, cpu, "{what}: cpu");
    assert_eq!(
        u.jobs_completed,
        count(JobStatus::Completed),
        "{what}: completed"
    );
    assert_eq!(u.jobs_failed, count(JobStatus::Failed), "{what}: failed");
    let markers: Vec<String> = w
        .state
        .list_keys(Some(&StateKey::new("_server/queue").expect("key")))
        .await
        .expect("markers")
        .into_iter()
        .map(|k| k.file_name().split('.').next().unwrap_or("").to_string())
        .collect();
    for j in &jobs {
        match j.status {
            JobStatus::Queued => assert!(
                markers.contains(&j.id.to_string()),
                "{what}: queued job {} has no marker",
                j.id
            ),
            JobStatus::Running => assert!(
                workers.iter().any(|wk| Some(wk.id) == j.worker_id),
                "{what}: running job {} has no live worker",
                j.id
            ),
            _ => {}
        }
    }
    let listed = w.registry.reservations(&w.id).await.expect("listed");
    assert!(
        listed.iter().all(|l| l.committed),
        "{what}: a pending reservation survived the reconcile: {listed:?}"
    );
}

#[tokio::test]
async fn every_operation_stopped_at_every_write_is_repaired_by_one_reconcile() {
    let mut cases = 0;
    for step in STEPS {
        for at in 0.. {
            let w = world().await;
            let (wk, j) = prepare(&w, step).await;
            w.crash.arm(at);
            run(&w, step, wk, j).await;
            let crashed = w.crash.revive();
            let what = format!("{step:?} stopped at write {at}");
            w.clock.advance(GRACE + Duration::from_secs(1));
            w.jobs.reconcile().await.expect("reconcile");
            check(&w, &what).await;
            let again = w.jobs.reconcile().await.expect("second reconcile");
            assert!(!again.changed(), "{what}: a second reconcile did {again:?}");
            cases += 1;
            if !crashed {
                break; // the operation finished before its `at`-th write
            }
        }
    }
    assert!(cases > 30, "only {cases} crash points were tried");
}

#[tokio::test]
async fn reconcile_leaves_reservations_it_does_not_own_alone() {
    use tenancy_core::registry::TenantRegistryExt;
    use tenancy_core::Resource;
    let w = world().await;
    // A stack slot held by the CLI's `state put`, a service: no job or
    // worker record names them, and none ever will.
    w.registry
        .reserve_committed(&w.id, Resource::Stacks, 1)
        .await
        .expect("stack");
    w.registry
        .reserve_committed(&w.id, Resource::Services, 2)
        .await
        .expect("services");
    w.clock.advance(GRACE + Duration::from_secs(1));
    let done = w.jobs.reconcile().await.expect("reconcile");
    let u = w.registry.usage(&w.id).await.expect("usage");
    assert_eq!((u.stacks, u.services), (1, 2), "{done:?}");
}
