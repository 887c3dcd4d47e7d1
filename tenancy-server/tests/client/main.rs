//! The HTTP client (feature `client`) against live servers on loopback TCP
//! (`app()` served by `axum::serve` on 127.0.0.1:0, one per check): core's
//! lock and registry conformance suites through `HttpLockManager` and
//! `HttpRegistry`, and sessions end to end (login, use, logout, rotation,
//! suspension, a revocation seen by a second replica on the same store
//! within the refresh interval, a server that is down).
#![allow(clippy::unwrap_used)]

mod suites;

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{
    Clock, ManualClock, MemoryBackend, NewTenant, Secret, StateBackend, TenantId, TenantRegistry,
};
use tenancy_lock::StoreLockManager;
use tenancy_server::client::{Client, TenantCredential};
use tenancy_server::{app, AppState, AuthConfig, ServerConfig, SharedStores};
use tenancy_state::StoreRegistry;

/// The admin token of bootstrapped test servers.
pub(crate) const ADMIN: &str = "admin-token-for-client-tests";

/// A server on loopback; stops when dropped.
pub(crate) struct Live {
    pub(crate) url: String,
    /// The server's own registry (what an operator has on the store).
    pub(crate) registry: Arc<StoreRegistry>,
    pub(crate) clock: ManualClock,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Test settings: no request-rate limit (the suites make bursts of calls).
pub(crate) fn config(refresh: Duration) -> ServerConfig {
    ServerConfig {
        auth: AuthConfig {
            refresh_interval: refresh,
            rate_limit: false,
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// A server on a fresh memory store (bootstrapped with [`ADMIN`] or not).
pub(crate) async fn live(bootstrap: bool) -> Live {
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let live = live_on(
        backend,
        ManualClock::starting_now(),
        config(Duration::from_secs(5)),
    )
    .await;
    if bootstrap {
        live.registry.bootstrap(&Secret::new(ADMIN)).await.unwrap();
    }
    live
}

/// A server (a replica) on `backend`, reading `clock`.
pub(crate) async fn live_on(
    backend: Arc<dyn StateBackend>,
    clock: ManualClock,
    config: ServerConfig,
) -> Live {
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let registry = Arc::new(
        StoreRegistry::new(backend.clone())
            .with_bcrypt_cost(4)
            .with_clock(clock_dyn.clone())
            .with_blocking(Arc::new(tenancy_server::TokioBlocking)),
    );
    let locks = Arc::new(StoreLockManager::new(backend.clone()).with_clock(clock_dyn.clone()));
    let state = AppState::builder(
        registry.clone(),
        Arc::new(SharedStores::with_locks(backend.clone(), locks)),
    )
    .audit(backend.clone())
    .config(config)
    .clock(clock_dyn)
    .build()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Live {
        url: format!("http://{addr}"),
        registry,
        clock,
        server,
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_use_logout_rotate_and_suspend_through_the_client() {
    let live = live(true).await;
    let client = Client::new(&live.url).unwrap();
    client.ready().await.unwrap();
    let admin = client.registry(Secret::new(ADMIN));
    let created = admin.create(NewTenant::new(tid("acme"))).await.unwrap();

    let issued = client
        .login_tenant(&tid("acme"), &created.secret)
        .await
        .unwrap();
    assert!(issued.token.expose().starts_with("tns_acme_"));
    assert!(!format!("{issued:?}").contains(issued.token.expose()));
    let acme = client.tenant(TenantCredential::Session(issued.token.clone()));
    assert_eq!(acme.me().await.unwrap().id, "acme");
    assert_eq!(acme.session().await.unwrap().id, issued.session.id);
    assert_eq!(acme.sessions().await.unwrap().len(), 1);

    // Another tenant's secret, a wrong one and an unknown tenant: 401.
    let other = admin.create(NewTenant::new(tid("globex"))).await.unwrap();
    for (tenant, secret) in [
        ("acme", &other.secret),
        ("nobody-here", &created.secret),
        ("acme", &Secret::new("tnc_wrong")),
    ] {
        let e = client.login_tenant(&tid(tenant), secret).await.unwrap_err();
        assert!(matches!(e, tenancy_core::Error::Unauthorized { .. }), "{e}");
    }

    // Logout: refused after.
    acme.logout().await.unwrap();
    let e = acme.me().await.unwrap_err();
    assert!(matches!(e, tenancy_core::Error::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains(issued.token.expose()));

    // Rotation ends sessions (401 credentials_rotated -> CredentialsRotated).
    let issued = client
        .login_tenant(&tid("acme"), &created.secret)
        .await
        .unwrap();
    let acme = client.tenant(TenantCredential::Session(issued.token.clone()));
    acme.me().await.unwrap();
    let rotated = admin.rotate(&tid("acme")).await.unwrap();
    let e = acme.me().await.unwrap_err();
    assert!(
        matches!(&e, tenancy_core::Error::CredentialsRotated { tenant } if tenant == "acme"),
        "{e}"
    );

    // Suspension: 403 -> Forbidden, until activated.
    let issued = client
        .login_tenant(&tid("acme"), &rotated.secret)
        .await
        .unwrap();
    let acme = client.tenant(TenantCredential::Session(issued.token.clone()));
    let locks = acme.locks();
    let key = tenancy_core::LockKey::new("stack:web:env:prod").unwrap();
    let lease = tenancy_core::LockManagerExt::try_lock(&locks, &key, Duration::from_secs(60))
        .await
        .unwrap();
    admin
        .suspend(&tid("acme"), Some("billing".into()))
        .await
        .unwrap();
    let e = acme.me().await.unwrap_err();
    assert!(matches!(e, tenancy_core::Error::Forbidden { .. }), "{e}");
    admin.activate(&tid("acme")).await.unwrap();
    assert_eq!(
        tenancy_core::LockManager::inspect(&locks, &key)
            .await
            .unwrap()
            .map(|l| l.lock_id),
        Some(lease.lock_id)
    );

    // An admin session works for the admin API and ends at logout.
    let admin_session = client.login_admin(&Secret::new(ADMIN)).await.unwrap();
    let by_session = client.registry(admin_session.token.clone());
    assert_eq!(by_session.list_all_ids().await, vec!["acme", "globex"]);
    let e = client
        .login_admin(&Secret::new("not-the-admin-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, tenancy_core::Error::Unauthorized { .. }), "{e}");
    by_session
        .revoke_session(
            &tenancy_core::SessionOwner::Admin,
            &admin_session.session.id,
        )
        .await
        .unwrap();
    let e = by_session.get(&tid("acme")).await.unwrap_err();
    assert!(matches!(e, tenancy_core::Error::Unauthorized { .. }), "{e}");
}

trait ListIds {
    async fn list_all_ids(&self) -> Vec<String>;
}

impl<R: TenantRegistry> ListIds for R {
    async fn list_all_ids(&self) -> Vec<String> {
        tenancy_core::TenantRegistryExt::list_all(self, Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id.to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_through_one_replica_is_refused_by_the_other_within_the_refresh_interval()
{
    let refresh = Duration::from_secs(1);
    let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::starting_now();
    let a = live_on(backend.clone(), clock.clone(), config(refresh)).await;
    let b = live_on(backend, clock, config(refresh)).await;
    a.registry.bootstrap(&Secret::new(ADMIN)).await.unwrap();
    let to_a = Client::new(&a.url).unwrap();
    let to_b = Client::new(&b.url).unwrap();
    let created = to_a
        .registry(Secret::new(ADMIN))
        .create(NewTenant::new(tid("acme")))
        .await
        .unwrap();

    // Logged in through A, used through both (both cache it).
    let issued = to_a
        .login_tenant(&tid("acme"), &created.secret)
        .await
        .unwrap();
    let via_a = to_a.tenant(TenantCredential::Session(issued.token.clone()));
    let via_b = to_b.tenant(TenantCredential::Session(issued.token.clone()));
    via_a.me().await.unwrap();
    via_b.me().await.unwrap();
    // A lock taken through A is held on B.
    let key = tenancy_core::LockKey::new("stack:web:env:prod").unwrap();
    let lease =
        tenancy_core::LockManagerExt::try_lock(&via_a.locks(), &key, Duration::from_secs(60))
            .await
            .unwrap();
    let e = tenancy_core::LockManagerExt::try_lock(&via_b.locks(), &key, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, tenancy_core::Error::LockHeld { holder } if holder.lock_id == lease.lock_id),
        "{e}"
    );

    // Logout through A: A refuses at once, B within the refresh interval.
    via_a.logout().await.unwrap();
    assert!(via_a.me().await.is_err());
    let started = std::time::Instant::now();
    loop {
        match via_b.me().await {
            Err(tenancy_core::Error::Unauthorized { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            started.elapsed() < refresh * 3,
            "replica B honours a revoked session {:?} later",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() <= refresh + Duration::from_millis(500));
}

#[tokio::test]
async fn a_server_that_is_down_is_one_temporary_cannot_reach_error() {
    // A port nothing listens on: bind one, then let it go.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::builder(&url)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let e = client.ready().await.unwrap_err();
    assert!(matches!(e, tenancy_core::Error::Backend { .. }), "{e}");
    assert!(e.is_temporary());
    let shown = e.to_string();
    assert!(shown.contains(&format!("cannot reach {url}")), "{shown}");
    assert!(!shown.contains('\n'), "one line: {shown}");
    let e = client
        .login_tenant(
            &tid("acme"),
            &Secret::new("tnc_0123456789abcdef0123456789abcdef"),
        )
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("0123456789abcdef"), "{e}");

    assert!(matches!(
        Client::new("ftp://example.com"),
        Err(tenancy_core::Error::InvalidInput { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_through_the_tenant_client_keeps_versions_and_conditions() {
    use bytes::Bytes;
    use tenancy_core::{DeleteMode, Error, PutMode, StateKey};
    let live = live(true).await;
    let client = Client::new(&live.url).unwrap();
    let created = client
        .registry(Secret::new(ADMIN))
        .create(NewTenant::new(tid("acme")))
        .await
        .unwrap();
    let issued = client
        .login_tenant(&tid("acme"), &created.secret)
        .await
        .unwrap();
    let acme = client.tenant(TenantCredential::Session(issued.token));
    let key = StateKey::new("configs/web/app.json").unwrap();

    assert!(acme.get_state(&key).await.unwrap().is_none());
    let v1 = acme
        .put_state(&key, Bytes::from_static(b"{\"n\":1}"), PutMode::Create)
        .await
        .unwrap();
    let e = acme
        .put_state(&key, Bytes::from_static(b"{}"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    let got = acme.get_state(&key).await.unwrap().unwrap();
    assert_eq!((got.bytes.as_ref(), &got.version), (&b"{\"n\":1}"[..], &v1));
    let v2 = acme
        .put_state(
            &key,
            Bytes::from_static(b"{\"n\":2}"),
            PutMode::Update(v1.clone()),
        )
        .await
        .unwrap();
    assert_ne!(v1, v2);
    let e = acme
        .put_state(&key, Bytes::from_static(b"{}"), PutMode::Update(v1.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e}");
    let (listed, truncated) = acme
        .list_state(Some(&StateKey::new("configs").unwrap()))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["configs/web/app.json"]
    );
    assert!(!truncated);
    let e = acme
        .delete_state(&key, DeleteMode::IfVersion(v1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e}");
    acme.delete_state(&key, DeleteMode::IfVersion(v2))
        .await
        .unwrap();
    assert!(acme.get_state(&key).await.unwrap().is_none());
    // The server's own prefix is refused, as for any client.
    let e = acme
        .get_state(&StateKey::new("_server/jobs/x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_through_the_stack_client_keep_history_locks_and_quota() {
    use bytes::Bytes;
    use std::time::Duration;
    use tenancy_core::{Error, LimitOverrides, LockKey, LockManager, LockRequest};
    let live = live(true).await;
    let client = Client::new(&live.url).unwrap();
    let created = client
        .registry(Secret::new(ADMIN))
        .create(NewTenant {
            limits: LimitOverrides {
                max_stacks: Some(1),
                ..LimitOverrides::default()
            },
            ..NewTenant::new(tid("acme"))
        })
        .await
        .unwrap();
    let issued = client
        .login_tenant(&tid("acme"), &created.secret)
        .await
        .unwrap();
    let acme = client.tenant(TenantCredential::Session(issued.token));
    let stacks = acme.stacks();

    assert_eq!(stacks.current("web", "prod").await.unwrap(), None);
    // Stored byte for byte, whitespace and key order included.
    let doc = Bytes::from_static(b"{ \"b\": 1,  \"a\": [ ] }");
    let w1 = stacks.save("web", "prod", doc.clone(), None).await.unwrap();
    assert_eq!(w1.serial, 1);
    let w2 = stacks
        .save("web", "prod", Bytes::from_static(b"{\"v\":2}"), None)
        .await
        .unwrap();
    assert_eq!(w2.serial, 2);
    let cur = stacks.current("web", "prod").await.unwrap().unwrap();
    assert_eq!((cur.serial, cur.bytes.as_ref()), (2, &b"{\"v\":2}"[..]));
    assert_eq!(stacks.version("web", "prod", 1).await.unwrap().bytes, doc);
    let e = stacks.version("web", "prod", 9).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = stacks
        .save("web", "prod", Bytes::from_static(b"not json"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");

    // A lock held by someone else: saves and rollbacks are LockHeld with
    // the holder; its holder saves under it, with its fencing token recorded.
    let locks = acme.locks();
    let key = LockKey::stack_env("web", "prod").unwrap();
    let held = locks
        .try_acquire(&LockRequest::new(key, Duration::from_secs(60)).who("ci@runner"))
        .await
        .unwrap();
    let e = stacks
        .save("web", "prod", Bytes::from_static(b"{}"), None)
        .await
        .unwrap_err();
    match e {
        Error::LockHeld { holder } => {
            assert_eq!(holder.lock_id, held.lock_id);
            assert_eq!(holder.who, "ci@runner");
            assert_eq!(holder.fencing_token, held.fencing_token);
        }
        e => panic!("not LockHeld: {e}"),
    }
    let e = stacks.rollback("web", "prod", 1, None).await.unwrap_err();
    assert!(matches!(e, Error::LockHeld { .. }), "{e}");
    let w3 = stacks
        .rollback("web", "prod", 1, Some(&held.lock_id))
        .await
        .unwrap();
    assert_eq!(w3.serial, 3);
    let h = stacks.history("web", "prod").await.unwrap();
    let serials: Vec<u64> = h.versions.iter().map(|v| v.serial).collect();
    assert_eq!(serials, [1, 2, 3]);
    assert_eq!(h.versions[2].rolled_back_from, Some(1));
    assert_eq!(h.versions[2].fencing_token, Some(held.fencing_token));
    assert!(h.damaged.is_empty());
    let list = stacks.list().await.unwrap();
    assert_eq!(list.max_stacks, 1);
    assert_eq!(list.stacks.len(), 1);
    assert_eq!(
        list.stacks[0].locked_by.as_ref().map(|l| l.id.clone()),
        Some(held.lock_id.to_string())
    );
    locks
        .release(&LockKey::stack_env("web", "prod").unwrap(), held.lock_id)
        .await
        .unwrap();

    // max_stacks is 1: a second stack is refused; deleting the first gives it back.
    let e = stacks
        .save("api", "prod", Bytes::from_static(b"{}"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::QuotaExceeded { .. }), "{e}");
    stacks.delete("web", "prod", None).await.unwrap();
    assert_eq!(stacks.current("web", "prod").await.unwrap(), None);
    stacks
        .save("api", "prod", Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
}
