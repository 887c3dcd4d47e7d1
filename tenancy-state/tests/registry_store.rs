//! StoreRegistry behaviour beyond the trait suite: the stored layout, corrupt
//! and half-written records, the API-key index (reads per lookup), reservation
//! expiry, the admin hash, resumable delete, and migration.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tenancy_core::credentials::{hash_secret, lookup_id};
use tenancy_core::testkit::HookBackend;
use tenancy_core::{
    Capabilities, Error, ManualClock, MemoryBackend, NewTenant, PutMode, Resource, Secret,
    StateBackend, StateBackendExt, StateKey, TenantFilter, TenantId, TenantRegistry,
    TenantRegistryExt, TenantStatus,
};
use tenancy_state::counting::CountingBackend;
use tenancy_state::StoreRegistry;
use tenancy_state::{migrate_stacks, MigrateOptions};

/// A MemoryBackend that counts calls, to show how many reads an operation takes.
type Counting = CountingBackend<MemoryBackend>;

/// (gets, puts, lists) so far.
fn calls(b: &Counting) -> (u64, u64, u64) {
    let c = b.counts();
    (c.get, c.put, c.list)
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn key(s: &str) -> StateKey {
    StateKey::new(s).unwrap()
}

async fn registry() -> (StoreRegistry, Arc<Counting>, ManualClock) {
    let backend = Arc::new(Counting::default());
    let clock = ManualClock::starting_now();
    let r = StoreRegistry::new(backend.clone())
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4);
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    (r, backend, clock)
}

async fn all_keys(b: &dyn StateBackend) -> Vec<String> {
    b.list_keys(None)
        .await
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn create_writes_the_documented_layout() {
    let (r, b, _) = registry().await;
    let c = r.create(NewTenant::new(tid("acme"))).await.unwrap();
    let keys = all_keys(b.as_ref()).await;
    let lookup = lookup_id(c.secret.expose());
    assert_eq!(
        keys,
        [
            format!("registry-keys/{lookup}.yaml"),
            "registry-usage/acme.yaml".to_string(),
            "registry/acme.yaml".to_string(),
            "tenants.yaml".to_string(),
            "tenants/acme/tenant.yaml".to_string(),
            "tenants/acme/v1/layout.yaml".to_string(),
        ]
    );
    // YAML, readable, and without the secret
    let record = b.get(&key("registry/acme.yaml")).await.unwrap().unwrap();
    let text = std::str::from_utf8(&record.bytes).unwrap();
    assert!(text.contains("id: acme"), "{text}");
    assert!(text.contains("status: active"), "{text}");
    assert!(!text.contains(c.secret.expose()));
    let manifest = b.get(&key("tenants.yaml")).await.unwrap().unwrap();
    let m: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&manifest.bytes).unwrap();
    assert_eq!(m["format_version"].as_u64(), Some(1));
    assert_eq!(m["config"]["default_state_version"].as_str(), Some("v1"));
    assert!(m["config"]["admin"]["hash"]
        .as_str()
        .is_some_and(|h| h.starts_with("$2")));
    assert!(!std::str::from_utf8(&manifest.bytes)
        .unwrap()
        .contains("admin-password"));
}

#[tokio::test]
async fn key_lookup_is_two_reads_and_never_a_scan() {
    let (r, b, _) = registry().await;
    let mut secrets = Vec::new();
    for i in 0..50 {
        secrets.push(
            r.create(NewTenant::new(tid(&format!("t{i:03}"))))
                .await
                .unwrap()
                .secret,
        );
    }
    b.reset();
    let t = r.authenticate_key(&secrets[37]).await.unwrap();
    assert_eq!(t.id.as_str(), "t037");
    assert_eq!(calls(&b), (2, 0, 0), "index read + record read, no list");
    b.reset();
    r.authenticate(&tid("t011"), &secrets[11]).await.unwrap();
    assert_eq!(calls(&b), (1, 0, 0), "authenticate reads one object");
    b.reset();
    let unknown = Secret::new("tnc_0123456789abcdefghijABCDEFGHIJ01");
    assert!(matches!(
        r.authenticate_key(&unknown).await,
        Err(Error::Unauthorized { .. })
    ));
    assert_eq!(calls(&b), (1, 0, 0));
    b.reset();
    r.get(&tid("t001")).await.unwrap();
    assert_eq!(calls(&b), (1, 0, 0), "get reads one object");
}

#[tokio::test]
async fn reserve_reads_only_the_tenant_record_and_commit_and_release_only_write() {
    let (r, b, _) = registry().await;
    let id = tid("busy");
    r.create(NewTenant::new(id.clone())).await.unwrap();
    let first = r.reserve(&id, Resource::ConcurrentJobs, 1).await.unwrap();
    r.release(&first).await.unwrap();
    b.reset();
    let res = r.reserve(&id, Resource::ConcurrentJobs, 1).await.unwrap();
    assert_eq!(
        calls(&b),
        (1, 1, 0),
        "reserve: the tenant record; one write from the usage record it wrote last"
    );
    b.reset();
    r.commit(&res).await.unwrap();
    assert_eq!(calls(&b), (0, 1, 0), "commit: one write");
    b.reset();
    r.release(&res).await.unwrap();
    assert_eq!(calls(&b), (0, 1, 0), "release: one write");
}

/// Two registries on one store (two server replicas) take turns on one
/// tenant's quota: each one's remembered usage record is stale every time.
/// Not one reservation may be lost or counted twice, and after refused
/// writes a registry reads before writing, so turns cost a read and a write
/// each, not a wasted write too.
#[tokio::test]
async fn registries_taking_turns_on_one_store_lose_no_reservation() {
    let backend = Arc::new(Counting::default());
    let a = StoreRegistry::new(backend.clone()).with_bcrypt_cost(4);
    a.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let b = StoreRegistry::new(backend.clone()).with_bcrypt_cost(4);
    let id = tid("shared");
    a.create(NewTenant {
        limits: tenancy_core::LimitOverrides {
            max_concurrent_jobs: Some(100),
            ..Default::default()
        },
        ..NewTenant::new(id.clone())
    })
    .await
    .unwrap();
    let mut held = Vec::new();
    backend.reset();
    for turn in 0..20 {
        let r = if turn % 2 == 0 { &a } else { &b };
        let res = r.reserve(&id, Resource::ConcurrentJobs, 1).await.unwrap();
        r.commit(&res).await.unwrap();
        held.push(res);
    }
    // 40 writes, and at most two refused ones per registry on the way.
    let puts = calls(&backend).1;
    assert!((40..=44).contains(&puts), "{puts} writes for 40 operations");
    assert_eq!(a.usage(&id).await.unwrap().jobs_active, 20);
    assert_eq!(b.reservations(&id).await.unwrap().len(), 20);
    // Turns settle to what they cost with nothing remembered: a read and a
    // write per operation (and the reserve's read of the tenant record).
    backend.reset();
    let res = a.reserve(&id, Resource::ConcurrentJobs, 1).await.unwrap();
    assert_eq!(
        calls(&backend),
        (2, 1, 0),
        "a reserve after the other's turn"
    );
    backend.reset();
    a.commit(&res).await.unwrap();
    assert_eq!(calls(&backend), (1, 1, 0), "a commit after its own reserve");
    held.push(res);
    for (n, res) in held.iter().enumerate() {
        let r = if n % 2 == 0 { &b } else { &a };
        r.release(res).await.unwrap();
    }
    assert_eq!(a.usage(&id).await.unwrap().jobs_active, 0);
    assert!(a.reservations(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dangling_or_foreign_index_entry_is_ignored() {
    let (r, b, _) = registry().await;
    let a = r.create(NewTenant::new(tid("alpha"))).await.unwrap();
    let bb = r.create(NewTenant::new(tid("bravo"))).await.unwrap();
    // point alpha's index entry at bravo: the record's lookup id does not match
    let k = key(&format!(
        "registry-keys/{}.yaml",
        lookup_id(a.secret.expose())
    ));
    b.put(
        &k,
        Bytes::from("tenant: bravo\ncreated_at: 2030-01-01T00:00:00Z\n"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    assert!(matches!(
        r.authenticate_key(&a.secret).await,
        Err(Error::Unauthorized { .. })
    ));
    r.authenticate_key(&bb.secret).await.unwrap();
    // and alpha still authenticates by id
    r.authenticate(&tid("alpha"), &a.secret).await.unwrap();
}

#[tokio::test]
async fn corrupt_and_half_written_records_name_the_tenant_and_spare_the_others() {
    let (r, b, _) = registry().await;
    let mut secrets = Vec::new();
    for id in ["good-one", "broken", "half", "good-two"] {
        secrets.push(r.create(NewTenant::new(tid(id))).await.unwrap().secret);
    }
    b.put(
        &key("registry/broken.yaml"),
        Bytes::from_static(b"\x00\xff not yaml: [ {"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    let full = b.get(&key("registry/half.yaml")).await.unwrap().unwrap();
    let half = full.bytes.slice(..full.bytes.len() / 2);
    b.put(&key("registry/half.yaml"), half, PutMode::Overwrite)
        .await
        .unwrap();

    for (id, secret) in [("broken", &secrets[1]), ("half", &secrets[2])] {
        for e in [
            r.get(&tid(id)).await.unwrap_err(),
            r.authenticate(&tid(id), secret).await.unwrap_err(),
            r.suspend(&tid(id), None).await.unwrap_err(),
        ] {
            match &e {
                Error::Corrupt { what, .. } => assert!(what.contains(id), "{e}"),
                other => panic!("expected Corrupt naming {id}, got {other}"),
            }
        }
    }
    r.authenticate(&tid("good-one"), &secrets[0]).await.unwrap();
    r.authenticate_key(&secrets[3]).await.unwrap();
    r.reserve(&tid("good-two"), Resource::Stacks, 1)
        .await
        .unwrap();

    // list reports the broken records as errors and keeps going
    let (ok, errors) = r.list_partial(TenantFilter::default()).await;
    let ids: Vec<_> = ok.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["good-one", "good-two"]);
    assert_eq!(errors.len(), 2);
    let mut named: Vec<_> = errors
        .iter()
        .map(|e| match e {
            Error::Corrupt { what, .. } => what.clone(),
            other => panic!("{other}"),
        })
        .collect();
    named.sort();
    assert!(
        named[0].contains("broken") && named[1].contains("half"),
        "{named:?}"
    );
    // the strict collector refuses rather than hiding the damage
    assert!(r.list_all(TenantFilter::default()).await.is_err());

    // a record that decodes but names another tenant is corrupt too
    let other = b
        .get(&key("registry/good-one.yaml"))
        .await
        .unwrap()
        .unwrap();
    b.put(
        &key("registry/good-two.yaml"),
        other.bytes,
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    match r.get(&tid("good-two")).await {
        Err(Error::Corrupt { what, message }) => {
            assert!(what.contains("good-two") && message.contains("good-one"))
        }
        other => panic!("{other:?}"),
    }
    // a corrupt usage record names the tenant as well
    b.put(
        &key("registry-usage/good-one.yaml"),
        Bytes::from_static(b"usage: [1, 2"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    match r.usage(&tid("good-one")).await {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("good-one")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_input_writes_nothing_at_all() {
    let (r, b, _) = registry().await;
    r.create(NewTenant::new(tid("acme"))).await.unwrap();
    let before = all_keys(b.as_ref()).await;
    b.reset();
    let bad = [
        NewTenant {
            email: Some("x".into()),
            ..NewTenant::new(tid("bad-one"))
        },
        NewTenant {
            secret_prefix: Some("X".into()),
            ..NewTenant::new(tid("bad-two"))
        },
        NewTenant {
            limits: tenancy_core::LimitOverrides {
                max_gpus: Some(u64::MAX),
                ..Default::default()
            },
            ..NewTenant::new(tid("bad-three"))
        },
    ];
    for n in bad {
        assert!(matches!(r.create(n).await, Err(Error::InvalidInput { .. })));
    }
    assert_eq!(b.counts().put, 0, "no put was even attempted");
    assert_eq!(all_keys(b.as_ref()).await, before);
}

#[tokio::test]
async fn admin_credential_bootstrap_and_replacement() {
    let b = Arc::new(MemoryBackend::new());
    let r = StoreRegistry::new(b.clone()).with_bcrypt_cost(4);
    assert!(matches!(
        r.verify_admin(&Secret::new("whatever1")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        r.bootstrap(&Secret::new("short")).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        r.bootstrap_with_hash("plaintext-password").await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(
        !r.is_bootstrapped().await.unwrap(),
        "refusals wrote nothing"
    );
    let token = Secret::new("generated-server-token-123");
    r.bootstrap_with_hash(&hash_secret(&token, 4).unwrap())
        .await
        .unwrap();
    r.verify_admin(&token).await.unwrap();
    assert_eq!(r.admin_generation().await.unwrap(), 1);
    assert!(matches!(
        r.bootstrap_with_hash(&hash_secret(&token, 4).unwrap())
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    let new = Secret::new("a-new-admin-password");
    assert_eq!(
        r.set_admin_hash(&hash_secret(&new, 4).unwrap())
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        r.verify_admin(&token).await,
        Err(Error::Unauthorized { .. })
    ));
    r.verify_admin(&new).await.unwrap();
    assert_eq!(r.admin_generation().await.unwrap(), 2);
    assert!(!format!("{r:?}").contains("$2"));
}

#[tokio::test]
async fn uncommitted_reservations_expire() {
    let b = Arc::new(MemoryBackend::new());
    let clock = ManualClock::starting_now();
    let r = StoreRegistry::new(b)
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4)
        .with_reservation_ttl(Duration::from_secs(60));
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let id = tid("leaky");
    r.create(NewTenant {
        limits: tenancy_core::LimitOverrides {
            max_workers: Some(2),
            ..Default::default()
        },
        ..NewTenant::new(id.clone())
    })
    .await
    .unwrap();
    let lost = r.reserve(&id, Resource::Workers, 2).await.unwrap();
    assert!(matches!(
        r.reserve(&id, Resource::Workers, 1).await,
        Err(Error::QuotaExceeded { .. })
    ));
    clock.advance(Duration::from_secs(61));
    assert_eq!(r.usage(&id).await.unwrap().workers, 0, "expired on read");
    assert!(matches!(
        r.commit(&lost).await,
        Err(Error::Precondition { .. })
    ));
    let kept = r.reserve(&id, Resource::Workers, 2).await.unwrap();
    r.commit(&kept).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        r.usage(&id).await.unwrap().workers,
        2,
        "committed capacity stays until released"
    );
}

/// A registry on a MemoryBackend with a 60 s reservation TTL and a tenant
/// allowed 10 workers.
async fn workers_registry() -> (Arc<StoreRegistry>, TenantId, ManualClock) {
    let clock = ManualClock::starting_now();
    let r = StoreRegistry::new(Arc::new(MemoryBackend::new()))
        .with_clock(Arc::new(clock.clone()))
        .with_bcrypt_cost(4)
        .with_reservation_ttl(Duration::from_secs(60));
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let id = tid("exact");
    r.create(NewTenant {
        limits: tenancy_core::LimitOverrides {
            max_workers: Some(10),
            ..Default::default()
        },
        ..NewTenant::new(id.clone())
    })
    .await
    .unwrap();
    (Arc::new(r), id, clock)
}

#[tokio::test]
async fn release_gives_capacity_back_exactly_once() {
    let (r, id, clock) = workers_registry().await;
    let workers =
        |r: Arc<StoreRegistry>, id: TenantId| async move { r.usage(&id).await.unwrap().workers };

    // expire, then release: the capacity came back once, on expiry
    let expired = r.reserve(&id, Resource::Workers, 4).await.unwrap();
    clock.advance(Duration::from_secs(61));
    let live = r.reserve(&id, Resource::Workers, 6).await.unwrap();
    r.commit(&live).await.unwrap();
    r.release(&expired).await.unwrap();
    assert_eq!(
        workers(r.clone(), id.clone()).await,
        6,
        "expire then release"
    );
    assert!(matches!(
        r.reserve(&id, Resource::Workers, 5).await,
        Err(Error::QuotaExceeded { .. })
    ));

    // commit after expiry: Precondition, nothing counted
    match r.commit(&expired).await {
        Err(Error::Precondition { what }) => assert!(what.contains("expired"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(workers(r.clone(), id.clone()).await, 6);

    // double release of a committed reservation
    let two = r
        .reserve_committed(&id, Resource::Workers, 2)
        .await
        .unwrap();
    assert_eq!(workers(r.clone(), id.clone()).await, 8);
    r.release(&two).await.unwrap();
    r.release(&two).await.unwrap();
    assert_eq!(workers(r.clone(), id.clone()).await, 6, "double release");

    // double release of a pending reservation
    let pending = r.reserve(&id, Resource::Workers, 3).await.unwrap();
    r.release(&pending).await.unwrap();
    r.release(&pending).await.unwrap();
    assert_eq!(workers(r.clone(), id.clone()).await, 6);
    assert!(matches!(
        r.commit(&pending).await,
        Err(Error::Precondition { .. })
    ));
    r.release(&live).await.unwrap();
    assert_eq!(workers(r.clone(), id.clone()).await, 0);

    // the stored record remembers the ids that are done
    let text = r
        .backend()
        .get(&key(&format!("registry-usage/{id}.yaml")))
        .await
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&text.bytes).unwrap().to_string();
    assert!(text.contains("\"finished\":"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_releases_of_one_reservation_give_back_once() {
    let (r, id, _clock) = workers_registry().await;
    let a = r
        .reserve_committed(&id, Resource::Workers, 3)
        .await
        .unwrap();
    let b = r.reserve(&id, Resource::Workers, 4).await.unwrap();
    let other = r
        .reserve_committed(&id, Resource::Workers, 2)
        .await
        .unwrap();
    assert_eq!(r.usage(&id).await.unwrap().workers, 9);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let r = r.clone();
        let res = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { r.release(&res).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        r.usage(&id).await.unwrap().workers,
        2,
        "each reservation came back exactly once; the other one still counts"
    );
    r.release(&other).await.unwrap();
    assert_eq!(r.usage(&id).await.unwrap().workers, 0);
}

#[tokio::test]
async fn delete_archives_state_and_resumes() {
    let (r, b, clock) = registry().await;
    let id = tid("leaving");
    r.create(NewTenant::new(id.clone())).await.unwrap();
    b.put(
        &key("tenants/leaving/v1/stacks/web/prod/state.json"),
        Bytes::from_static(b"{}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    let t = r.delete(&id).await.unwrap();
    let ts = t.deleted_at.unwrap().format("%Y%m%dT%H%M%SZ").to_string();
    assert!(b
        .list_keys(Some(&key("tenants/leaving")))
        .await
        .unwrap()
        .is_empty());
    let archived: Vec<String> = b
        .list_keys(Some(&key("archive/leaving")))
        .await
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        archived,
        [
            format!("archive/leaving/{ts}/tenant.yaml"),
            format!("archive/leaving/{ts}/v1/layout.yaml"),
            format!("archive/leaving/{ts}/v1/stacks/web/prod/state.json"),
        ]
    );
    // a write that raced the delete is picked up by running delete again
    b.put(
        &key("tenants/leaving/v1/stacks/late/prod/state.json"),
        Bytes::from_static(b"{\"late\":true}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(5));
    let again = r.delete(&id).await.unwrap();
    assert_eq!(again.status, TenantStatus::Deleted);
    assert!(b
        .get(&key(&format!(
            "archive/leaving/{ts}/v1/stacks/late/prod/state.json"
        )))
        .await
        .unwrap()
        .is_some());
    assert!(matches!(
        r.delete(&id).await,
        Err(Error::Precondition { .. })
    ));
    // purge leaves foreign objects under archive/<id>/ alone
    b.put(
        &key("archive/leaving/notes.txt"),
        Bytes::from_static(b"keep"),
        PutMode::Create,
    )
    .await
    .unwrap();
    // and the record of the locks it held through a server goes too
    b.put(
        &key("locks-held/leaving.json"),
        Bytes::from_static(b"{}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(10));
    // A grace longer than time goes back keeps everything (it panicked on
    // the overflow, which the server answered with a 500).
    for grace in [Duration::MAX, Duration::from_secs(6_402_373_705_727_999)] {
        assert_eq!(r.purge(&id, grace).await.unwrap(), 0);
    }
    assert_eq!(r.purge(&id, Duration::ZERO).await.unwrap(), 5);
    assert!(b
        .get(&key("locks-held/leaving.json"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        all_keys(b.as_ref())
            .await
            .into_iter()
            .filter(|k| k.starts_with("archive/"))
            .collect::<Vec<_>>(),
        ["archive/leaving/notes.txt"]
    );
}

#[tokio::test]
async fn migration_copies_verifies_and_is_idempotent() {
    let (r, b, _) = registry().await;
    let t = r
        .create(NewTenant::new(tid("migrant")))
        .await
        .unwrap()
        .tenant;
    let sources = [
        ("stacks/web/prod/state.json", "{\"serial\":3}"),
        ("stacks/web/prod/history/000001.json", "{\"serial\":1}"),
        ("stacks/web/dev/state.json", "{\"serial\":1}"),
        ("stacks/db/prod/state.json", "{\"serial\":9}"),
    ];
    for (k, v) in sources {
        b.put(&key(k), Bytes::from(v), PutMode::Create)
            .await
            .unwrap();
    }
    b.put(
        &key("other/file"),
        Bytes::from_static(b"x"),
        PutMode::Create,
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let report = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        MigrateOptions::default(),
        &mut |d, n| seen.push((d, n)),
    )
    .await
    .unwrap();
    assert_eq!(report.source_objects, 4);
    assert_eq!(report.copied, 4);
    assert_eq!(report.skipped_identical, 0);
    assert_eq!(report.verified_objects, 4);
    assert!(report.is_clean());
    assert_eq!(seen.first(), Some(&(0, 4)));
    assert_eq!(seen.last(), Some(&(4, 4)));
    for (k, v) in sources {
        let dst = key(&format!("tenants/migrant/v1/{k}"));
        assert_eq!(b.get(&dst).await.unwrap().unwrap().bytes, Bytes::from(v));
        assert!(b.get(&key(k)).await.unwrap().is_some(), "source kept");
    }
    assert!(b
        .get(&key("tenants/migrant/v1/other/file"))
        .await
        .unwrap()
        .is_none());

    // again: everything identical is skipped
    let again = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        MigrateOptions::default(),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((again.copied, again.skipped_identical), (0, 4));
    assert!(again.is_clean());

    // the tenant moved on: a differing destination is reported, not overwritten
    let moved = key("tenants/migrant/v1/stacks/db/prod/state.json");
    b.put(
        &moved,
        Bytes::from_static(b"{\"serial\":10}"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    b.put(
        &key("stacks/new/prod/state.json"),
        Bytes::from_static(b"{}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    let third = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        MigrateOptions::default(),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(third.copied, 1);
    assert_eq!(third.skipped_identical, 3);
    assert_eq!(third.conflicts, vec![moved.clone()]);
    assert!(!third.is_clean());
    assert_eq!(
        b.get(&moved).await.unwrap().unwrap().bytes,
        Bytes::from_static(b"{\"serial\":10}")
    );

    // refusals
    assert!(matches!(
        migrate_stacks(
            b.as_ref(),
            &r,
            &t,
            &key("tenants/migrant/v1"),
            MigrateOptions::default(),
            &mut |_, _| {}
        )
        .await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        migrate_stacks(
            b.as_ref(),
            &r,
            &t,
            &key("tenants"),
            MigrateOptions::default(),
            &mut |_, _| {}
        )
        .await,
        Err(Error::InvalidInput { .. })
    ));
    let gone = r.delete(&tid("migrant")).await.unwrap();
    assert!(matches!(
        migrate_stacks(
            b.as_ref(),
            &r,
            &gone,
            &key("stacks"),
            MigrateOptions::default(),
            &mut |_, _| {}
        )
        .await,
        Err(Error::Precondition { .. })
    ));
    // an empty source migrates nothing, cleanly
    let t2 = r
        .create(NewTenant::new(tid("empty-one")))
        .await
        .unwrap()
        .tenant;
    let empty = migrate_stacks(
        b.as_ref(),
        &r,
        &t2,
        &key("nothing-here"),
        MigrateOptions::default(),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((empty.source_objects, empty.copied), (0, 0));
}

#[tokio::test]
async fn a_backend_without_cas_is_refused_not_faked() {
    let no_cas = HookBackend::new(MemoryBackend::new()).with_capabilities(Capabilities {
        conditional_create: false,
        conditional_update: false,
        conditional_delete: false,
        list: true,
    });
    let r = StoreRegistry::new(Arc::new(no_cas)).with_bcrypt_cost(4);
    assert!(matches!(
        r.bootstrap(&Secret::new("admin-password")).await,
        Err(Error::NotImplemented { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_race_across_tasks_and_registries() {
    // two registry instances (two "replicas") on one store, 64 tasks
    let backend: Arc<MemoryBackend> = Arc::new(MemoryBackend::new());
    let a = Arc::new(StoreRegistry::new(backend.clone()).with_bcrypt_cost(4));
    let b = Arc::new(StoreRegistry::new(backend.clone()).with_bcrypt_cost(4));
    a.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let id = tid("racer");
    a.create(NewTenant {
        limits: tenancy_core::LimitOverrides {
            max_concurrent_jobs: Some(10),
            ..Default::default()
        },
        ..NewTenant::new(id.clone())
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            r.reserve(&id, Resource::ConcurrentJobs, 1).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::QuotaExceeded { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(b.usage(&id).await.unwrap().jobs_active, 10);
}

#[tokio::test]
async fn usage_operations_on_an_unknown_tenant_write_nothing() {
    let (r, b, _) = registry().await;
    r.create(NewTenant::new(tid("real"))).await.unwrap();
    let mut res = r.reserve(&tid("real"), Resource::Stacks, 1).await.unwrap();
    res.tenant = tid("ghost");
    let before = all_keys(b.as_ref()).await;
    assert!(matches!(r.release(&res).await, Err(Error::NotFound { .. })));
    assert!(matches!(r.commit(&res).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        r.record_usage(&tid("ghost"), tenancy_core::UsageEvent::JobCompleted)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(all_keys(b.as_ref()).await, before);
}

#[derive(Debug)]
struct TokioBlocking {
    jobs: AtomicU64,
}

impl tenancy_state::BlockingRunner for TokioBlocking {
    fn run(
        &self,
        job: Box<dyn FnOnce() + Send + 'static>,
    ) -> futures::future::BoxFuture<'static, ()> {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::task::spawn_blocking(job).await.unwrap();
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_unknown_keys_are_refused_without_bcrypt() {
    let runner = Arc::new(TokioBlocking {
        jobs: AtomicU64::new(0),
    });
    let r = StoreRegistry::new(Arc::new(MemoryBackend::new()))
        .with_bcrypt_cost(4)
        .with_blocking(runner.clone());
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let old = r.create(NewTenant::new(tid("keyed"))).await.unwrap().secret;
    let new = r.rotate(&tid("keyed")).await.unwrap().secret;
    runner.jobs.store(0, Ordering::SeqCst);
    for junk in [
        "junk123",
        "",
        "tnc_short",
        "tnc_0123456789abcdefghijABCDEFGHIJ01", // well-formed, no such lookup id
        old.expose(),                           // rotated out: its index entry is gone
    ] {
        assert!(
            matches!(
                r.authenticate_key(&Secret::new(junk)).await,
                Err(Error::Unauthorized { .. })
            ),
            "{junk}"
        );
        assert_eq!(
            runner.jobs.load(Ordering::SeqCst),
            0,
            "no bcrypt for {junk:?}"
        );
    }
    assert_eq!(r.authenticate_key(&new).await.unwrap().id.as_str(), "keyed");
    assert_eq!(
        runner.jobs.load(Ordering::SeqCst),
        1,
        "one verify for a real key"
    );
}

/// A one-shot process (a fresh registry, as each CLI run is) configured
/// with another bcrypt cost than the store's records: a login that names no
/// tenant must cost what a wrong secret costs. Medians of 30 interleaved
/// tries each, with a generous bound (before the manifest kept a dummy
/// hash, the unknown-tenant login hashed and verified at the configured
/// cost 4 and took about a tenth of the wrong-secret login at cost 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_and_wrong_secret_cost_the_same_in_a_fresh_process() {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let admin = StoreRegistry::new(backend.clone()).with_bcrypt_cost(8);
    admin
        .bootstrap(&Secret::new("admin-password"))
        .await
        .unwrap();
    admin.create(NewTenant::new(tid("known"))).await.unwrap();
    let wrong = Secret::new("tnc_0123456789abcdefghijABCDEFGHIJ01");
    let (mut unknown_ms, mut wrong_ms) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        for (id, times) in [("nobody", &mut unknown_ms), ("known", &mut wrong_ms)] {
            let runner = Arc::new(TokioBlocking {
                jobs: AtomicU64::new(0),
            });
            let fresh = StoreRegistry::new(backend.clone())
                .with_bcrypt_cost(4)
                .with_blocking(runner.clone());
            let started = std::time::Instant::now();
            let refused = fresh.authenticate(&tid(id), &wrong).await;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(matches!(refused, Err(Error::Unauthorized { .. })));
            assert_eq!(runner.jobs.load(Ordering::SeqCst), 1, "one verify for {id}");
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (u, w) = (median(&mut unknown_ms), median(&mut wrong_ms));
    let ratio = u / w;
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown tenant median {u:.2} ms vs wrong secret {w:.2} ms (ratio {ratio:.2})"
    );
}

#[derive(Debug)]
struct Dropping;

impl tenancy_state::BlockingRunner for Dropping {
    fn run(
        &self,
        job: Box<dyn FnOnce() + Send + 'static>,
    ) -> futures::future::BoxFuture<'static, ()> {
        drop(job);
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_runs_on_the_blocking_runner() {
    let runner = Arc::new(TokioBlocking {
        jobs: AtomicU64::new(0),
    });
    let backend = Arc::new(MemoryBackend::new());
    let r = StoreRegistry::new(backend.clone())
        .with_bcrypt_cost(4)
        .with_blocking(runner.clone());
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    r.verify_admin(&Secret::new("admin-password"))
        .await
        .unwrap();
    let c = r.create(NewTenant::new(tid("offload"))).await.unwrap();
    r.authenticate(&c.tenant.id, &c.secret).await.unwrap();
    assert!(matches!(
        r.authenticate(&tid("nobody-here"), &c.secret).await,
        Err(Error::Unauthorized { .. })
    ));
    // bootstrap: admin hash + dummy hash; admin verify, create hash, verify, dummy verify
    assert_eq!(runner.jobs.load(Ordering::SeqCst), 6);

    // a runner that loses jobs never lets anyone in and never stores a bad hash
    let lossy = StoreRegistry::new(backend)
        .with_bcrypt_cost(4)
        .with_blocking(Arc::new(Dropping));
    assert!(matches!(
        lossy.authenticate(&c.tenant.id, &c.secret).await,
        Err(Error::Unauthorized { .. })
    ));
    assert!(matches!(
        lossy.create(NewTenant::new(tid("never"))).await,
        Err(Error::Backend { .. })
    ));
    assert!(matches!(
        r.get(&tid("never")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn public_values_carry_no_hash_and_no_lookup_id() {
    let (r, _, _) = registry().await;
    let created = r.create(NewTenant::new(tid("acme"))).await.unwrap();
    let rotated = r.rotate(&tid("acme")).await.unwrap();
    let listed = r.list_all(TenantFilter::default()).await.unwrap();
    let got = r.get(&tid("acme")).await.unwrap();
    let authed = r.authenticate_key(&rotated.secret).await.unwrap();
    let lookups = [
        lookup_id(created.secret.expose()),
        lookup_id(rotated.secret.expose()),
    ];
    let mut shown = vec![
        serde_json::to_string(&created.tenant).unwrap(),
        serde_json::to_string(&rotated.tenant).unwrap(),
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&authed).unwrap(),
        serde_json::to_string(&listed).unwrap(),
        serde_yaml_ng::to_string(&got).unwrap(),
        format!("{got:?}"),
        format!("{created:?}"),
    ];
    shown.extend(listed.iter().map(|t| format!("{t:?}")));
    for s in &shown {
        assert!(!s.contains("$2"), "a bcrypt hash in a public value: {s}");
        for l in &lookups {
            assert!(
                !s.contains(l.as_str()),
                "a lookup id in a public value: {s}"
            );
        }
        assert!(!s.contains(rotated.secret.expose()), "the secret: {s}");
    }
    assert_eq!(got.credential.generation, 2);
    assert_eq!(got.credential.prefix, "tnc");
}

/// Item 10 on one backend: a plain single-tenant tree (the seed layout)
/// migrates into a tenant keeping its stack/env structure and is read as its
/// stacks' state; the new stacks count against `max_stacks` (refused up
/// front, or copied with `force`); a dry run writes nothing.
async fn migration_of_a_plain_tree(raw: Arc<dyn StateBackend>) {
    use tenancy_core::testkit::Op;
    use tenancy_core::LimitOverrides;
    use tenancy_state::stack::StackStore;
    use tenancy_state::TenantScoped;

    let hooked = Arc::new(HookBackend::new(raw));
    let b: Arc<dyn StateBackend> = hooked.clone();
    let r = StoreRegistry::new(b.clone()).with_bcrypt_cost(4);
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let mut new = NewTenant::new(tid("solo"));
    new.limits = LimitOverrides {
        max_stacks: Some(2),
        ..Default::default()
    };
    let t = r.create(new).await.unwrap().tenant;
    let tree = [
        (
            "stacks/app/prod/state.json",
            "{\"resources\":[\"a\",\"b\"]}",
        ),
        (
            "stacks/app/prod/history/001.json",
            "{\"resources\":[\"a\"]}",
        ),
        ("stacks/app/staging/state.json", "{\"resources\":[]}"),
        ("stacks/web/prod/state.json", "{\"serial\":4}"),
        ("stacks/db/prod/state.json", "{}"),
    ];
    for (k, v) in tree {
        b.put(&key(k), Bytes::from(v), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let writes = Arc::new(AtomicU64::new(0));
    let w = writes.clone();
    hooked.set_hook(move |op: Op| {
        if op.is_write() {
            w.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async { Ok(()) })
    });
    let dest = |b: Arc<dyn StateBackend>| async move {
        b.list_keys(Some(&key("tenants/solo/v1/stacks")))
            .await
            .unwrap()
    };
    let opts = |dry_run, force| MigrateOptions { dry_run, force };

    // a dry run shows the plan and the quota, and writes nothing
    let plan = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        opts(true, false),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 0, "a dry run wrote");
    assert!(plan.dry_run && plan.is_clean());
    assert_eq!((plan.copied, plan.copies.len()), (5, 5));
    assert!(plan.copies.contains(&(
        key("stacks/app/prod/history/001.json"),
        key("tenants/solo/v1/stacks/app/prod/history/001.json")
    )));
    assert_eq!(plan.new_stacks, ["app", "db", "web"]);
    assert!(
        plan.forced_over_quota,
        "3 stacks over a limit of 2: {plan:?}"
    );
    assert!(dest(b.clone()).await.is_empty());

    // over max_stacks: refused up front, nothing copied or reserved
    let err = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        opts(false, false),
        &mut |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "a refused migration wrote"
    );
    assert!(dest(b.clone()).await.is_empty());
    assert_eq!(r.usage(&tid("solo")).await.unwrap().stacks, 0);

    // one stack: the stack/env structure is kept, the stack is counted
    let one = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks/app"),
        opts(false, false),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert!(one.is_clean());
    assert_eq!(
        (one.copied, one.new_stacks.clone()),
        (3, vec!["app".to_string()])
    );
    assert_eq!(r.usage(&tid("solo")).await.unwrap().stacks, 1);
    let stacks = StackStore::new(TenantScoped::for_tenant(b.clone(), &t).unwrap());
    assert_eq!(
        stacks.stacks().await.unwrap(),
        [
            ("app".to_string(), "prod".to_string()),
            ("app".to_string(), "staging".to_string())
        ]
    );
    let cur = stacks.current("app", "prod").await.unwrap().unwrap();
    assert_eq!(
        (cur.serial, cur.document),
        (2, serde_json::json!({"resources": ["a", "b"]}))
    );
    let h = stacks.history("app", "prod").await.unwrap();
    assert_eq!(h.iter().map(|e| e.serial).collect::<Vec<_>>(), [1, 2]);

    // the rest would make 3 stacks: refused, then copied with force
    let err = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        opts(false, false),
        &mut |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    let forced = migrate_stacks(
        b.as_ref(),
        &r,
        &t,
        &key("stacks"),
        opts(false, true),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert!(forced.is_clean() && forced.forced_over_quota);
    assert_eq!((forced.copied, forced.skipped_identical), (2, 3));
    assert_eq!(
        stacks.current("web", "prod").await.unwrap().unwrap().serial,
        4
    );

    hooked.clear_hook();
}

#[tokio::test]
async fn migrate_copies_a_plain_tree_in_shape_within_the_stack_quota_on_memory() {
    migration_of_a_plain_tree(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test]
async fn migrate_copies_a_plain_tree_in_shape_within_the_stack_quota_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    migration_of_a_plain_tree(Arc::new(
        tenancy_state::LocalBackend::open(dir.path()).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_plain_tree_in_shape_within_the_stack_quota_on_s3() {
    let Some(b) = tenancy_state::testing::s3_backend_or_skip(
        "registry_store::migrate_copies_a_plain_tree_in_shape_within_the_stack_quota_on_s3",
    )
    .await
    else {
        return;
    };
    migration_of_a_plain_tree(b).await;
}

/// Item 11 on one backend: a source on or below any of the store's reserved
/// prefixes (other tenants' records and bcrypt hashes, the key index, usage,
/// the archive, the locks, tenant trees, the manifest) is refused before
/// anything is read, for real runs and dry runs, forced or not.
async fn reserved_prefixes_are_refused(raw: Arc<dyn StateBackend>) {
    use tenancy_core::testkit::Op;
    use tenancy_state::migrate::RESERVED_PREFIXES;

    let hooked = Arc::new(HookBackend::new(raw));
    let b: Arc<dyn StateBackend> = hooked.clone();
    let r = StoreRegistry::new(b.clone()).with_bcrypt_cost(4);
    r.bootstrap(&Secret::new("admin-password")).await.unwrap();
    let t = r.create(NewTenant::new(tid("thief"))).await.unwrap().tenant;
    r.create(NewTenant::new(tid("victim"))).await.unwrap();
    b.put(
        &key("tenants/victim/v1/stacks/web/prod/state.json"),
        Bytes::from_static(b"{}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    r.delete(&tid("victim")).await.unwrap();
    b.put(
        &key("locks/tenant:victim:stack:web:env:prod"),
        Bytes::from_static(b"{}"),
        PutMode::Create,
    )
    .await
    .unwrap();
    let before = all_keys(b.as_ref()).await;
    let ops = Arc::new(AtomicU64::new(0));
    let o = ops.clone();
    hooked.set_hook(move |_: Op| {
        o.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    });
    for p in RESERVED_PREFIXES {
        let Ok(top) = StateKey::new(*p) else {
            // the probe marker: hidden, so no key (and no --from) can name it
            assert!(p.starts_with('.'), "{p} is no key but not hidden either");
            continue;
        };
        for from in [top.clone(), top.child("victim").unwrap()] {
            for (dry_run, force) in [(false, false), (false, true), (true, false)] {
                let err = migrate_stacks(
                    b.as_ref(),
                    &r,
                    &t,
                    &from,
                    MigrateOptions { dry_run, force },
                    &mut |_, _| {},
                )
                .await
                .unwrap_err();
                assert!(
                    matches!(err, Error::InvalidInput { .. })
                        && err.to_string().contains("reserved"),
                    "--from {from}: {err}"
                );
            }
        }
    }
    assert_eq!(
        ops.load(Ordering::SeqCst),
        0,
        "a refused migration touched the store"
    );
    hooked.clear_hook();
    assert_eq!(
        all_keys(b.as_ref()).await,
        before,
        "a refused migration copied"
    );
}

#[tokio::test]
async fn migrate_refuses_every_reserved_prefix_and_touches_nothing_on_memory() {
    reserved_prefixes_are_refused(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test]
async fn migrate_refuses_every_reserved_prefix_and_touches_nothing_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    reserved_prefixes_are_refused(Arc::new(
        tenancy_state::LocalBackend::open(dir.path()).unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_every_reserved_prefix_and_touches_nothing_on_s3() {
    let Some(b) = tenancy_state::testing::s3_backend_or_skip(
        "registry_store::migrate_refuses_every_reserved_prefix_and_touches_nothing_on_s3",
    )
    .await
    else {
        return;
    };
    reserved_prefixes_are_refused(b).await;
}
