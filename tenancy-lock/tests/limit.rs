//! `LimitedLocks`: the locks-held limit holds under concurrent acquires on
//! memory, local files and S3; leases that run out, crashed acquires and
//! lost releases stop counting; renewing does not count twice; and the
//! layer passes the lock conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::testkit::lock::LockFixture;
use tenancy_core::{
    Error, LockId, LockInfo, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend, Result,
    StateBackend, TenantId,
};
use tenancy_lock::{LimitedLocks, StoreLockManager, TenantLocks};
use tenancy_state::testing::s3_backend_or_skip;
use tenancy_state::LocalBackend;

const TTL: Duration = Duration::from_secs(60);

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

fn key(name: &str) -> LockKey {
    LockKey::new(name).expect("lock key")
}

type Tenant = TenantLocks<Arc<dyn LockManager>>;

/// What the server builds per request: the tenant's view of a store lock
/// manager, limited to `limit`, counted on `backend`.
fn limited(
    backend: &Arc<dyn StateBackend>,
    locks: &Arc<dyn LockManager>,
    id: &str,
    limit: u64,
    clock: &ManualClock,
) -> LimitedLocks<Tenant, Arc<dyn StateBackend>> {
    let view = TenantLocks::new(Arc::clone(locks), tenant(id));
    LimitedLocks::new(view, Arc::clone(backend), tenant(id), limit)
        .expect("layer")
        .with_clock(Arc::new(clock.clone()))
}

fn store_locks(backend: &Arc<dyn StateBackend>, clock: &ManualClock) -> Arc<dyn LockManager> {
    Arc::new(StoreLockManager::new(Arc::clone(backend)).with_clock(Arc::new(clock.clone())))
}

fn expect_quota(result: Result<LockInfo>, limit: u64, what: &str) {
    match result {
        Err(Error::QuotaExceeded {
            resource,
            limit: l,
            requested,
            tenant,
            ..
        }) => {
            assert_eq!(resource, "locks_held", "{what}");
            assert_eq!(l, limit, "{what}");
            assert_eq!(requested, limit + 1, "{what}");
            assert_eq!(tenant, "acme", "{what}");
        }
        other => panic!("{what}: expected QuotaExceeded, got {other:?}"),
    }
}

/// 16 concurrent acquires of distinct keys with a limit of 3, each through
/// its own layer and spread over two lock managers (two server replicas)
/// on one store: exactly 3 succeed, and the other tenant is unaffected.
async fn limit_holds_under_concurrency_on(backend: Arc<dyn StateBackend>, name: &str) {
    let clock = ManualClock::starting_now();
    let replicas = [store_locks(&backend, &clock), store_locks(&backend, &clock)];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let locks = limited(&backend, &replicas[i % 2], "acme", 3, &clock);
        tasks.push(tokio::spawn(async move {
            let req = LockRequest::new(key(&format!("job:{i}")), Duration::from_secs(600));
            locks.try_acquire(&req).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(Error::QuotaExceeded { resource, .. }) => assert_eq!(resource, "locks_held"),
            Err(e) => panic!("{name}: unexpected {e}"),
        }
    }
    assert_eq!(won, 3, "{name}: exactly the limit succeeds");
    let acme = limited(&backend, &replicas[0], "acme", 3, &clock);
    assert_eq!(acme.held().await.expect("held"), 3, "{name}");
    assert_eq!(acme.list("").await.expect("list").len(), 3, "{name}");
    expect_quota(
        acme.try_acquire(&LockRequest::new(key("one-more"), TTL))
            .await,
        3,
        name,
    );
    // Another tenant on the same store counts on its own.
    let globex = limited(&backend, &replicas[1], "globex", 3, &clock);
    for i in 0..3 {
        globex
            .try_acquire(&LockRequest::new(key(&format!("job:{i}")), TTL))
            .await
            .unwrap_or_else(|e| panic!("{name}: globex {i}: {e}"));
    }
    assert_eq!(globex.held().await.expect("held"), 3, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_holds_under_concurrency_on_memory() {
    limit_holds_under_concurrency_on(Arc::new(MemoryBackend::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_holds_under_concurrency_on_local_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = LocalBackend::open(dir.path()).expect("local backend");
    limit_holds_under_concurrency_on(Arc::new(backend), "local files").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_holds_under_concurrency_on_s3() {
    let Some(backend) = s3_backend_or_skip("limit_holds_under_concurrency_on_s3").await else {
        return;
    };
    limit_holds_under_concurrency_on(backend, "s3").await;
}

fn memory_setup() -> (Arc<dyn StateBackend>, ManualClock, Arc<dyn LockManager>) {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::starting_now();
    let locks = store_locks(&backend, &clock);
    (backend, clock, locks)
}

#[tokio::test]
async fn expired_leases_stop_counting_and_renewed_ones_go_on() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 2, &clock);
    let a = acme
        .try_acquire(&LockRequest::new(key("a"), Duration::from_secs(10)))
        .await
        .expect("a");
    acme.try_acquire(&LockRequest::new(key("b"), Duration::from_secs(10)))
        .await
        .expect("b");
    expect_quota(
        acme.try_acquire(&LockRequest::new(key("c"), TTL)).await,
        2,
        "full",
    );
    // Renewing does not count twice.
    for _ in 0..3 {
        acme.renew(&key("a"), a.lock_id, Duration::from_secs(100))
            .await
            .expect("renew a");
    }
    assert_eq!(acme.held().await.expect("held"), 2);

    // b runs out without a release; a was renewed and still holds.
    clock.advance(Duration::from_secs(20));
    assert_eq!(acme.held().await.expect("held"), 1, "b no longer counts");
    acme.try_acquire(&LockRequest::new(key("c"), TTL))
        .await
        .expect("b's slot is free again");
    expect_quota(
        acme.try_acquire(&LockRequest::new(key("d"), TTL)).await,
        2,
        "a (renewed) and c hold",
    );

    // Everything runs out: nothing counts, without any release.
    clock.advance(Duration::from_secs(200));
    assert_eq!(acme.held().await.expect("held"), 0);
    for k in ["d", "e"] {
        acme.try_acquire(&LockRequest::new(key(k), TTL))
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
}

#[tokio::test]
async fn an_expired_lock_taken_again_reuses_its_slot() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 1, &clock);
    let k = key("stack:web:env:prod");
    let first = acme
        .try_acquire(&LockRequest::new(k.clone(), Duration::from_secs(5)).who("alice"))
        .await
        .expect("alice");
    // Another try on the held key is refused as held, not as over quota.
    match acme
        .try_acquire(&LockRequest::new(k.clone(), TTL).who("bob"))
        .await
    {
        Err(Error::LockHeld { holder }) => assert_eq!(holder.lock_id, first.lock_id),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    clock.advance(Duration::from_secs(6));
    let second = acme
        .try_acquire(&LockRequest::new(k.clone(), TTL).who("bob"))
        .await
        .expect("bob takes the expired lock");
    assert_eq!(acme.held().await.expect("held"), 1);
    // The old holder's release fails and frees nothing of bob's.
    assert!(acme.release(&k, first.lock_id).await.is_err());
    expect_quota(
        acme.try_acquire(&LockRequest::new(key("other"), TTL)).await,
        1,
        "bob holds the one slot",
    );
    acme.release(&k, second.lock_id).await.expect("release");
    assert_eq!(acme.held().await.expect("held"), 0);
    acme.try_acquire(&LockRequest::new(key("other"), TTL))
        .await
        .expect("free after the release");
}

/// A lock manager whose acquires fail as a killed server's would: the lease
/// may or may not have been written (here: it was not), and nothing after
/// the failure runs.
#[derive(Debug)]
struct Crashing;

#[async_trait]
impl LockManager for Crashing {
    async fn try_acquire(&self, _req: &LockRequest) -> Result<LockInfo> {
        Err(Error::backend(
            "crash",
            "killed between the record and the lock",
        ))
    }
    async fn acquire(&self, req: &LockRequest, _wait: Duration) -> Result<LockInfo> {
        self.try_acquire(req).await
    }
    async fn renew(&self, _k: &LockKey, _id: LockId, _ttl: Duration) -> Result<LockInfo> {
        Err(Error::not_found("no lock"))
    }
    async fn release(&self, _k: &LockKey, _id: LockId) -> Result<()> {
        Err(Error::not_found("no lock"))
    }
    async fn inspect(&self, _k: &LockKey) -> Result<Option<LockInfo>> {
        Ok(None)
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<LockInfo>> {
        Ok(Vec::new())
    }
    async fn force_unlock(&self, _k: &LockKey, _id: LockId) -> Result<()> {
        Err(Error::not_found("no lock"))
    }
}

#[tokio::test]
async fn crashed_acquires_and_lost_releases_free_their_slot_when_the_lease_ends() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 2, &clock);

    // An acquire that died after its entry was written.
    let crashing = LimitedLocks::new(Crashing, Arc::clone(&backend), tenant("acme"), 2)
        .expect("layer")
        .with_clock(Arc::new(clock.clone()));
    assert!(matches!(
        crashing
            .try_acquire(&LockRequest::new(key("lost"), Duration::from_secs(30)))
            .await,
        Err(Error::Backend { .. })
    ));
    // A release that freed the lock but never reached the record (the
    // server was killed in between): the lock is freed below the layer.
    let held = acme
        .try_acquire(&LockRequest::new(key("held"), Duration::from_secs(30)))
        .await
        .expect("held");
    acme.inner()
        .release(&key("held"), held.lock_id)
        .await
        .expect("release below the layer");
    assert_eq!(acme.held().await.expect("held"), 2, "both still count");
    expect_quota(
        acme.try_acquire(&LockRequest::new(key("x"), TTL)).await,
        2,
        "the leftovers count until their lease would end",
    );
    clock.advance(Duration::from_secs(31));
    for k in ["x", "y"] {
        acme.try_acquire(&LockRequest::new(key(k), TTL))
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    assert_eq!(acme.held().await.expect("held"), 2);
}

#[tokio::test]
async fn a_limit_of_zero_refuses_every_acquire_and_the_record_is_outside_the_tenant() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 0, &clock);
    match acme.try_acquire(&LockRequest::new(key("a"), TTL)).await {
        Err(Error::QuotaExceeded {
            limit, requested, ..
        }) => assert_eq!((limit, requested), (0, 1)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(acme.record_key().as_str(), "locks-held/acme.json");
    let more = limited(&backend, &locks, "acme", 1, &clock);
    more.try_acquire(&LockRequest::new(key("a"), TTL))
        .await
        .expect("a higher limit admits");
    // A lowered limit refuses new keys until the count is below it.
    expect_quota(
        limited(&backend, &locks, "acme", 1, &clock)
            .try_acquire(&LockRequest::new(key("b"), TTL))
            .await,
        1,
        "at the limit",
    );
}

#[tokio::test]
async fn many_tries_on_one_key_keep_the_record_small() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 5, &clock);
    // Leases on one key that run out without release, many times over.
    for _ in 0..(3 * tenancy_lock::DUPLICATE_SLACK) {
        acme.try_acquire(&LockRequest::new(key("k"), Duration::from_secs(1)))
            .await
            .expect("acquire");
        clock.advance(Duration::from_secs(2));
    }
    let rec = backend
        .get(acme.record_key())
        .await
        .expect("get")
        .expect("record");
    let rec: tenancy_lock::HeldRecord = serde_json::from_slice(&rec.bytes).expect("decode");
    assert!(
        rec.entries.len() <= tenancy_lock::DUPLICATE_SLACK + 1,
        "{} entries",
        rec.entries.len()
    );
    assert_eq!(acme.held().await.expect("held"), 0);
}

mod conformance {
    use super::*;
    tenancy_core::lock_suite!(async {
        let (backend, clock, locks) = memory_setup();
        Some(LockFixture::new(
            limited(&backend, &locks, "acme", 1000, &clock),
            clock,
        ))
    });
}

/// The tenant's real locks, but each acquire takes longer than its ttl, and
/// meanwhile another replica prunes the record (and, with `steal`, takes the
/// one free slot).
#[derive(Debug)]
struct SlowerThanItsTtl {
    inner: Tenant,
    clock: ManualClock,
    other_replica: Arc<LimitedLocks<Tenant, Arc<dyn StateBackend>>>,
    steal: Option<LockKey>,
}

#[async_trait]
impl LockManager for SlowerThanItsTtl {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        self.clock.advance(req.ttl + Duration::from_secs(1));
        // The entry looks stale and its lock is not taken yet: the prune drops it.
        self.other_replica.held().await.expect("prune");
        if let Some(k) = &self.steal {
            self.other_replica
                .try_acquire(&LockRequest::new(k.clone(), TTL))
                .await
                .expect("the other replica takes the freed slot");
        }
        let mut req = req.clone();
        req.ttl = TTL;
        self.inner.try_acquire(&req).await
    }
    async fn acquire(&self, req: &LockRequest, _wait: Duration) -> Result<LockInfo> {
        self.try_acquire(req).await
    }
    async fn renew(&self, k: &LockKey, id: LockId, ttl: Duration) -> Result<LockInfo> {
        self.inner.renew(k, id, ttl).await
    }
    async fn release(&self, k: &LockKey, id: LockId) -> Result<()> {
        self.inner.release(k, id).await
    }
    async fn inspect(&self, k: &LockKey) -> Result<Option<LockInfo>> {
        self.inner.inspect(k).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.inner.list(prefix).await
    }
    async fn force_unlock(&self, k: &LockKey, id: LockId) -> Result<()> {
        self.inner.force_unlock(k, id).await
    }
}

#[tokio::test]
async fn an_acquire_slower_than_its_ttl_confirms_its_entry() {
    for steal in [None, Some(key("thief"))] {
        let (backend, clock, locks) = memory_setup();
        let other_replica = Arc::new(limited(&backend, &locks, "acme", 1, &clock));
        let slow = SlowerThanItsTtl {
            inner: TenantLocks::new(Arc::clone(&locks), tenant("acme")),
            clock: clock.clone(),
            other_replica: Arc::clone(&other_replica),
            steal: steal.clone(),
        };
        let acme = LimitedLocks::new(slow, Arc::clone(&backend), tenant("acme"), 1)
            .expect("layer")
            .with_clock(Arc::new(clock.clone()));
        let got = acme
            .try_acquire(&LockRequest::new(key("slow"), Duration::from_secs(5)))
            .await;
        match &steal {
            None => {
                // Its lease stands and counts: the one slot is taken.
                got.expect("the slow acquire");
                assert_eq!(other_replica.held().await.expect("held"), 1);
                expect_quota(
                    other_replica
                        .try_acquire(&LockRequest::new(key("second"), TTL))
                        .await,
                    1,
                    "the confirmed entry holds the slot",
                );
            }
            Some(_) => {
                // The slot went to another lock meanwhile: the slow lease is
                // given up rather than standing over the limit.
                expect_quota(got, 1, "the slot was taken meanwhile");
                assert!(other_replica
                    .inspect(&key("slow"))
                    .await
                    .expect("inspect")
                    .is_none());
                assert_eq!(other_replica.held().await.expect("held"), 1);
                assert_eq!(other_replica.list("").await.expect("list").len(), 1);
            }
        }
    }
}

#[tokio::test]
async fn a_clients_own_lock_id_used_twice_counts_once() {
    let (backend, clock, locks) = memory_setup();
    let acme = limited(&backend, &locks, "acme", 2, &clock);
    let k = key("stack:web:env:prod");
    let id = LockId::new_random();
    let lease = acme
        .try_acquire(&LockRequest::new(k.clone(), TTL).lock_id(id))
        .await
        .expect("acquire with the client's id");
    assert_eq!(lease.lock_id, id);
    // The same id again, while it holds: held by itself, no second slot.
    match acme
        .try_acquire(&LockRequest::new(k.clone(), TTL).lock_id(id))
        .await
    {
        Err(Error::LockHeld { holder }) => assert_eq!(holder.lock_id, id),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    assert_eq!(acme.held().await.expect("held"), 1);
    acme.release(&k, id).await.expect("release");
    assert_eq!(acme.held().await.expect("held"), 0);
    acme.try_acquire(&LockRequest::new(k.clone(), TTL).lock_id(id))
        .await
        .expect("the same id again after the release");
    assert_eq!(acme.held().await.expect("held"), 1);
}

/// The tenant's real locks, but right after a release frees a lock (before
/// the layer above forgets its entry), another request takes the same key
/// with the same lock id through another replica's layer.
#[derive(Debug)]
struct ReacquiredDuringRelease {
    inner: Tenant,
    other_replica: Arc<LimitedLocks<Tenant, Arc<dyn StateBackend>>>,
    got: std::sync::Mutex<Option<Result<LockInfo>>>,
}

#[async_trait]
impl LockManager for ReacquiredDuringRelease {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        self.inner.try_acquire(req).await
    }
    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        self.inner.acquire(req, wait).await
    }
    async fn renew(&self, k: &LockKey, id: LockId, ttl: Duration) -> Result<LockInfo> {
        self.inner.renew(k, id, ttl).await
    }
    async fn release(&self, k: &LockKey, id: LockId) -> Result<()> {
        self.inner.release(k, id).await?;
        let again = self
            .other_replica
            .try_acquire(&LockRequest::new(k.clone(), TTL).lock_id(id))
            .await;
        *self.got.lock().expect("lock") = Some(again);
        Ok(())
    }
    async fn inspect(&self, k: &LockKey) -> Result<Option<LockInfo>> {
        self.inner.inspect(k).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.inner.list(prefix).await
    }
    async fn force_unlock(&self, k: &LockKey, id: LockId) -> Result<()> {
        self.inner.force_unlock(k, id).await
    }
}

#[tokio::test]
async fn a_release_racing_an_acquire_of_the_same_lock_id_never_undercounts() {
    // renewed: the entry's own `until` has passed while the lease lives on.
    for renewed in [false, true] {
        let (backend, clock, locks) = memory_setup();
        let other_replica = Arc::new(limited(&backend, &locks, "acme", 1, &clock));
        let hooked = ReacquiredDuringRelease {
            inner: TenantLocks::new(Arc::clone(&locks), tenant("acme")),
            other_replica: Arc::clone(&other_replica),
            got: std::sync::Mutex::new(None),
        };
        let acme = LimitedLocks::new(hooked, Arc::clone(&backend), tenant("acme"), 1)
            .expect("layer")
            .with_clock(Arc::new(clock.clone()));
        let k = key("stack:web:env:prod");
        let id = LockId::new_random();
        acme.try_acquire(&LockRequest::new(k.clone(), Duration::from_secs(10)).lock_id(id))
            .await
            .expect("acquire");
        if renewed {
            acme.renew(&k, id, Duration::from_secs(3600))
                .await
                .expect("renew");
            clock.advance(Duration::from_secs(20));
        }
        acme.release(&k, id).await.expect("release");
        let again = acme.inner().got.lock().expect("lock").take().expect("ran");
        let held = other_replica.list("").await.expect("list").len();
        assert_eq!(
            held,
            usize::from(again.is_ok()),
            "renewed {renewed}: {again:?}"
        );
        assert_eq!(
            other_replica.held().await.expect("held"),
            u64::try_from(held).expect("small"),
            "renewed {renewed}: the count is what is held"
        );
        // With the limit of 1 used, no other key gets in.
        let other = other_replica
            .try_acquire(&LockRequest::new(key("other"), TTL))
            .await;
        assert_eq!(other.is_ok(), held == 0, "renewed {renewed}: {other:?}");
    }
}
