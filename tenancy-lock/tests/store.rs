//! What is specific to `StoreLockManager`: the stored layout, the free
//! record that keeps the fencing token, refusal of backends without CAS,
//! corrupt objects, and how many backend calls each operation costs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tenancy_core::testkit::HookBackend;
use tenancy_core::{
    Capabilities, Error, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend, PutMode,
    StateBackend, StateBackendExt, Version,
};
use tenancy_lock::{LockRecord, StoreLockManager, LOCK_RECORD_FORMAT};
use tenancy_state::counting::CountingBackend;

const TTL: Duration = Duration::from_secs(60);

/// Counts the calls that reach a backend.
type Counting = CountingBackend<MemoryBackend>;

/// (gets, puts, deletes, lists) so far.
fn calls<B>(b: &CountingBackend<B>) -> (u64, u64, u64, u64) {
    let c = b.counts();
    (c.get, c.put, c.delete, c.list)
}

/// A MemoryBackend that hides its compare-and-swap.
fn no_cas() -> HookBackend<MemoryBackend> {
    HookBackend::new(MemoryBackend::new()).with_capabilities(Capabilities {
        conditional_create: false,
        conditional_update: false,
        conditional_delete: false,
        list: true,
    })
}

fn key(name: &str) -> LockKey {
    LockKey::new(format!("st-{}:{name}", uuid::Uuid::new_v4().simple())).expect("key")
}

async fn stored(backend: &impl StateBackend, key: &LockKey) -> LockRecord {
    let obj = StoreLockManager::<MemoryBackend>::object_key(key).expect("object key");
    let (record, _): (LockRecord, Version) = backend
        .get_json(&obj)
        .await
        .expect("get")
        .expect("the lock object exists");
    record
}

#[tokio::test]
async fn layout_and_free_record_keep_the_token() {
    let backend = Arc::new(MemoryBackend::new());
    let locks = StoreLockManager::new(Arc::clone(&backend));
    let k = key("stack:web:env:prod");
    let obj = StoreLockManager::<MemoryBackend>::object_key(&k).expect("object key");
    assert_eq!(obj.as_str(), format!("locks/{k}"));

    let lease = locks
        .try_acquire(&LockRequest::new(k.clone(), TTL))
        .await
        .expect("acquire");
    let r = stored(&*backend, &k).await;
    assert_eq!(r.format, LOCK_RECORD_FORMAT);
    assert_eq!(r.key, k);
    assert_eq!(r.fencing_token, lease.fencing_token);
    assert_eq!(r.holder.as_ref(), Some(&lease));

    locks.release(&k, lease.lock_id).await.expect("release");
    let r = stored(&*backend, &k).await;
    assert!(r.holder.is_none(), "a released lock is a free record");
    assert_eq!(r.fencing_token, lease.fencing_token, "the token is kept");
    let freed = r.freed.expect("the record says how the lease ended");
    assert_eq!(freed.lock_id, lease.lock_id);
    assert_eq!(freed.by, "release");
    assert_eq!(
        locks
            .record(&k)
            .await
            .expect("record")
            .map(|r| r.fencing_token),
        Some(lease.fencing_token)
    );

    // A fresh manager (another process) continues the sequence.
    let other = StoreLockManager::new(Arc::clone(&backend));
    let next = other
        .try_acquire(&LockRequest::new(k.clone(), TTL))
        .await
        .expect("acquire");
    assert_eq!(next.fencing_token, lease.fencing_token + 1);

    // Long keys live under their hash in their group's place (the first two
    // `:` parts), and list still finds them.
    let long = LockKey::new(format!("{}:{}", k, "x".repeat(300))).expect("key");
    let obj = StoreLockManager::<MemoryBackend>::object_key(&long).expect("object key");
    let group = k.as_str().split(':').take(2).collect::<Vec<_>>().join(":");
    assert!(
        obj.as_str().starts_with(&format!("locks/={group}/sha256-")),
        "{obj}"
    );
    // Without a group (fewer than three parts) a long key stays in the shared place.
    let flat = LockKey::new(format!("st-{}", "y".repeat(300))).expect("key");
    let obj = StoreLockManager::<MemoryBackend>::object_key(&flat).expect("object key");
    assert!(obj.as_str().starts_with("locks/=sha256-"), "{obj}");
    let l = locks
        .try_acquire(&LockRequest::new(long.clone(), TTL))
        .await
        .expect("acquire");
    assert_eq!(stored(&*backend, &long).await.key, long);
    let listed = locks.list(k.as_str()).await.expect("list");
    assert!(listed.iter().any(|i| i.lock_id == l.lock_id));
    assert!(listed.iter().any(|i| i.lock_id == next.lock_id));
}

#[tokio::test]
async fn backends_without_cas_are_refused() {
    let e =
        StoreLockManager::try_new(CountingBackend::new(no_cas())).expect_err("no CAS, no locks");
    assert!(matches!(e, Error::NotImplemented { .. }), "{e}");

    let backend = Arc::new(CountingBackend::new(no_cas()));
    let locks = StoreLockManager::new(Arc::clone(&backend));
    let k = key("x");
    for e in [
        locks
            .try_acquire(&LockRequest::new(k.clone(), TTL))
            .await
            .expect_err("refused"),
        locks.inspect(&k).await.expect_err("refused"),
        locks.list("").await.expect_err("refused"),
    ] {
        assert!(matches!(e, Error::NotImplemented { .. }), "{e}");
    }
    assert_eq!(backend.counts().total(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn corrupt_lock_objects_are_reported_not_overwritten() {
    let backend = Arc::new(MemoryBackend::new());
    let locks = StoreLockManager::new(Arc::clone(&backend));
    let k = key("corrupt");
    let obj = StoreLockManager::<MemoryBackend>::object_key(&k).expect("object key");
    backend
        .put(&obj, Bytes::from_static(b"{not json"), PutMode::Create)
        .await
        .expect("put");
    for e in [
        locks
            .try_acquire(&LockRequest::new(k.clone(), TTL))
            .await
            .expect_err("corrupt"),
        locks.inspect(&k).await.expect_err("corrupt"),
    ] {
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }
    let still = backend.get(&obj).await.expect("get").expect("exists");
    assert_eq!(
        &still.bytes[..],
        b"{not json",
        "a corrupt object is left for an admin"
    );

    // A record that names another key is refused as well.
    let other = key("other");
    let mut r = serde_json::to_value(LockRecord {
        format: LOCK_RECORD_FORMAT,
        key: other,
        fencing_token: 3,
        holder: None,
        freed: None,
    })
    .expect("json");
    r["format"] = 1.into();
    let k2 = key("misplaced");
    let obj2 = StoreLockManager::<MemoryBackend>::object_key(&k2).expect("object key");
    backend
        .put(&obj2, Bytes::from(r.to_string()), PutMode::Create)
        .await
        .expect("put");
    let e = locks.inspect(&k2).await.expect_err("misplaced record");
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[tokio::test]
async fn a_corrupt_long_key_record_fails_only_lists_it_matches() {
    let backend = Arc::new(MemoryBackend::new());
    let locks = StoreLockManager::new(Arc::clone(&backend));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let a = format!("tenant:a{tag}:");
    let b = format!("tenant:b{tag}:");
    let long = |t: &str, n: &str| LockKey::new(format!("{t}{n}:{}", "x".repeat(300))).expect("key");

    // tenant b holds a long and a short key
    let b_long = locks
        .try_acquire(&LockRequest::new(long(&b, "job"), TTL))
        .await
        .expect("acquire");
    let b_short = locks
        .try_acquire(&LockRequest::new(
            LockKey::new(format!("{b}stack")).expect("key"),
            TTL,
        ))
        .await
        .expect("acquire");

    // tenant a's long-key objects: one is not JSON at all, one still names its key
    let garbage = StoreLockManager::<MemoryBackend>::object_key(&long(&a, "one")).expect("obj");
    backend
        .put(&garbage, Bytes::from_static(b"{not json"), PutMode::Create)
        .await
        .expect("put");
    let a_two = long(&a, "two");
    let named = StoreLockManager::<MemoryBackend>::object_key(&a_two).expect("obj");
    let broken = serde_json::json!({ "format": LOCK_RECORD_FORMAT, "key": a_two.as_str() });
    backend
        .put(&named, Bytes::from(broken.to_string()), PutMode::Create)
        .await
        .expect("put");

    // b's list is not disturbed by a's damage
    let listed = locks.list(&b).await.expect("b's list");
    let ids: Vec<_> = listed.iter().map(|i| i.lock_id).collect();
    assert_eq!(ids.len(), 2, "{listed:?}");
    assert!(ids.contains(&b_long.lock_id) && ids.contains(&b_short.lock_id));

    // a's list and the list of everything report the damage
    for prefix in [a.as_str(), ""] {
        let e = locks.list(prefix).await.expect_err("corrupt");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }
    // and so do the operations on a's key
    let e = locks.inspect(&a_two).await.expect_err("corrupt");
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[tokio::test]
async fn backend_calls_per_operation() {
    let clock = ManualClock::starting_now();
    let backend = Arc::new(Counting::default());
    let locks = StoreLockManager::new(Arc::clone(&backend)).with_clock(Arc::new(clock.clone()));
    let k = key("calls");
    let req = LockRequest::new(k.clone(), TTL);

    // First acquire of a never-used key: read + create.
    let before = calls(&backend);
    let lease = locks.try_acquire(&req).await.expect("acquire");
    assert_eq!(diff(before, calls(&backend)), (1, 1, 0, 0));

    // Uncontended renew and release: one conditional write each.
    let before = calls(&backend);
    locks.renew(&k, lease.lock_id, TTL).await.expect("renew");
    assert_eq!(diff(before, calls(&backend)), (0, 1, 0, 0), "renew");
    let before = calls(&backend);
    locks.release(&k, lease.lock_id).await.expect("release");
    assert_eq!(diff(before, calls(&backend)), (0, 1, 0, 0), "release");

    // Uncontended re-acquire: one conditional write.
    let before = calls(&backend);
    let lease = locks.try_acquire(&req).await.expect("acquire");
    assert_eq!(diff(before, calls(&backend)), (0, 1, 0, 0), "re-acquire");

    // Takeover of an expired lease this manager knows: one write.
    clock.advance(TTL);
    let before = calls(&backend);
    let taken = locks.try_acquire(&req).await.expect("takeover");
    assert_eq!(diff(before, calls(&backend)), (0, 1, 0, 0), "takeover");
    assert!(taken.fencing_token > lease.fencing_token);

    // A manager with nothing remembered (a new process): read + write.
    let cold = StoreLockManager::new(Arc::clone(&backend)).with_clock(Arc::new(clock.clone()));
    let before = calls(&backend);
    cold.release(&k, taken.lock_id).await.expect("release");
    assert_eq!(diff(before, calls(&backend)), (1, 1, 0, 0), "cold release");

    // `locks` now believes the lock is held by `taken` (it does not know of
    // the release): it reads and takes the lock.
    let before = calls(&backend);
    let again = locks.try_acquire(&req).await.expect("acquire");
    assert_eq!(
        diff(before, calls(&backend)),
        (1, 1, 0, 0),
        "acquire on a read"
    );
    assert!(again.fencing_token > taken.fencing_token);
    locks.release(&k, again.lock_id).await.expect("release");

    // Now `locks` believes the lock is free, but `cold` takes it: the
    // remembered version is stale, the write fails, `locks` re-reads and
    // reports the real holder. A stale memory never wins a lock.
    let held = cold.try_acquire(&req).await.expect("acquire");
    let before = calls(&backend);
    match locks.try_acquire(&req).await {
        Err(Error::LockHeld { holder }) => assert_eq!(holder.lock_id, held.lock_id),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    assert_eq!(diff(before, calls(&backend)), (1, 1, 0, 0), "stale memory");
    // The same for renew and release by a stale lease id.
    let e = locks
        .renew(&k, again.lock_id, TTL)
        .await
        .expect_err("stale renew");
    assert!(matches!(e, Error::Precondition { .. }), "{e}");
    assert_eq!(
        cold.inspect(&k).await.expect("inspect").map(|i| i.lock_id),
        Some(held.lock_id)
    );
    // Lock objects are never deleted.
    assert_eq!(backend.counts().delete, 0);
}

fn diff(a: (u64, u64, u64, u64), b: (u64, u64, u64, u64)) -> (u64, u64, u64, u64) {
    (b.0 - a.0, b.1 - a.1, b.2 - a.2, b.3 - a.3)
}
