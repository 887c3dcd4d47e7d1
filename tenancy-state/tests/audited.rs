//! The audit layer (`tenancy_state::audited::Audited`) over a `StoreRegistry`
//! on memory: every change made through it leaves exactly one entry, in the
//! right log, with who, what, on what, from where and the outcome (a
//! table-driven walk through every recorded call); a change that changed
//! nothing leaves none; refusals are aggregated per minute; a failed append
//! leaves the change standing and is reported; the chain verifies after the
//! whole workflow; no entry holds a secret.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde_json::json;
use tenancy_core::audit::{Actor, Entry, Filter, Outcome, Scope};
use tenancy_core::testkit::{HookBackend, Op};
use tenancy_core::{
    Clock, Error, KeyId, ManualClock, MemoryBackend, NewApiKey, NewTenant, Resource, Role, Secret,
    SessionOwner, StateBackend, TenantId, TenantRegistry, TenantUpdate,
};
use tenancy_state::audited::{AuditContext, Audited};
use tenancy_state::StoreRegistry;

const ADMIN: &str = "admin-password-for-tests";

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

struct Fixture {
    audited: Audited<Arc<dyn TenantRegistry>>,
    clock: ManualClock,
    backend: Arc<dyn StateBackend>,
}

fn fixture_on(backend: Arc<dyn StateBackend>) -> Fixture {
    let clock = ManualClock::starting_now();
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let registry: Arc<dyn TenantRegistry> = Arc::new(
        StoreRegistry::new(backend.clone())
            .with_clock(clock_dyn.clone())
            .with_bcrypt_cost(4),
    );
    let audited = Audited::new(registry, backend.clone()).with_clock(clock_dyn);
    Fixture {
        audited,
        clock,
        backend,
    }
}

fn fixture() -> Fixture {
    fixture_on(Arc::new(MemoryBackend::new()))
}

impl Fixture {
    fn as_admin(&self) -> Audited<Arc<dyn TenantRegistry>> {
        self.audited
            .with_context(AuditContext::server(Actor::admin(), Some("req-1".into())))
    }

    async fn entries(&self, scope: &Scope) -> Vec<Entry> {
        self.audited
            .log()
            .list(scope, &Filter::default())
            .await
            .unwrap()
    }

    async fn total(&self) -> usize {
        self.entries(&Scope::Admin).await.len() + self.entries(&Scope::Tenant(acme())).await.len()
    }
}

/// One step of the walk: what it does, and the one entry it must leave.
struct Step {
    name: &'static str,
    scope: Scope,
    action: &'static str,
    outcome: Outcome,
    actor_kind: &'static str,
}

fn step(
    name: &'static str,
    scope: Scope,
    action: &'static str,
    outcome: Outcome,
    actor_kind: &'static str,
) -> Step {
    Step {
        name,
        scope,
        action,
        outcome,
        actor_kind,
    }
}

#[tokio::test]
async fn every_change_leaves_exactly_one_entry_in_its_log() {
    let f = fixture();
    let admin = f.as_admin();
    let store = f.audited.with_context(AuditContext::cli(Actor::store()));
    let tenant_view = f
        .audited
        .with_context(AuditContext::server(Actor::tenant(&acme()), None));
    let t = Scope::Tenant(acme());
    let mut secret = String::new();
    let mut key_id: Option<KeyId> = None;
    let mut session = None;
    let mut other_session = None;

    let steps = vec![
        step(
            "bootstrap",
            Scope::Admin,
            "registry.bootstrap",
            Outcome::Ok,
            "store",
        ),
        step(
            "set_admin_password",
            Scope::Admin,
            "admin.credential",
            Outcome::Ok,
            "admin",
        ),
        step("create", t.clone(), "tenant.create", Outcome::Ok, "admin"),
        step("update", t.clone(), "tenant.update", Outcome::Ok, "admin"),
        step("suspend", t.clone(), "tenant.suspend", Outcome::Ok, "admin"),
        step(
            "activate",
            t.clone(),
            "tenant.activate",
            Outcome::Ok,
            "admin",
        ),
        step("rotate", t.clone(), "tenant.rotate", Outcome::Ok, "admin"),
        step("create_key", t.clone(), "key.create", Outcome::Ok, "tenant"),
        step("rotate_key", t.clone(), "key.rotate", Outcome::Ok, "tenant"),
        step("revoke_key", t.clone(), "key.revoke", Outcome::Ok, "tenant"),
        step(
            "login_tenant",
            t.clone(),
            "session.login",
            Outcome::Ok,
            "tenant",
        ),
        step(
            "login_tenant refused",
            t.clone(),
            "session.login",
            Outcome::Refused,
            "anonymous",
        ),
        step(
            "login unknown tenant",
            Scope::Admin,
            "session.login",
            Outcome::Refused,
            "anonymous",
        ),
        step(
            "cli login",
            t.clone(),
            "session.login",
            Outcome::Ok,
            "tenant",
        ),
        step(
            "login_admin",
            Scope::Admin,
            "session.login",
            Outcome::Ok,
            "admin",
        ),
        step(
            "login_admin refused",
            Scope::Admin,
            "session.login",
            Outcome::Refused,
            "anonymous",
        ),
        step(
            "cli admin login refused",
            Scope::Admin,
            "session.login",
            Outcome::Refused,
            "anonymous",
        ),
        step(
            "login_tenant again",
            t.clone(),
            "session.login",
            Outcome::Ok,
            "tenant",
        ),
        step("logout", t.clone(), "session.logout", Outcome::Ok, "tenant"),
        step(
            "revoke_session",
            t.clone(),
            "session.revoke",
            Outcome::Ok,
            "admin",
        ),
        step(
            "quota refused",
            t.clone(),
            "quota.refused",
            Outcome::Refused,
            "tenant",
        ),
        step(
            "stack rollback",
            t.clone(),
            "stack.rollback",
            Outcome::Ok,
            "tenant",
        ),
        step(
            "force unlock",
            t.clone(),
            "lock.force_unlock",
            Outcome::Ok,
            "admin",
        ),
        step("delete", t.clone(), "tenant.delete", Outcome::Ok, "admin"),
        step("purge", t.clone(), "tenant.purge", Outcome::Ok, "admin"),
    ];

    for s in &steps {
        let before = f.total().await;
        match s.name {
            "bootstrap" => store.bootstrap(&Secret::new(ADMIN)).await.unwrap(),
            "set_admin_password" => {
                admin.set_admin_password(&Secret::new(ADMIN)).await.unwrap();
            }
            "create" => {
                let c = admin.create(NewTenant::new(acme())).await.unwrap();
                secret = c.secret.expose().to_string();
            }
            "update" => {
                let u = TenantUpdate {
                    display_name: Some("Acme".into()),
                    ..Default::default()
                };
                admin.update(&acme(), u).await.unwrap();
            }
            "suspend" => {
                admin.suspend(&acme(), Some("unpaid".into())).await.unwrap();
            }
            "activate" => {
                admin.activate(&acme()).await.unwrap();
            }
            "rotate" => {
                secret = admin
                    .rotate(&acme())
                    .await
                    .unwrap()
                    .secret
                    .expose()
                    .to_string();
            }
            "create_key" => {
                let new = NewApiKey {
                    name: "ci".into(),
                    role: Role::Viewer,
                    expires_at: None,
                };
                key_id = Some(tenant_view.create_key(&acme(), new).await.unwrap().key.id);
            }
            "rotate_key" => {
                let r = tenant_view
                    .rotate_key(&acme(), key_id.as_ref().unwrap(), Duration::ZERO)
                    .await
                    .unwrap();
                key_id = Some(r.created.key.id);
            }
            "revoke_key" => {
                tenant_view
                    .revoke_key(&acme(), key_id.as_ref().unwrap())
                    .await
                    .unwrap();
            }
            "login_tenant" => {
                let s = tenant_view
                    .login_tenant(&acme(), &Secret::new(secret.clone()))
                    .await
                    .unwrap();
                session = Some(s.session.id);
            }
            "login_tenant refused" => {
                let anon = f
                    .audited
                    .with_context(AuditContext::server(Actor::anonymous(), None));
                let e = anon
                    .login_tenant(&acme(), &Secret::new("tns_wrong_secret"))
                    .await;
                assert!(matches!(e, Err(Error::Unauthorized { .. })), "{e:?}");
            }
            "login unknown tenant" => {
                let anon = f
                    .audited
                    .with_context(AuditContext::server(Actor::anonymous(), None));
                let nobody = TenantId::new("nobody").unwrap();
                assert!(anon
                    .login_tenant(&nobody, &Secret::new("x_y"))
                    .await
                    .is_err());
            }
            "cli login" => {
                let login = f
                    .audited
                    .with_context(AuditContext::cli(Actor::anonymous()).login());
                login
                    .authenticate(&acme(), &Secret::new(secret.clone()))
                    .await
                    .unwrap();
            }
            "login_admin" => {
                admin.login_admin(&Secret::new(ADMIN)).await.unwrap();
            }
            "login_admin refused" => {
                let anon = f
                    .audited
                    .with_context(AuditContext::server(Actor::anonymous(), None));
                assert!(anon
                    .login_admin(&Secret::new("wrong-password"))
                    .await
                    .is_err());
            }
            "cli admin login refused" => {
                // From the CLI, not the server: not aggregated with the
                // server's refusal above.
                let login = f
                    .audited
                    .with_context(AuditContext::cli(Actor::anonymous()).login());
                assert!(login
                    .verify_admin(&Secret::new("wrong-password"))
                    .await
                    .is_err());
            }
            "logout" => {
                let id = session.clone().unwrap();
                let own = f.audited.with_context(AuditContext::server(
                    Actor::tenant(&acme()).in_session(id.to_string()),
                    None,
                ));
                own.revoke_session(&SessionOwner::Tenant(acme()), &id)
                    .await
                    .unwrap();
            }
            "login_tenant again" => {
                let s = tenant_view
                    .login_tenant(&acme(), &Secret::new(secret.clone()))
                    .await
                    .unwrap();
                other_session = Some(s.session.id);
            }
            "revoke_session" => {
                admin
                    .revoke_session(
                        &SessionOwner::Tenant(acme()),
                        other_session.as_ref().unwrap(),
                    )
                    .await
                    .unwrap();
            }
            "quota refused" => {
                let e = tenant_view
                    .reserve(&acme(), Resource::Stacks, 1_000_000)
                    .await;
                assert!(matches!(e, Err(Error::QuotaExceeded { .. })), "{e:?}");
            }
            "stack rollback" => {
                let done: tenancy_core::Result<u64> = Ok(3);
                tenant_view
                    .record_result(
                        &t,
                        "stack.rollback",
                        "stack web/prod",
                        &done,
                        |n| json!({ "serial": n }),
                    )
                    .await
                    .unwrap();
            }
            "force unlock" => {
                let done: tenancy_core::Result<()> = Ok(());
                admin
                    .record_result(
                        &t,
                        "lock.force_unlock",
                        "lock stack:web:env:prod",
                        &done,
                        |_| json!({}),
                    )
                    .await
                    .unwrap();
            }
            "delete" => {
                admin.delete(&acme()).await.unwrap();
            }
            "purge" => {
                admin.purge(&acme(), Duration::ZERO).await.unwrap();
            }
            other => panic!("no step {other}"),
        }
        let after = f.total().await;
        assert_eq!(after, before + 1, "{}: exactly one entry", s.name);
        let last = f.entries(&s.scope).await.pop().unwrap();
        assert_eq!(last.action, s.action, "{}", s.name);
        assert_eq!(last.outcome, s.outcome, "{}", s.name);
        assert_eq!(
            last.actor.kind, s.actor_kind,
            "{}: {:?}",
            s.name, last.actor
        );
    }

    // Who and from where.
    let t_entries = f.entries(&t).await;
    let create = t_entries
        .iter()
        .find(|e| e.action == "tenant.create")
        .unwrap();
    assert_eq!(create.via, "server");
    assert_eq!(create.request_id.as_deref(), Some("req-1"));
    assert_eq!(create.target, "tenant acme");
    let cli_login = t_entries
        .iter()
        .filter(|e| e.action == "session.login" && e.via == "cli")
        .count();
    assert_eq!(cli_login, 1);
    let refused = t_entries
        .iter()
        .find(|e| e.outcome == Outcome::Refused && e.action == "session.login")
        .unwrap();
    assert_eq!(refused.detail["failures"], 1);
    assert_eq!(refused.detail["error"], "unauthorized");
    let unknown = f
        .entries(&Scope::Admin)
        .await
        .into_iter()
        .find(|e| e.target == "an unknown tenant")
        .unwrap();
    assert_eq!(unknown.detail["tenant"], "nobody");

    // No entry holds a secret, a hash or a token.
    for e in f.entries(&Scope::Admin).await.iter().chain(&t_entries) {
        let text = serde_json::to_string(&e.detail).unwrap() + &e.target;
        assert!(
            !text.contains(&secret) && !text.contains("$2") && !text.contains("tns_"),
            "{text}"
        );
    }

    // Both chains verify after the whole workflow.
    for scope in [Scope::Admin, t] {
        let v = f.audited.log().verify(&scope, None).await.unwrap();
        assert!(v.is_intact(), "{scope}: {:?}", v.problems);
    }
}

#[tokio::test]
async fn a_call_that_changed_nothing_leaves_no_entry() {
    let f = fixture();
    let admin = f.as_admin();
    admin.bootstrap(&Secret::new(ADMIN)).await.unwrap();
    let before = f.total().await;
    let nobody = TenantId::new("nobody").unwrap();
    assert!(admin
        .suspend(&nobody, None)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(admin.delete(&nobody).await.unwrap_err().is_not_found());
    admin.create(NewTenant::new(acme())).await.unwrap();
    let created = f.total().await;
    assert!(matches!(
        admin.create(NewTenant::new(acme())).await,
        Err(Error::AlreadyExists { .. })
    ));
    // Reads and credential checks outside a login view are not recorded.
    admin.get(&acme()).await.unwrap();
    let _ = admin.authenticate(&acme(), &Secret::new("x_y")).await;
    assert_eq!(f.total().await, created);
    assert_eq!(created, before + 1);
    assert!(f.entries(&Scope::Tenant(nobody)).await.is_empty());
}

async fn refused(f: &Fixture) -> Vec<Entry> {
    f.entries(&Scope::Tenant(acme()))
        .await
        .into_iter()
        .filter(|e| e.outcome == Outcome::Refused)
        .collect()
}

#[tokio::test]
async fn refused_logins_are_aggregated_per_minute_with_a_count() {
    let f = fixture();
    f.as_admin().bootstrap(&Secret::new(ADMIN)).await.unwrap();
    f.as_admin().create(NewTenant::new(acme())).await.unwrap();
    let anon = f
        .audited
        .with_context(AuditContext::server(Actor::anonymous(), None));
    for _ in 0..10 {
        assert!(anon
            .login_tenant(&acme(), &Secret::new("x_y"))
            .await
            .is_err());
    }
    let r = refused(&f).await;
    assert_eq!(r.len(), 1, "a flood within a minute is one entry");
    assert_eq!(r[0].detail["failures"], 1);
    // Within the window: still counted only.
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(anon.flush_refusals().await, 0);
    // After it: the next refusal writes the count since the last entry.
    f.clock.advance(Duration::from_secs(31));
    assert!(anon
        .login_tenant(&acme(), &Secret::new("x_y"))
        .await
        .is_err());
    let r = refused(&f).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].detail["failures"], 10, "9 counted and this one");
    // A count left at the end of a burst is written by the flush once its
    // window closed (the server's schedule), or at once by flush_all.
    for _ in 0..3 {
        assert!(anon
            .login_tenant(&acme(), &Secret::new("x_y"))
            .await
            .is_err());
    }
    assert_eq!(anon.flush_refusals().await, 0);
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(anon.flush_refusals().await, 1);
    let r = refused(&f).await;
    assert_eq!(r.len(), 3);
    assert_eq!(r[2].detail["failures"], 3);
    assert_eq!(anon.flush_all_refusals().await, 0, "nothing left to write");
    // The flush's entry opened a new window: this one is counted, and
    // flush_all writes it without waiting for the window.
    assert!(anon
        .login_tenant(&acme(), &Secret::new("x_y"))
        .await
        .is_err());
    assert_eq!(refused(&f).await.len(), 3);
    assert_eq!(
        anon.flush_all_refusals().await,
        1,
        "flush_all ignores the window"
    );
    assert_eq!(refused(&f).await.len(), 4);
    let v = f
        .audited
        .log()
        .verify(&Scope::Tenant(acme()), None)
        .await
        .unwrap();
    assert!(v.is_intact(), "{:?}", v.problems);
}

#[tokio::test]
async fn a_failed_append_leaves_the_change_and_is_reported() {
    let hooked = Arc::new(HookBackend::new(MemoryBackend::new()));
    let backend: Arc<dyn StateBackend> = hooked.clone();
    let f = fixture_on(backend.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let audited = f.audited.clone().on_failure(Arc::new(move |fail| {
        sink.lock().unwrap().push(format!(
            "{} {} {}",
            fail.scope, fail.entry.action, fail.error
        ));
    }));
    let admin = audited.with_context(AuditContext::cli(Actor::admin()));
    admin.bootstrap(&Secret::new(ADMIN)).await.unwrap();
    hooked.set_hook(|op: Op| {
        let audit = op.is_write() && op.key().is_some_and(|k| k.as_str().starts_with("audit/"));
        async move {
            if audit {
                Err(Error::backend(
                    "memory",
                    "the audit prefix is read-only today",
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    });
    let created = admin.create(NewTenant::new(acme())).await;
    assert!(created.is_ok(), "the change stands: {created:?}");
    assert!(admin.get(&acme()).await.is_ok());
    assert_eq!(admin.unrecorded(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("tenant.create") && seen[0].contains("read-only"),
        "{seen:?}"
    );
    let _ = f.backend;
}
