//! Long lock keys (over one state-key segment) live in their group's place,
//! `locks/=<group>/sha256-<hex>`, and objects from the shared place of
//! earlier versions (`locks/=sha256-<hex>`) are moved there: on first touch
//! and by `migrate_long_keys`. On memory, local files and S3.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tenancy_core::{
    Clock, DeleteMode, Error, LockKey, LockManager, LockRequest, ManualClock, MemoryBackend,
    PutMode, StateBackend, StateKey,
};
use tenancy_lock::StoreLockManager;
use tenancy_state::testing::s3_backend_or_skip;
use tenancy_state::LocalBackend;

const TTL: Duration = Duration::from_secs(60);

type Manager = StoreLockManager<Arc<dyn StateBackend>>;

async fn stores(
    test: &str,
) -> Vec<(
    &'static str,
    Arc<dyn StateBackend>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = LocalBackend::open(dir.path()).expect("local backend");
    let mut out: Vec<(
        &'static str,
        Arc<dyn StateBackend>,
        Option<tempfile::TempDir>,
    )> = vec![
        ("memory", Arc::new(MemoryBackend::new()), None),
        ("local files", Arc::new(local), Some(dir)),
    ];
    if let Some(s3) = s3_backend_or_skip(test).await {
        out.push(("s3", s3, None));
    }
    out
}

/// Where every long key lived before groups.
fn legacy_place(key: &LockKey) -> StateKey {
    let digest = Sha256::digest(key.as_str().as_bytes());
    StateKey::new(format!("locks/=sha256-{digest:x}")).expect("legacy key")
}

fn long_key(tenant: &str, name: &str) -> LockKey {
    LockKey::new(format!("tenant:{tenant}:{name}:{}", "x".repeat(300))).expect("key")
}

fn manager(backend: &Arc<dyn StateBackend>, clock: &ManualClock) -> Manager {
    StoreLockManager::new(Arc::clone(backend)).with_clock(Arc::new(clock.clone()))
}

/// Puts `key`'s lock object where an earlier version kept it: the manager
/// writes it, and the bytes are moved to the shared place by hand.
async fn make_legacy(backend: &Arc<dyn StateBackend>, key: &LockKey) {
    let now = Manager::object_key(key).expect("object key");
    let legacy = legacy_place(key);
    if now == legacy {
        return; // before groups: already there
    }
    let obj = backend.get(&now).await.expect("get").expect("written");
    backend
        .put(&legacy, obj.bytes, PutMode::Create)
        .await
        .expect("put legacy");
    backend.delete(&now, DeleteMode::Any).await.expect("delete");
}

#[tokio::test]
async fn a_legacy_long_key_moves_to_its_tenants_place_on_first_touch() {
    for (name, backend, _dir) in stores("a_legacy_long_key_moves_on_first_touch").await {
        let clock = ManualClock::starting_now();
        let tenant = format!("mig{}", uuid::Uuid::new_v4().simple());
        let key = long_key(&tenant, "stack");
        let lease = manager(&backend, &clock)
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acquire");
        make_legacy(&backend, &key).await;

        // Another process of this version: it finds the held lock...
        let fresh = manager(&backend, &clock);
        let held = fresh.inspect(&key).await.expect("inspect").expect("held");
        assert_eq!(held.lock_id, lease.lock_id, "{name}");
        let e = fresh
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect_err("still held");
        assert!(matches!(e, Error::LockHeld { .. }), "{name}: {e}");
        // ...and has moved it out of the shared place into the tenant's.
        assert!(
            backend
                .get(&legacy_place(&key))
                .await
                .expect("get")
                .is_none(),
            "{name}: the legacy object is still in the shared place"
        );
        let place = Manager::object_key(&key).expect("object key");
        assert!(
            place
                .as_str()
                .starts_with(&format!("locks/=tenant:{tenant}/")),
            "{name}: {place}"
        );
        assert!(backend.get(&place).await.expect("get").is_some(), "{name}");

        // The fencing token carries on across the move.
        clock.advance(TTL * 2);
        let next = fresh
            .try_acquire(&LockRequest::new(key.clone(), TTL))
            .await
            .expect("acquire after expiry");
        assert_eq!(next.fencing_token, lease.fencing_token + 1, "{name}");
        let listed = fresh
            .list(&format!("tenant:{tenant}:"))
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "{name}: {listed:?}");
    }
}

#[tokio::test]
async fn migrate_long_keys_moves_every_legacy_object_once() {
    for (name, backend, _dir) in stores("migrate_long_keys_moves_every_legacy_object").await {
        let clock = ManualClock::starting_now();
        let tenant = format!("mig{}", uuid::Uuid::new_v4().simple());
        let old = manager(&backend, &clock);
        let mut tokens = Vec::new();
        let keys: Vec<LockKey> = (0..3)
            .map(|i| long_key(&tenant, &format!("k{i}")))
            .collect();
        for key in &keys {
            let lease = old
                .try_acquire(&LockRequest::new(key.clone(), TTL))
                .await
                .expect("acquire");
            old.release(key, lease.lock_id).await.expect("release");
            tokens.push(lease.fencing_token);
            make_legacy(&backend, key).await;
        }
        // A crash in the middle of an earlier move: both copies exist.
        let both = &keys[0];
        let obj = backend
            .get(&legacy_place(both))
            .await
            .expect("get")
            .expect("legacy");
        backend
            .put(
                &Manager::object_key(both).expect("key"),
                obj.bytes,
                PutMode::Create,
            )
            .await
            .expect("put");

        let fresh = manager(&backend, &clock);
        let moved = fresh.migrate_long_keys().await.expect("migrate");
        assert!(moved >= keys.len(), "{name}: moved {moved}");
        for (key, token) in keys.iter().zip(&tokens) {
            assert!(
                backend
                    .get(&legacy_place(key))
                    .await
                    .expect("get")
                    .is_none(),
                "{name}: {key} is still in the shared place"
            );
            let record = fresh.record(key).await.expect("record").expect("moved");
            assert_eq!(record.fencing_token, *token, "{name}");
        }
        // Nothing of this tenant is left to move.
        let again = fresh.migrate_long_keys().await.expect("migrate again");
        let _ = again; // other tests may share the S3 bucket
        let next = fresh
            .try_acquire(&LockRequest::new(keys[1].clone(), TTL))
            .await
            .expect("acquire");
        assert_eq!(next.fencing_token, tokens[1] + 1, "{name}");
        let _ = clock.now();
    }
}
