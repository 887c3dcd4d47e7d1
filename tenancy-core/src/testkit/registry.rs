//! The `TenantRegistry` conformance suite: one public function per check.
//!
//! Every check takes a fresh, un-bootstrapped registry (it bootstraps it
//! itself) and, where it has one, the [`ManualClock`] the registry reads:
//! expiry, the jobs-per-hour window and purge grace periods are tested by
//! moving that clock, never by sleeping, and are skipped without one.
//! [`registry_suite!`](crate::registry_suite) makes one test per check.
//!
//! The registry should hash with a low bcrypt cost (4) to keep the suite fast.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::Outcome;
use crate::apikey::{CreatedApiKey, KeyStatus, NewApiKey, Role};
use crate::clock::{Clock, ManualClock};
use crate::credentials::Secret;
use crate::error::Error;
use crate::keys::TenantId;
use crate::registry::{
    NewTenant, TenantFilter, TenantRegistry, TenantRegistryExt, TenantUpdate, UsageEvent,
};
use crate::session::{
    parse_session_token, SessionId, SessionKind, SessionOwner, ADMIN_SESSION_TTL,
    TENANT_SESSION_TTL,
};
use crate::tenant::{LimitOverrides, Plan, Resource, TenantStatus, MAX_LIMIT_VALUE};

fn tid(s: &str) -> TenantId {
    TenantId::new(s).expect("suite ids are valid")
}

fn kind(e: &Error) -> String {
    format!("{:?}", e.kind())
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(r: crate::Result<T>, want: &str, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected {want}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(kind(&e), want, "{what}: expected {want}, got {e}");
            e
        }
    }
}

/// The checks of this suite, in the order [`registry_suite!`](crate::registry_suite) lists them.
pub const CHECKS: [&str; 21] = [
    "bootstrap",
    "create_authenticate",
    "authenticate_key",
    "rotation",
    "refused_statuses",
    "update_with_revision",
    "concurrent_creates",
    "concurrent_updates",
    "quota_race",
    "quota_semantics",
    "secrets_never_shown",
    "bad_input",
    "lifecycle_table",
    "expiry",
    "jobs_per_hour",
    "delete_and_purge",
    "list_filters",
    "sessions",
    "api_keys",
    "api_key_rotation",
    "api_key_expiry_and_sessions",
];

/// The admin password the suite bootstraps with.
const ADMIN: &str = "correct horse battery staple";

/// Bootstraps a fresh registry for a check.
async fn bootstrapped(registry: &dyn TenantRegistry) {
    registry
        .bootstrap(&Secret::new(ADMIN))
        .await
        .expect("bootstrap a fresh registry");
}

/// Bootstrap once; the admin password verifies, wrong ones do not.
pub async fn bootstrap(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    let admin = Secret::new(ADMIN);
    assert!(!registry.is_bootstrapped().await.expect("is_bootstrapped"));
    let err = registry
        .verify_admin(&admin)
        .await
        .expect_err("no admin before bootstrap");
    assert!(
        !matches!(err, Error::InvalidInput { .. }),
        "an un-bootstrapped registry says so, got {err}"
    );
    registry.bootstrap(&admin).await.expect("bootstrap");
    assert!(registry.is_bootstrapped().await.expect("is_bootstrapped"));
    let err = registry
        .bootstrap(&Secret::new("another admin password"))
        .await
        .expect_err("second bootstrap refused");
    assert!(matches!(err, Error::AlreadyExists { .. }), "got {err}");
    registry
        .verify_admin(&admin)
        .await
        .expect("admin password verifies");
    for wrong in ["wrong", "", "correct horse battery stapl"] {
        let err = registry
            .verify_admin(&Secret::new(wrong))
            .await
            .expect_err("wrong admin password refused");
        assert!(matches!(err, Error::Unauthorized { .. }), "got {err}");
    }
    // the second bootstrap did not replace the password
    registry
        .verify_admin(&admin)
        .await
        .expect("admin password still verifies");
    Outcome::Passed
}

/// Create returns the secret once; authenticate accepts it and nothing else.
pub async fn create_authenticate(
    registry: &dyn TenantRegistry,
    _: Option<&ManualClock>,
) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("acme");
    let created = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let t = &created.tenant;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.display_name, "acme", "display name defaults to the id");
    assert_eq!(t.plan, Plan::Free);
    assert_eq!(t.credential.generation, 1);
    assert_eq!(t.credential.rotations, 0);
    assert_eq!(t.credential.last_rotated, None);
    assert_eq!(t.storage.prefix, "tenants/acme");
    assert_eq!(t.storage.version, "v1");
    assert_eq!(t.lock_prefix, "tenant:acme");
    assert_eq!(
        created.secret.prefix(),
        Some("tnc"),
        "default secret prefix"
    );

    let got = registry.get(&id).await.expect("get");
    assert_eq!(got.id, id);
    assert_eq!(got.revision, t.revision);
    let authed = registry
        .authenticate(&id, &created.secret)
        .await
        .expect("authenticate");
    assert_eq!(authed.id, id);
    let wrong = registry
        .authenticate(&id, &Secret::new("tnc_wrong"))
        .await
        .expect_err("wrong secret refused");
    assert!(matches!(wrong, Error::Unauthorized { .. }), "got {wrong}");
    let unknown = registry
        .authenticate(&tid("nobody-here"), &created.secret)
        .await
        .expect_err("unknown id refused");
    assert!(
        matches!(unknown, Error::Unauthorized { .. }),
        "got {unknown}"
    );
    assert_eq!(
        wrong.to_string(),
        unknown.to_string(),
        "unknown id and wrong secret must be indistinguishable"
    );

    let err = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect_err("duplicate create");
    assert!(matches!(err, Error::AlreadyExists { .. }), "got {err}");
    expect_kind(
        registry.get(&tid("nobody-here")).await,
        "NotFound",
        "get of an unknown tenant",
    );
    expect_kind(
        registry.suspend(&tid("nobody-here"), None).await,
        "NotFound",
        "suspend of an unknown tenant",
    );

    // every field of the request lands in the record
    let mut metadata = BTreeMap::new();
    metadata.insert("team".to_string(), "notifications".to_string());
    let full = registry
        .create(NewTenant {
            id: Some(tid("ntfy")),
            display_name: Some("Notifications".into()),
            email: Some("ops@ntfy.example".into()),
            plan: Plan::Pro,
            secret_prefix: Some("ntfy".into()),
            limits: LimitOverrides {
                max_workers: Some(7),
                ..Default::default()
            },
            metadata: metadata.clone(),
            expires_at: None,
        })
        .await
        .expect("create with every field");
    let t = registry.get(&tid("ntfy")).await.expect("get");
    assert_eq!(t.display_name, "Notifications");
    assert_eq!(t.email.as_deref(), Some("ops@ntfy.example"));
    assert_eq!(t.plan, Plan::Pro);
    assert_eq!(t.limits().max_workers, 7);
    assert_eq!(t.limits().max_gpus, Plan::Pro.limits().max_gpus);
    assert_eq!(t.metadata, metadata);
    assert_eq!(full.secret.prefix(), Some("ntfy"));
    assert_eq!(t.credential.prefix, "ntfy");

    // an id from the name
    let named = registry
        .create(NewTenant {
            display_name: Some("Globex Corp".into()),
            ..Default::default()
        })
        .await
        .expect("create from a name");
    assert_eq!(named.tenant.id.as_str(), "globex-corp");
    Outcome::Passed
}

/// A secret alone resolves to its tenant, and only its own.
pub async fn authenticate_key(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let a = registry
        .create(NewTenant::new(tid("key-a")))
        .await
        .expect("create");
    let b = registry
        .create(NewTenant::new(tid("key-b")))
        .await
        .expect("create");
    let got = registry
        .authenticate_key(&a.secret)
        .await
        .expect("key resolves");
    assert_eq!(got.id.as_str(), "key-a");
    let got = registry
        .authenticate_key(&b.secret)
        .await
        .expect("key resolves");
    assert_eq!(got.id.as_str(), "key-b");
    // a secret of one tenant does not authenticate another by id
    expect_kind(
        registry.authenticate(&tid("key-a"), &b.secret).await,
        "Unauthorized",
        "another tenant's secret",
    );
    let mut flipped = a.secret.expose().to_string();
    let last = flipped.pop().expect("non-empty");
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [
        flipped.as_str(),
        "tnc_",
        "",
        "not a key at all",
        "tnc_00000000000000000000000000000000",
    ] {
        let e = expect_kind(
            registry.authenticate_key(&Secret::new(bad)).await,
            "Unauthorized",
            "unknown key",
        );
        if !bad.is_empty() {
            assert!(!e.to_string().contains(bad), "error echoes the key: {e}");
        }
    }
    Outcome::Passed
}

/// Rotation issues a new secret; the old one and its generation stop working.
pub async fn rotation(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("rotor");
    let created = registry
        .create(NewTenant {
            secret_prefix: Some("rot".into()),
            ..NewTenant::new(id.clone())
        })
        .await
        .expect("create");
    let first = registry.rotate(&id).await.expect("rotate");
    assert_ne!(first.secret, created.secret);
    assert_eq!(
        first.secret.prefix(),
        Some("rot"),
        "prefix survives rotation"
    );
    assert_eq!(first.tenant.credential.generation, 2);
    assert_eq!(first.tenant.credential.rotations, 1);
    assert!(first.tenant.credential.last_rotated.is_some());
    expect_kind(
        registry.authenticate(&id, &created.secret).await,
        "Unauthorized",
        "old secret after rotation",
    );
    expect_kind(
        registry.authenticate_key(&created.secret).await,
        "Unauthorized",
        "old key after rotation",
    );
    registry
        .authenticate(&id, &first.secret)
        .await
        .expect("new secret works");
    let second = registry.rotate(&id).await.expect("rotate again");
    assert_eq!(second.tenant.credential.generation, 3);
    assert_eq!(second.tenant.credential.rotations, 2);
    expect_kind(
        registry.authenticate(&id, &first.secret).await,
        "Unauthorized",
        "first rotated secret after the second rotation",
    );
    let t = registry
        .authenticate_key(&second.secret)
        .await
        .expect("new key resolves");
    assert_eq!(t.credential.generation, 3);
    let stored = registry.get(&id).await.expect("get");
    assert_eq!(stored.credential.generation, 3);
    assert_eq!(stored.credential.rotations, 2);
    Outcome::Passed
}

/// Suspended, expired and deleted tenants are refused with `Forbidden`.
pub async fn refused_statuses(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("sleepy");
    let created = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let t = registry
        .suspend(&id, Some("unpaid invoice".into()))
        .await
        .expect("suspend");
    assert_eq!(t.status, TenantStatus::Suspended);
    assert_eq!(t.suspended_reason.as_deref(), Some("unpaid invoice"));
    expect_kind(
        registry.authenticate(&id, &created.secret).await,
        "Forbidden",
        "suspended tenant",
    );
    expect_kind(
        registry.authenticate_key(&created.secret).await,
        "Forbidden",
        "suspended tenant by key",
    );
    expect_kind(
        registry.authenticate(&id, &Secret::new("tnc_wrong")).await,
        "Unauthorized",
        "a wrong secret learns nothing about the status",
    );
    expect_kind(
        registry.reserve(&id, Resource::ConcurrentJobs, 1).await,
        "Forbidden",
        "a suspended tenant reserves nothing",
    );
    let t = registry.activate(&id).await.expect("activate");
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.suspended_reason, None);
    registry
        .authenticate(&id, &created.secret)
        .await
        .expect("active again");

    let gone = tid("gone");
    let created = registry
        .create(NewTenant::new(gone.clone()))
        .await
        .expect("create");
    let t = registry.delete(&gone).await.expect("delete");
    assert_eq!(t.status, TenantStatus::Deleted);
    assert!(t.deleted_at.is_some());
    expect_kind(
        registry.authenticate(&gone, &created.secret).await,
        "Forbidden",
        "deleted tenant",
    );
    expect_kind(
        registry.rotate(&gone).await,
        "Precondition",
        "rotating a deleted tenant",
    );
    expect_kind(
        registry
            .update(
                &gone,
                TenantUpdate {
                    plan: Some(Plan::Pro),
                    ..Default::default()
                },
            )
            .await,
        "Precondition",
        "updating a deleted tenant",
    );
    Outcome::Passed
}

/// An update with a stale expected revision is `Precondition`.
pub async fn update_with_revision(
    registry: &dyn TenantRegistry,
    _: Option<&ManualClock>,
) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("revved");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let t0 = registry.get(&id).await.expect("get");
    let t1 = registry
        .update(
            &id,
            TenantUpdate {
                plan: Some(Plan::Basic),
                display_name: Some("Revved Inc".into()),
                email: Some("a@revved.example".into()),
                limits: Some(LimitOverrides {
                    max_gpus: Some(2),
                    ..Default::default()
                }),
                expected_revision: Some(t0.revision),
                ..Default::default()
            },
        )
        .await
        .expect("update at the current revision");
    assert_eq!(t1.revision, t0.revision + 1);
    assert_eq!(t1.plan, Plan::Basic);
    assert_eq!(t1.display_name, "Revved Inc");
    assert_eq!(t1.limits().max_gpus, 2);
    assert!(t1.updated_at >= t0.updated_at);
    let stale = registry
        .update(
            &id,
            TenantUpdate {
                plan: Some(Plan::Enterprise),
                expected_revision: Some(t0.revision),
                ..Default::default()
            },
        )
        .await
        .expect_err("stale revision refused");
    assert!(matches!(stale, Error::Precondition { .. }), "got {stale}");
    let t = registry.get(&id).await.expect("get");
    assert_eq!(t.plan, Plan::Basic, "the stale update changed nothing");
    assert_eq!(t.revision, t1.revision);
    // overrides merge: a later override keeps the earlier ones
    let t2 = registry
        .update(
            &id,
            TenantUpdate {
                limits: Some(LimitOverrides {
                    max_workers: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("update without a revision");
    assert_eq!((t2.limits().max_gpus, t2.limits().max_workers), (2, 3));
    expect_kind(
        registry
            .update(&tid("nobody-here"), TenantUpdate::default())
            .await,
        "NotFound",
        "update of an unknown tenant",
    );
    Outcome::Passed
}

/// Of concurrent creates of one id exactly one wins.
pub async fn concurrent_creates(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("contested");
    let results = join_all((0..16).map(|_| registry.create(NewTenant::new(id.clone())))).await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "exactly one concurrent create wins");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::AlreadyExists { .. }), "loser got {e}");
        }
    }
    // the winner's secret is the one that works, and by key too
    let winner = ok[0];
    registry
        .authenticate(&id, &winner.secret)
        .await
        .expect("winner's secret");
    registry
        .authenticate_key(&winner.secret)
        .await
        .expect("winner's key");
    Outcome::Passed
}

/// Concurrent updates all land (none is lost).
pub async fn concurrent_updates(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("busy");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let before = registry.get(&id).await.expect("get").revision;
    let n = 16usize;
    let results = join_all((0..n).map(|i| {
        let mut m = BTreeMap::new();
        m.insert(format!("k{i}"), format!("v{i}"));
        registry.update(
            &id,
            TenantUpdate {
                metadata: Some(m),
                ..Default::default()
            },
        )
    }))
    .await;
    for r in results {
        r.expect("every concurrent update succeeds (retried)");
    }
    let t = registry.get(&id).await.expect("get");
    assert_eq!(t.metadata.len(), n, "no update lost: {:?}", t.metadata);
    assert_eq!(t.revision, before + n as u64);
    Outcome::Passed
}

/// A burst of reservations never ends above the limit.
pub async fn quota_race(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("racer");
    registry
        .create(NewTenant {
            limits: LimitOverrides {
                max_concurrent_jobs: Some(10),
                ..Default::default()
            },
            ..NewTenant::new(id.clone())
        })
        .await
        .expect("create");
    let results =
        join_all((0..64).map(|_| registry.reserve(&id, Resource::ConcurrentJobs, 1))).await;
    let mut won = Vec::new();
    for r in results {
        match r {
            Ok(res) => won.push(res),
            Err(Error::QuotaExceeded {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, 10);
                assert_eq!(retry_after, None, "concurrent jobs have no window");
            }
            Err(e) => panic!("reservation failed with {e}"),
        }
    }
    assert_eq!(won.len(), 10, "exactly 10 of 64 reservations succeed");
    assert_eq!(registry.usage(&id).await.expect("usage").jobs_active, 10);
    for r in &won {
        registry.commit(r).await.expect("commit");
    }
    join_all(won.iter().map(|r| registry.release(r)))
        .await
        .into_iter()
        .for_each(|r| r.expect("release"));
    assert_eq!(registry.usage(&id).await.expect("usage").jobs_active, 0);
    Outcome::Passed
}

/// Reserve, commit and release follow the quota rules.
pub async fn quota_semantics(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("metered");
    registry
        .create(NewTenant {
            plan: Plan::Basic,
            ..NewTenant::new(id.clone())
        })
        .await
        .expect("create");
    let limits = Plan::Basic.limits();
    let cpu = registry
        .reserve(&id, Resource::CpuCores, limits.max_cpu_cores)
        .await
        .expect("reserve the whole cpu quota");
    assert_eq!(cpu.amount, limits.max_cpu_cores);
    assert_eq!(cpu.tenant, id);
    match registry.reserve(&id, Resource::CpuCores, 1).await {
        Err(Error::QuotaExceeded {
            limit, requested, ..
        }) => assert_eq!((limit, requested), (16, 17)),
        other => panic!("over quota must be QuotaExceeded, got {other:?}"),
    }
    registry.commit(&cpu).await.expect("commit");
    expect_kind(
        registry.commit(&cpu).await,
        "Precondition",
        "a second commit of one reservation",
    );
    registry.release(&cpu).await.expect("release");
    assert_eq!(registry.usage(&id).await.expect("usage").cpu_cores, 0);
    let gpu = registry
        .reserve_committed(&id, Resource::Gpus, 1)
        .await
        .expect("reserve and commit a gpu");
    assert_eq!(registry.usage(&id).await.expect("usage").gpus, 1);
    registry.release(&gpu).await.expect("release");
    expect_kind(
        registry.reserve(&id, Resource::Workers, 0).await,
        "InvalidInput",
        "a zero reservation",
    );
    expect_kind(
        registry
            .reserve(&id, Resource::Stacks, MAX_LIMIT_VALUE + 1)
            .await,
        "InvalidInput",
        "an absurd reservation",
    );
    expect_kind(
        registry
            .reserve(&tid("nobody-here"), Resource::Stacks, 1)
            .await,
        "NotFound",
        "reserve for an unknown tenant",
    );
    registry
        .record_usage(&id, UsageEvent::JobCompleted)
        .await
        .expect("record");
    registry
        .record_usage(&id, UsageEvent::JobFailed)
        .await
        .expect("record");
    let u = registry
        .record_usage(&id, UsageEvent::Cost(42))
        .await
        .expect("record");
    assert_eq!(
        (u.jobs_completed, u.jobs_failed, u.cost_this_month),
        (1, 1, 42)
    );
    assert_eq!(registry.usage(&id).await.expect("usage"), u);
    expect_kind(
        registry.usage(&tid("nobody-here")).await,
        "NotFound",
        "usage of an unknown tenant",
    );
    Outcome::Passed
}

/// `reservations` lists pending and committed reservations (not released
/// ones); `release_recording` releases and counts an outcome exactly once.
pub async fn release_recording_counts_once(
    registry: &dyn TenantRegistry,
    _: Option<&ManualClock>,
) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("recorded");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    assert!(registry.reservations(&id).await.expect("list").is_empty());
    let pending = registry
        .reserve(&id, Resource::ConcurrentJobs, 1)
        .await
        .expect("reserve");
    let held = registry
        .reserve_committed(&id, Resource::ConcurrentJobs, 1)
        .await
        .expect("reserve and commit");
    let mut listed = registry.reservations(&id).await.expect("list");
    listed.sort_by_key(|l| l.committed);
    let seen: Vec<_> = listed
        .iter()
        .map(|l| (l.reservation.id, l.committed))
        .collect();
    assert_eq!(seen, vec![(pending.id, false), (held.id, true)]);
    assert_eq!(
        listed[0].reservation, pending,
        "a listed reservation is the one handed out"
    );

    assert!(registry
        .release_recording(&held, UsageEvent::JobCompleted)
        .await
        .expect("release recording"));
    for _ in 0..2 {
        assert!(
            !registry
                .release_recording(&held, UsageEvent::JobCompleted)
                .await
                .expect("release recording again"),
            "a repeated release_recording changes nothing"
        );
    }
    assert!(registry
        .release_recording(&pending, UsageEvent::JobFailed)
        .await
        .expect("release a pending one"));
    let u = registry.usage(&id).await.expect("usage");
    assert_eq!(
        (u.jobs_active, u.jobs_completed, u.jobs_failed),
        (0, 1, 1),
        "each outcome counted once, each slot given back once"
    );
    assert!(registry.reservations(&id).await.expect("list").is_empty());
    expect_kind(
        registry.reservations(&tid("nobody-here")).await,
        "NotFound",
        "reservations of an unknown tenant",
    );
    Outcome::Passed
}

/// No secret or hash appears in Debug or Display output.
pub async fn secrets_never_shown(
    registry: &dyn TenantRegistry,
    _: Option<&ManualClock>,
) -> Outcome {
    bootstrapped(registry).await;
    let created = registry
        .create(NewTenant::new(tid("hush")))
        .await
        .expect("create");
    let secret = created.secret.expose().to_string();
    let random = secret
        .split_once('_')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    assert!(random.len() >= 16);
    let shown = [
        format!("{created:?}"),
        format!("{:?}", created.tenant),
        format!("{:?}", created.secret),
        format!("{}", created.secret),
        format!("{:?}", registry.get(&created.tenant.id).await.expect("get")),
    ];
    for s in &shown {
        assert!(
            !s.contains(&random),
            "a secret leaked into Debug output: {s}"
        );
        assert!(
            !s.contains("$2"),
            "a bcrypt hash leaked into Debug output: {s}"
        );
    }
    let rotated = registry.rotate(&created.tenant.id).await.expect("rotate");
    assert!(!format!("{rotated:?}").contains(rotated.secret.expose()));
    for e in [
        registry
            .authenticate(&created.tenant.id, &created.secret)
            .await
            .expect_err("old secret"),
        registry
            .authenticate_key(&created.secret)
            .await
            .expect_err("old key"),
        registry
            .authenticate(&tid("nobody-here"), &rotated.secret)
            .await
            .expect_err("unknown id"),
    ] {
        for s in [e.to_string(), format!("{e:?}")] {
            assert!(!s.contains(&random), "a secret leaked into an error: {s}");
            assert!(!s.contains(rotated.secret.expose()), "leaked: {s}");
        }
    }
    let admin_err = registry
        .verify_admin(&Secret::new("hunter2-is-not-it"))
        .await
        .expect_err("wrong admin");
    assert!(!admin_err.to_string().contains("hunter2"));
    Outcome::Passed
}

/// Bad input is `InvalidInput` and writes nothing.
pub async fn bad_input(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    registry
        .create(NewTenant::new(tid("acme")))
        .await
        .expect("create");
    let before = registry
        .list_all(TenantFilter::default())
        .await
        .expect("list");
    let fresh = tid("never-made");
    let base = || NewTenant::new(fresh.clone());
    for bad in [
        "", "ab", "Acme", "1abc", "abc-", "a_b", "a.b", "default", "admin", "ac me", "acmé",
        "../etc",
    ] {
        expect_kind(TenantId::new(bad), "InvalidInput", "bad tenant id");
    }
    let cases: Vec<(&str, NewTenant)> = vec![
        (
            "no id and no name",
            NewTenant {
                id: None,
                ..Default::default()
            },
        ),
        (
            "a name without letters",
            NewTenant {
                id: None,
                display_name: Some("!!!".into()),
                ..Default::default()
            },
        ),
        (
            "empty display name",
            NewTenant {
                display_name: Some("  ".into()),
                ..base()
            },
        ),
        (
            "control characters in the name",
            NewTenant {
                display_name: Some("a\u{7}b".into()),
                ..base()
            },
        ),
        (
            "email without @",
            NewTenant {
                email: Some("ops.example.com".into()),
                ..base()
            },
        ),
        (
            "email without a dotted domain",
            NewTenant {
                email: Some("ops@localhost".into()),
                ..base()
            },
        ),
        (
            "email with a space",
            NewTenant {
                email: Some("o ps@example.com".into()),
                ..base()
            },
        ),
        (
            "absurd limit",
            NewTenant {
                limits: LimitOverrides {
                    max_stacks: Some(u64::MAX),
                    ..Default::default()
                },
                ..base()
            },
        ),
        (
            "limit just above the maximum",
            NewTenant {
                limits: LimitOverrides {
                    max_concurrent_jobs: Some(MAX_LIMIT_VALUE + 1),
                    ..Default::default()
                },
                ..base()
            },
        ),
        (
            "zero request rate",
            NewTenant {
                limits: LimitOverrides {
                    requests_per_second: Some(0),
                    ..Default::default()
                },
                ..base()
            },
        ),
        (
            "secret prefix with a digit",
            NewTenant {
                secret_prefix: Some("a1".into()),
                ..base()
            },
        ),
        (
            "secret prefix too long",
            NewTenant {
                secret_prefix: Some("abcdefghi".into()),
                ..base()
            },
        ),
        (
            "uppercase secret prefix",
            NewTenant {
                secret_prefix: Some("ABC".into()),
                ..base()
            },
        ),
        (
            "secret prefix with an underscore",
            NewTenant {
                secret_prefix: Some("a_b".into()),
                ..base()
            },
        ),
        (
            "bad metadata key",
            NewTenant {
                metadata: [("bad key".to_string(), "v".to_string())].into(),
                ..base()
            },
        ),
        (
            "expiry in the past",
            NewTenant {
                expires_at: Some(chrono::DateTime::UNIX_EPOCH),
                ..base()
            },
        ),
    ];
    for (what, new) in cases {
        expect_kind(registry.create(new).await, "InvalidInput", what);
    }
    // unknown plans cannot even be expressed
    expect_kind("gold".parse::<Plan>(), "InvalidInput", "unknown plan");
    assert!(
        serde_json::from_str::<TenantUpdate>(r#"{"plan":"gold"}"#).is_err(),
        "an update naming an unknown plan does not decode"
    );
    expect_kind(
        registry.get(&fresh).await,
        "NotFound",
        "nothing was created by bad input",
    );

    // bad updates change nothing
    let id = tid("acme");
    let t0 = registry.get(&id).await.expect("get");
    let bad_updates = [
        TenantUpdate {
            email: Some("nope".into()),
            ..Default::default()
        },
        TenantUpdate {
            display_name: Some(String::new()),
            ..Default::default()
        },
        TenantUpdate {
            limits: Some(LimitOverrides {
                max_gpus: Some(u64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        },
        TenantUpdate {
            metadata: Some([(String::new(), "v".to_string())].into()),
            ..Default::default()
        },
    ];
    for u in bad_updates {
        expect_kind(registry.update(&id, u).await, "InvalidInput", "bad update");
    }
    let t1 = registry.get(&id).await.expect("get");
    assert_eq!(t0, t1, "a refused update wrote nothing");
    let after = registry
        .list_all(TenantFilter::default())
        .await
        .expect("list");
    assert_eq!(before, after, "bad input wrote nothing");
    Outcome::Passed
}

/// Every status transition in the lifecycle table, allowed or refused.
pub async fn lifecycle_table(
    registry: &dyn TenantRegistry,
    clock: Option<&ManualClock>,
) -> Outcome {
    let Some(clock) = clock else {
        return Outcome::skipped("needs the registry's ManualClock");
    };
    bootstrapped(registry).await;
    use TenantStatus::*;
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Suspend,
        Activate,
        Delete,
    }
    // (from, operation, allowed)
    let table = [
        (Active, Op::Suspend, true),
        (Active, Op::Activate, false),
        (Active, Op::Delete, true),
        (Suspended, Op::Suspend, false),
        (Suspended, Op::Activate, true),
        (Suspended, Op::Delete, true),
        (Expired, Op::Suspend, true),
        (Expired, Op::Activate, true),
        (Expired, Op::Delete, true),
        (Deleted, Op::Suspend, false),
        (Deleted, Op::Activate, false),
        (Deleted, Op::Delete, false),
    ];
    for (i, (from, op, allowed)) in table.into_iter().enumerate() {
        let target = match op {
            Op::Suspend => Suspended,
            Op::Activate => Active,
            Op::Delete => Deleted,
        };
        assert_eq!(
            from.can_transition_to(target),
            allowed,
            "{from} -> {target}"
        );
        let id = tid(&format!("lc-{i}-{from}"));
        let expires_at = (from == Expired).then(|| clock.now() + chrono::Duration::hours(1));
        let created = registry
            .create(NewTenant {
                expires_at,
                ..NewTenant::new(id.clone())
            })
            .await
            .expect("create");
        match from {
            Active => {}
            Suspended => {
                registry.suspend(&id, None).await.expect("suspend");
            }
            Expired => clock.advance(Duration::from_secs(2 * 3600)),
            Deleted => {
                registry.delete(&id).await.expect("delete");
            }
        }
        assert_eq!(
            registry.get(&id).await.expect("get").status,
            from,
            "setup of {from}"
        );
        let result = match op {
            Op::Suspend => registry.suspend(&id, None).await,
            Op::Activate => registry.activate(&id).await,
            Op::Delete => registry.delete(&id).await,
        };
        if allowed {
            let t = result.unwrap_or_else(|e| panic!("{from} --{op:?}--> refused: {e}"));
            assert_eq!(t.status, target, "{from} --{op:?}-->");
            assert_eq!(
                registry.get(&id).await.expect("get").status,
                target,
                "{from} --{op:?}--> as read back"
            );
        } else {
            expect_kind(result, "Precondition", &format!("{from} --{op:?}-->"));
            assert_eq!(
                registry.get(&id).await.expect("get").status,
                from,
                "a refused {from} --{op:?}--> changed the status"
            );
        }
        let auth = registry.authenticate(&id, &created.secret).await;
        let now_status = registry.get(&id).await.expect("get").status;
        if now_status == Active {
            auth.expect("an active tenant authenticates");
        } else {
            expect_kind(
                auth,
                "Forbidden",
                &format!("authenticate when {now_status}"),
            );
        }
    }
    Outcome::Passed
}

/// A tenant past `expires_at` reads expired and is refused.
pub async fn expiry(registry: &dyn TenantRegistry, clock: Option<&ManualClock>) -> Outcome {
    let Some(clock) = clock else {
        return Outcome::skipped("needs the registry's ManualClock");
    };
    bootstrapped(registry).await;
    let id = tid("mayfly");
    let created = registry
        .create(NewTenant {
            expires_at: Some(clock.now() + chrono::Duration::minutes(30)),
            ..NewTenant::new(id.clone())
        })
        .await
        .expect("create");
    registry
        .authenticate(&id, &created.secret)
        .await
        .expect("not yet expired");
    assert_eq!(
        registry.get(&id).await.expect("get").status,
        TenantStatus::Active
    );
    clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        registry.get(&id).await.expect("get").status,
        TenantStatus::Expired
    );
    let expired = registry
        .list_all(TenantFilter {
            status: Some(TenantStatus::Expired),
            plan: None,
        })
        .await
        .expect("list");
    assert!(expired.iter().any(|t| t.id == id), "list reports expired");
    assert!(expired.iter().all(|t| t.status == TenantStatus::Expired));
    let active = registry
        .list_all(TenantFilter {
            status: Some(TenantStatus::Active),
            plan: None,
        })
        .await
        .expect("list");
    assert!(!active.iter().any(|t| t.id == id));
    expect_kind(
        registry.authenticate(&id, &created.secret).await,
        "Forbidden",
        "expired tenant",
    );
    expect_kind(
        registry.authenticate_key(&created.secret).await,
        "Forbidden",
        "expired tenant by key",
    );
    expect_kind(
        registry.reserve(&id, Resource::Stacks, 1).await,
        "Forbidden",
        "an expired tenant reserves nothing",
    );
    // a new expiry in the future brings it back... only through activate
    let t = registry
        .activate(&id)
        .await
        .expect("activate an expired tenant");
    assert_eq!(t.status, TenantStatus::Active);
    registry
        .authenticate(&id, &created.secret)
        .await
        .expect("active after activate");
    let t = registry
        .update(
            &id,
            TenantUpdate {
                expires_at: Some(clock.now() + chrono::Duration::days(1)),
                ..Default::default()
            },
        )
        .await
        .expect("new expiry");
    assert_eq!(t.status, TenantStatus::Active);
    Outcome::Passed
}

/// The jobs-per-hour window counts per clock hour.
pub async fn jobs_per_hour(registry: &dyn TenantRegistry, clock: Option<&ManualClock>) -> Outcome {
    let Some(clock) = clock else {
        return Outcome::skipped("needs the registry's ManualClock");
    };
    bootstrapped(registry).await;
    let id = tid("hourly");
    registry
        .create(NewTenant {
            limits: LimitOverrides {
                max_jobs_per_hour: Some(3),
                ..Default::default()
            },
            ..NewTenant::new(id.clone())
        })
        .await
        .expect("create");
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(
            registry
                .reserve_committed(&id, Resource::JobsPerHour, 1)
                .await
                .expect("within the hour's quota"),
        );
    }
    // releasing does not give jobs-per-hour back
    registry.release(&taken[0]).await.expect("release");
    let wait = match registry.reserve(&id, Resource::JobsPerHour, 1).await {
        Err(Error::QuotaExceeded {
            retry_after: Some(d),
            limit,
            ..
        }) => {
            assert_eq!(limit, 3);
            assert!(
                d > Duration::ZERO && d <= Duration::from_secs(3600),
                "{d:?}"
            );
            d
        }
        other => panic!("expected QuotaExceeded with retry_after, got {other:?}"),
    };
    clock.advance(wait);
    registry
        .reserve_committed(&id, Resource::JobsPerHour, 1)
        .await
        .expect("a new hour, a new quota");
    assert_eq!(registry.usage(&id).await.expect("usage").jobs_this_hour, 1);
    Outcome::Passed
}

/// Delete archives state; purge removes it after the grace period.
pub async fn delete_and_purge(
    registry: &dyn TenantRegistry,
    clock: Option<&ManualClock>,
) -> Outcome {
    let Some(clock) = clock else {
        return Outcome::skipped("needs the registry's ManualClock");
    };
    bootstrapped(registry).await;
    let id = tid("purgeable");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    expect_kind(
        registry.purge(&id, Duration::ZERO).await,
        "Precondition",
        "purge of a tenant that is not deleted",
    );
    registry.delete(&id).await.expect("delete");
    expect_kind(registry.delete(&id).await, "Precondition", "second delete");
    let grace = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        registry.purge(&id, grace).await.expect("purge"),
        0,
        "nothing is purged within the grace period"
    );
    clock.advance(grace + Duration::from_secs(60));
    let removed = registry.purge(&id, grace).await.expect("purge");
    assert!(
        removed > 0,
        "the archived state is purged after the grace period"
    );
    assert_eq!(registry.purge(&id, grace).await.expect("purge again"), 0);
    let t = registry.get(&id).await.expect("the record stays");
    assert_eq!(t.status, TenantStatus::Deleted);
    expect_kind(
        registry.create(NewTenant::new(id.clone())).await,
        "AlreadyExists",
        "a deleted tenant's id is not reused",
    );
    Outcome::Passed
}

/// List yields each tenant once and filters by status and plan.
pub async fn list_filters(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    for (id, plan) in [
        ("acme", Plan::Free),
        ("contested", Plan::Basic),
        ("plan-free", Plan::Free),
        ("plan-basic", Plan::Basic),
        ("plan-pro", Plan::Pro),
        ("plan-ent", Plan::Enterprise),
    ] {
        registry
            .create(NewTenant {
                plan,
                ..NewTenant::new(tid(id))
            })
            .await
            .expect("create");
    }
    registry
        .suspend(&tid("plan-pro"), None)
        .await
        .expect("suspend");
    let all = registry
        .list_all(TenantFilter::default())
        .await
        .expect("list");
    let mut ids: Vec<_> = all.iter().map(|t| t.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "list yields each tenant once");
    for name in ["acme", "plan-free", "plan-pro", "contested"] {
        assert!(all.iter().any(|t| t.id.as_str() == name), "{name} listed");
    }
    for status in TenantStatus::ALL {
        for plan in [None, Some(Plan::Free), Some(Plan::Pro)] {
            let filter = TenantFilter {
                status: Some(status),
                plan,
            };
            let got = registry.list_all(filter).await.expect("list");
            let want: Vec<_> = all
                .iter()
                .filter(|t| t.status == status && plan.is_none_or(|p| t.plan == p))
                .cloned()
                .collect();
            assert_eq!(got, want, "list({filter:?})");
        }
    }
    let pro = registry
        .list_all(TenantFilter {
            status: None,
            plan: Some(Plan::Pro),
        })
        .await
        .expect("list");
    assert!(pro.iter().any(|t| t.id.as_str() == "plan-pro"));
    assert!(pro.iter().all(|t| t.plan == Plan::Pro));
    let suspended = registry
        .list_all(TenantFilter {
            status: Some(TenantStatus::Suspended),
            plan: Some(Plan::Pro),
        })
        .await
        .expect("list");
    assert_eq!(
        suspended.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["plan-pro"]
    );
    Outcome::Passed
}

/// Server-issued sessions: a login returns a token once; the token opens its
/// session and nothing else; sessions are listed per owner and revocable;
/// a rotation, a suspension, a deletion, an admin credential change and
/// expiry end them. Skipped for a registry that keeps no sessions
/// (`NotImplemented` on login).
pub async fn sessions(registry: &dyn TenantRegistry, clock: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("sessioned");
    let owner = SessionOwner::Tenant(id.clone());
    let created = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let first = match registry.login_tenant(&id, &created.secret).await {
        Err(Error::NotImplemented { what }) => return Outcome::skipped(what),
        r => r.expect("tenant login"),
    };
    let token = first.token.expose().to_string();
    assert_eq!(
        parse_session_token(&token),
        Some((owner.clone(), first.session.id.clone())),
        "the token names its owner and session"
    );
    assert_eq!(first.session.id, SessionId::of_token(&token));
    assert_eq!(first.session.owner(), owner);
    assert_eq!(
        first.session.session.kind,
        SessionKind::Tenant {
            tenant: id.clone(),
            generation: 1
        }
    );
    assert_eq!(
        first.session.session.expires_at - first.session.session.issued_at,
        crate::clock::chrono_duration(TENANT_SESSION_TTL),
        "a tenant session lasts 7 days"
    );
    let random = token.rsplit('_').next().unwrap_or_default().to_string();
    assert!(
        !format!("{first:?}").contains(&random),
        "Debug shows the token"
    );

    expect_kind(
        registry.login_tenant(&id, &Secret::new("tnc_wrong")).await,
        "Unauthorized",
        "login with a wrong secret",
    );
    expect_kind(
        registry
            .login_tenant(&tid("nobody-here"), &created.secret)
            .await,
        "Unauthorized",
        "login as an unknown tenant",
    );
    let authed = registry
        .authenticate_session(&first.token)
        .await
        .expect("the token opens its session");
    assert_eq!(authed.session.id, first.session.id);
    assert_eq!(authed.tenant.map(|t| t.id), Some(id.clone()));
    let mut flipped = token.clone();
    let last = flipped.pop().expect("non-empty");
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [
        flipped.as_str(),
        "",
        "tns_sessioned_00000000000000000000000000000000",
        created.secret.expose(),
        "not a token at all",
    ] {
        let e = expect_kind(
            registry.authenticate_session(&Secret::new(bad)).await,
            "Unauthorized",
            "a token that opens no session",
        );
        assert!(
            !e.to_string().contains(&random),
            "error echoes a token: {e}"
        );
    }

    let second = registry
        .login_tenant(&id, &created.secret)
        .await
        .expect("second login");
    let listed = registry.sessions(&owner).await.expect("list");
    let ids: Vec<_> = listed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), 2, "both sessions are listed: {ids:?}");
    assert!(ids.contains(&first.session.id) && ids.contains(&second.session.id));
    expect_kind(
        registry
            .sessions(&SessionOwner::Tenant(tid("nobody-here")))
            .await,
        "NotFound",
        "sessions of an unknown tenant",
    );

    registry
        .revoke_session(&owner, &first.session.id)
        .await
        .expect("revoke");
    expect_kind(
        registry.authenticate_session(&first.token).await,
        "Unauthorized",
        "a revoked session",
    );
    expect_kind(
        registry.revoke_session(&owner, &first.session.id).await,
        "NotFound",
        "revoking twice",
    );
    let listed = registry.sessions(&owner).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&second.session.id]
    );
    registry
        .authenticate_session(&second.token)
        .await
        .expect("the other session lives on");

    // admin sessions
    let admin = registry
        .login_admin(&Secret::new(ADMIN))
        .await
        .expect("admin login");
    assert_eq!(admin.session.owner(), SessionOwner::Admin);
    assert_eq!(
        admin.session.session.expires_at - admin.session.session.issued_at,
        crate::clock::chrono_duration(ADMIN_SESSION_TTL),
        "an admin session lasts 8 hours"
    );
    expect_kind(
        registry
            .login_admin(&Secret::new("not the admin password"))
            .await,
        "Unauthorized",
        "admin login with a wrong password",
    );
    let authed = registry
        .authenticate_session(&admin.token)
        .await
        .expect("admin session");
    assert!(authed.tenant.is_none());
    assert!(registry
        .sessions(&SessionOwner::Admin)
        .await
        .expect("admin sessions")
        .iter()
        .any(|s| s.id == admin.session.id));
    assert!(
        !registry
            .sessions(&owner)
            .await
            .expect("list")
            .iter()
            .any(|s| s.id == admin.session.id),
        "an admin session is not the tenant's"
    );

    // the tenant's status and credential end its sessions
    registry.suspend(&id, None).await.expect("suspend");
    expect_kind(
        registry.authenticate_session(&second.token).await,
        "Forbidden",
        "a session of a suspended tenant",
    );
    registry.activate(&id).await.expect("activate");
    registry
        .authenticate_session(&second.token)
        .await
        .expect("active again");
    let rotated = registry.rotate(&id).await.expect("rotate");
    expect_kind(
        registry.authenticate_session(&second.token).await,
        "CredentialsRotated",
        "a session from before a rotation",
    );
    let third = registry
        .login_tenant(&id, &rotated.secret)
        .await
        .expect("login with the new secret");

    // a changed admin credential ends admin sessions
    registry
        .set_admin_password(&Secret::new("another admin password"))
        .await
        .expect("change the admin password");
    expect_kind(
        registry.authenticate_session(&admin.token).await,
        "CredentialsRotated",
        "an admin session from before a credential change",
    );

    if let Some(clock) = clock {
        clock.advance(TENANT_SESSION_TTL + Duration::from_secs(1));
        expect_kind(
            registry.authenticate_session(&third.token).await,
            "SessionExpired",
            "an expired session",
        );
        assert!(
            !registry
                .sessions(&owner)
                .await
                .expect("list")
                .iter()
                .any(|s| s.id == third.session.id),
            "an expired session is not listed"
        );
    }
    let last = registry
        .login_tenant(&id, &rotated.secret)
        .await
        .expect("login");
    registry.delete(&id).await.expect("delete");
    expect_kind(
        registry.authenticate_session(&last.token).await,
        "Forbidden",
        "a session of a deleted tenant",
    );
    Outcome::Passed
}

/// A registry under test and, when it reads one, its [`ManualClock`].
#[allow(missing_debug_implementations)]
pub struct RegistryFixture<R> {
    /// The registry: fresh and not bootstrapped.
    pub registry: R,
    /// The clock the registry reads; without one the clock checks skip.
    pub clock: Option<ManualClock>,
    /// Whatever must outlive the checks (a temporary directory, a server).
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl<R> RegistryFixture<R> {
    /// A registry that reads `clock`.
    pub fn new(registry: R, clock: ManualClock) -> Self {
        RegistryFixture {
            registry,
            clock: Some(clock),
            guard: None,
        }
    }

    /// Keeps `guard` alive as long as the fixture.
    pub fn guarded(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// Creates a key, or says the registry keeps none.
async fn key_or_skip(
    registry: &dyn TenantRegistry,
    id: &TenantId,
    name: &str,
    role: Role,
) -> Result<CreatedApiKey, Outcome> {
    let new = NewApiKey {
        name: name.into(),
        role,
        expires_at: None,
    };
    match registry.create_key(id, new).await {
        Err(Error::NotImplemented { what }) => Err(Outcome::skipped(what)),
        r => Ok(r.expect("create a key")),
    }
}

/// Named keys: shown once, authenticate with their role (with or without
/// the tenant id), are listed without the key, are refused as the primary
/// secret, for another tenant and after revocation (at once), and their
/// names are checked and unique among usable keys.
pub async fn api_keys(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("keyed");
    let other = tid("keyed-other");
    let created = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    registry
        .create(NewTenant::new(other.clone()))
        .await
        .expect("create other");
    let ci = match key_or_skip(registry, &id, "ci", Role::Viewer).await {
        Ok(k) => k,
        Err(skip) => return skip,
    };
    assert!(
        crate::credentials::has_checksum(ci.secret.expose()),
        "a key carries a checksum"
    );
    assert_eq!(ci.key.role, Role::Viewer);
    assert_eq!(ci.key.tenant, id);
    assert_eq!(ci.key.status_at(chrono::Utc::now()), KeyStatus::Active);
    assert!(ci.secret.expose().ends_with(&ci.key.last_four));
    assert!(
        !format!("{ci:?}").contains(ci.secret.expose()),
        "Debug shows the key"
    );
    let deploy = registry
        .create_key(
            &id,
            NewApiKey {
                name: "deploy".into(),
                role: Role::Operator,
                expires_at: None,
            },
        )
        .await
        .expect("a second key");

    let caller = registry
        .authenticate_caller(None, &ci.secret)
        .await
        .expect("the key authenticates");
    assert_eq!(caller.tenant.id, id);
    assert_eq!(caller.key.as_ref().map(|k| &k.id), Some(&ci.key.id));
    assert_eq!(caller.role(), Role::Viewer);
    let caller = registry
        .authenticate_caller(Some(&id), &deploy.secret)
        .await
        .expect("with the id");
    assert_eq!(caller.role(), Role::Operator);
    let primary = registry
        .authenticate_caller(None, &created.secret)
        .await
        .expect("the primary secret");
    assert!(primary.key.is_none());
    assert_eq!(primary.role(), Role::Owner);
    expect_kind(
        registry.authenticate_caller(Some(&other), &ci.secret).await,
        "Unauthorized",
        "a key with another tenant's id",
    );
    expect_kind(
        registry.authenticate(&id, &ci.secret).await,
        "Unauthorized",
        "a key as the primary secret",
    );
    expect_kind(
        registry.authenticate_key(&ci.secret).await,
        "Unauthorized",
        "a key as the primary secret",
    );

    let listed = registry.keys(&id).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ci", "deploy"], "oldest first");
    assert!(
        registry.keys(&other).await.expect("list other").is_empty(),
        "keys are per tenant"
    );
    expect_kind(
        registry.keys(&tid("no-such-tenant")).await,
        "NotFound",
        "keys of an unknown tenant",
    );

    expect_kind(
        registry
            .create_key(
                &id,
                NewApiKey {
                    name: "ci".into(),
                    role: Role::Owner,
                    expires_at: None,
                },
            )
            .await,
        "AlreadyExists",
        "a second usable key named ci",
    );
    for bad in ["", "has space", "-dash", &"x".repeat(65)] {
        expect_kind(
            registry
                .create_key(
                    &id,
                    NewApiKey {
                        name: bad.into(),
                        role: Role::Viewer,
                        expires_at: None,
                    },
                )
                .await,
            "InvalidInput",
            "a bad key name",
        );
    }
    expect_kind(
        registry
            .create_key(
                &id,
                NewApiKey {
                    name: "past".into(),
                    role: Role::Viewer,
                    expires_at: Some(chrono::Utc::now() - chrono::Duration::seconds(5)),
                },
            )
            .await,
        "InvalidInput",
        "an expiry in the past",
    );

    // Eight racing creates of one name: the key set's one compare-and-swap
    // lets exactly one through.
    let racing = join_all((0..8).map(|_| {
        registry.create_key(
            &id,
            NewApiKey {
                name: "race".into(),
                role: Role::Viewer,
                expires_at: None,
            },
        )
    }))
    .await;
    let won = racing.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "racing creates of one name: {racing:?}");
    for r in &racing {
        if let Err(e) = r {
            assert_eq!(
                kind(e),
                "AlreadyExists",
                "a racing create failed otherwise: {e}"
            );
        }
    }
    let revoked = registry.revoke_key(&id, &ci.key.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let e = expect_kind(
        registry.authenticate_caller(None, &ci.secret).await,
        "Unauthorized",
        "a revoked key",
    );
    assert!(
        !e.to_string().contains(ci.secret.expose()),
        "the error echoes the key"
    );
    registry
        .revoke_key(&id, &ci.key.id)
        .await
        .expect("revoking again is a no-op");
    registry
        .authenticate_caller(None, &deploy.secret)
        .await
        .expect("the other key still works");
    expect_kind(
        registry.revoke_key(&other, &deploy.key.id).await,
        "NotFound",
        "revoking another tenant's key",
    );
    // The name is free again once its key is revoked.
    registry
        .create_key(
            &id,
            NewApiKey {
                name: "ci".into(),
                role: Role::Viewer,
                expires_at: None,
            },
        )
        .await
        .expect("a new key named ci");
    let statuses: Vec<KeyStatus> = registry
        .keys(&id)
        .await
        .expect("list")
        .iter()
        .map(|k| k.status_at(chrono::Utc::now()))
        .collect();
    assert_eq!(
        statuses,
        [
            KeyStatus::Revoked,
            KeyStatus::Active,
            KeyStatus::Active,
            KeyStatus::Active
        ],
        "ci (revoked), deploy, race, the new ci"
    );
    Outcome::Passed
}

/// Rotation: the new key works at once with the old one's name and role;
/// the old one works for the grace period (here: an hour) or stops at once
/// (no grace); a revoked key cannot be rotated.
pub async fn api_key_rotation(registry: &dyn TenantRegistry, _: Option<&ManualClock>) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("rerolled");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let old = match key_or_skip(registry, &id, "member", Role::Operator).await {
        Ok(k) => k,
        Err(skip) => return skip,
    };
    let rotated = registry
        .rotate_key(&id, &old.key.id, Duration::from_secs(3600))
        .await
        .expect("rotate with grace");
    assert_ne!(rotated.created.secret.expose(), old.secret.expose());
    assert_eq!(rotated.created.key.name, "member");
    assert_eq!(rotated.created.key.role, Role::Operator);
    assert_eq!(
        rotated.previous.rotated_to.as_ref(),
        Some(&rotated.created.key.id)
    );
    assert!(
        rotated.previous.expires_at.is_some(),
        "the old key ends with the grace"
    );
    registry
        .authenticate_caller(None, &rotated.created.secret)
        .await
        .expect("the new key works");
    registry
        .authenticate_caller(None, &old.secret)
        .await
        .expect("the old key works within the grace");
    expect_kind(
        registry.rotate_key(&id, &old.key.id, Duration::ZERO).await,
        "Precondition",
        "rotating a rotated key again",
    );
    let again = registry
        .rotate_key(&id, &rotated.created.key.id, Duration::ZERO)
        .await
        .expect("rotate without grace");
    expect_kind(
        registry
            .authenticate_caller(None, &rotated.created.secret)
            .await,
        "Unauthorized",
        "a key rotated without grace",
    );
    registry
        .authenticate_caller(None, &again.created.secret)
        .await
        .expect("the newest key works");
    registry
        .revoke_key(&id, &again.created.key.id)
        .await
        .expect("revoke");
    expect_kind(
        registry
            .rotate_key(&id, &again.created.key.id, Duration::ZERO)
            .await,
        "Precondition",
        "rotating a revoked key",
    );
    Outcome::Passed
}

/// A key expires on time (moving the registry's clock), and a session
/// opened with a key has its role and ends when the key is revoked.
pub async fn api_key_expiry_and_sessions(
    registry: &dyn TenantRegistry,
    clock: Option<&ManualClock>,
) -> Outcome {
    bootstrapped(registry).await;
    let id = tid("keysession");
    registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    let ci = match key_or_skip(registry, &id, "ci", Role::Viewer).await {
        Ok(k) => k,
        Err(skip) => return skip,
    };
    match registry.login_tenant(&id, &ci.secret).await {
        Err(Error::NotImplemented { .. }) => {}
        r => {
            let issued = r.expect("log in with a key");
            assert_eq!(issued.session.session.key.as_ref(), Some(&ci.key.id));
            let authed = registry
                .authenticate_session(&issued.token)
                .await
                .expect("the session");
            assert_eq!(authed.role(), Role::Viewer, "a key's session has its role");
            registry.revoke_key(&id, &ci.key.id).await.expect("revoke");
            expect_kind(
                registry.authenticate_session(&issued.token).await,
                "Unauthorized",
                "a session of a revoked key",
            );
        }
    }
    let Some(clock) = clock else {
        return Outcome::skipped("no clock to move for the expiry half");
    };
    let soon = registry
        .create_key(
            &id,
            NewApiKey {
                name: "soon".into(),
                role: Role::Operator,
                expires_at: Some(clock.now() + chrono::Duration::seconds(60)),
            },
        )
        .await
        .expect("a key that expires");
    registry
        .authenticate_caller(None, &soon.secret)
        .await
        .expect("before its expiry");
    clock.advance(Duration::from_secs(61));
    let e = expect_kind(
        registry.authenticate_caller(None, &soon.secret).await,
        "Unauthorized",
        "an expired key",
    );
    assert!(e.to_string().contains("expired"), "{e}");
    Outcome::Passed
}

/// One `#[tokio::test]` per check of the registry suite, on a fresh,
/// un-bootstrapped registry from `$make` (a future of
/// `Option<RegistryFixture<R>>`; `None` skips). `strict:` first fails on
/// any skipped check.
#[macro_export]
macro_rules! registry_suite {
    (strict: $make:expr) => {
        $crate::__registry_suite!(true, $make);
    };
    ($make:expr) => {
        $crate::__registry_suite!(false, $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __registry_suite {
    ($strict:expr, $make:expr) => {
        $crate::__testkit_tests!(registry, $strict, f => (&f.registry, f.clock.as_ref()), $make, [
            bootstrap, create_authenticate, authenticate_key, rotation, refused_statuses,
            update_with_revision, concurrent_creates, concurrent_updates, quota_race,
            quota_semantics, secrets_never_shown, bad_input, lifecycle_table, expiry,
            jobs_per_hour, delete_and_purge, list_filters, release_recording_counts_once,
            sessions, api_keys, api_key_rotation, api_key_expiry_and_sessions,
        ]);
    };
}
