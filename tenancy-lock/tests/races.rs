//! Lock races with real concurrency (tokio tasks on a multi-thread runtime):
//! one holder per round, an expiry takeover race, and a holder that crashes.

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{
    Error, LockInfo, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend, StateBackend,
};
use tenancy_lock::{MemoryLockManager, StoreLockManager};
use tenancy_state::testing::s3_backend_or_skip;
use tenancy_state::LocalBackend;
use tokio::sync::Barrier;

const CONTENDERS: usize = 16;
const ROUNDS: usize = 50;

fn unique_key(name: &str) -> LockKey {
    LockKey::new(format!("race-{}:{name}", uuid::Uuid::new_v4().simple())).expect("valid key")
}

/// `n` store managers on one backend, each with its own version memory, as
/// if each were a separate process.
fn store_managers<B: StateBackend + 'static>(
    backend: Arc<B>,
    clock: &ManualClock,
    n: usize,
) -> Vec<Arc<dyn LockManager>> {
    (0..n)
        .map(|_| {
            Arc::new(
                StoreLockManager::new(Arc::clone(&backend)).with_clock(Arc::new(clock.clone())),
            ) as Arc<dyn LockManager>
        })
        .collect()
}

/// All contenders try at once; returns every result, in contender order.
async fn contend(
    managers: &[Arc<dyn LockManager>],
    key: &LockKey,
    ttl: Duration,
) -> Vec<Result<LockInfo, Error>> {
    let barrier = Arc::new(Barrier::new(managers.len()));
    let tasks: Vec<_> = managers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let m = Arc::clone(m);
            let barrier = Arc::clone(&barrier);
            let req = LockRequest::new(key.clone(), ttl).who(format!("contender-{i}@race"));
            tokio::spawn(async move {
                barrier.wait().await;
                m.try_acquire(&req).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("contender task"));
    }
    results
}

/// Exactly one winner; every loser was told who won.
fn single_winner(results: Vec<Result<LockInfo, Error>>, what: &str) -> LockInfo {
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for r in results {
        match r {
            Ok(lease) => winners.push(lease),
            Err(Error::LockHeld { holder }) => losers.push(*holder),
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{what}: exactly one holder, got {winners:?}"
    );
    let winner = winners.remove(0);
    for h in losers {
        assert_eq!(h.lock_id, winner.lock_id, "{what}: losers see the winner");
    }
    winner
}

async fn one_holder_per_round(managers: Vec<Arc<dyn LockManager>>, rounds: usize) {
    let key = unique_key("rounds");
    let mut last_token = 0;
    for round in 0..rounds {
        let results = contend(&managers, &key, Duration::from_secs(60)).await;
        let winner = single_winner(results, &format!("round {round}"));
        assert!(
            winner.fencing_token > last_token,
            "round {round}: token {} after {last_token}",
            winner.fencing_token
        );
        last_token = winner.fencing_token;
        // The winner releases through any manager (here: a random one).
        let m = &managers[round % managers.len()];
        m.release(&key, winner.lock_id).await.expect("release");
    }
}

async fn expiry_takeover_race(managers: Vec<Arc<dyn LockManager>>, clock: &ManualClock) {
    let key = unique_key("takeover");
    let old = managers[0]
        .try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(5)))
        .await
        .expect("first holder");
    // Everyone has seen the held lock, so every manager remembers the version.
    for m in &managers {
        assert!(m.inspect(&key).await.expect("inspect").is_some());
    }
    clock.advance(Duration::from_secs(6));
    for round in 0..5 {
        let results = contend(&managers, &key, Duration::from_secs(5)).await;
        let winner = single_winner(results, &format!("takeover round {round}"));
        assert!(winner.fencing_token > old.fencing_token);
        // The pre-takeover lease is refused everywhere, and changes nothing.
        for m in &managers {
            let e = m
                .renew(&key, old.lock_id, Duration::from_secs(5))
                .await
                .expect_err("stale renew");
            assert!(matches!(e, Error::Precondition { .. }), "{e}");
        }
        assert_eq!(
            managers[1]
                .inspect(&key)
                .await
                .expect("inspect")
                .map(|i| i.lock_id),
            Some(winner.lock_id)
        );
        clock.advance(Duration::from_secs(6));
    }
}

async fn holder_crash(make: impl Fn() -> Arc<dyn LockManager>, clock: &ManualClock) {
    let key = unique_key("crash");
    let crashed = {
        let m = make();
        let lease = m
            .try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(30)).operation("apply"))
            .await
            .expect("acquire");
        drop(m); // the holder dies without releasing
        lease
    };
    let survivor = make();
    match survivor
        .try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(30)))
        .await
    {
        Err(Error::LockHeld { holder }) => assert_eq!(holder.lock_id, crashed.lock_id),
        other => panic!("the crashed holder's lease still holds: {other:?}"),
    }
    clock.advance(Duration::from_secs(30));
    let taken = survivor
        .try_acquire(&LockRequest::new(key.clone(), Duration::from_secs(30)))
        .await
        .expect("taken over after the TTL");
    assert!(taken.fencing_token > crashed.fencing_token);
    // The crashed holder comes back (a new process with its old lease id).
    let ghost = make();
    for e in [
        ghost
            .renew(&key, crashed.lock_id, Duration::from_secs(30))
            .await
            .expect_err("stale renew"),
        ghost
            .release(&key, crashed.lock_id)
            .await
            .expect_err("stale release"),
    ] {
        assert!(matches!(e, Error::Precondition { .. }), "{e}");
    }
    assert_eq!(
        survivor
            .inspect(&key)
            .await
            .expect("inspect")
            .map(|i| i.lock_id),
        Some(taken.lock_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_manager_one_holder_per_round() {
    let m: Arc<dyn LockManager> = Arc::new(MemoryLockManager::new());
    one_holder_per_round(vec![m; CONTENDERS], ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_manager_expiry_takeover_race() {
    let clock = ManualClock::starting_now();
    let m: Arc<dyn LockManager> =
        Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone())));
    expiry_takeover_race(vec![m; CONTENDERS], &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_manager_holder_crash() {
    let clock = ManualClock::starting_now();
    let m: Arc<dyn LockManager> =
        Arc::new(MemoryLockManager::new().with_clock(Arc::new(clock.clone())));
    holder_crash(|| Arc::clone(&m), &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_on_memory_one_holder_per_round() {
    let clock = ManualClock::starting_now();
    let managers = store_managers(Arc::new(MemoryBackend::new()), &clock, CONTENDERS);
    one_holder_per_round(managers, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_on_memory_expiry_takeover_race() {
    let clock = ManualClock::starting_now();
    let managers = store_managers(Arc::new(MemoryBackend::new()), &clock, CONTENDERS);
    expiry_takeover_race(managers, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_on_memory_holder_crash() {
    let clock = ManualClock::starting_now();
    let backend = Arc::new(MemoryBackend::new());
    holder_crash(
        || store_managers(Arc::clone(&backend), &clock, 1).remove(0),
        &clock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files_one_holder_per_round() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let backend = Arc::new(LocalBackend::open(dir.path()).expect("local backend"));
    one_holder_per_round(store_managers(backend, &clock, CONTENDERS), ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files_expiry_takeover_race() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let backend = Arc::new(LocalBackend::open(dir.path()).expect("local backend"));
    expiry_takeover_race(store_managers(backend, &clock, CONTENDERS), &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_files_holder_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let backend = Arc::new(LocalBackend::open(dir.path()).expect("local backend"));
    holder_crash(
        || store_managers(Arc::clone(&backend), &clock, 1).remove(0),
        &clock,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_races() {
    let Some(backend) = s3_backend_or_skip("tenancy-lock races on s3").await else {
        return;
    };
    let clock = ManualClock::starting_now();
    let backend = Arc::new(backend);
    one_holder_per_round(store_managers(Arc::clone(&backend), &clock, CONTENDERS), 5).await;
    expiry_takeover_race(
        store_managers(Arc::clone(&backend), &clock, CONTENDERS),
        &clock,
    )
    .await;
    holder_crash(
        || store_managers(Arc::clone(&backend), &clock, 1).remove(0),
        &clock,
    )
    .await;
}
