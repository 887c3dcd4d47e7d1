//! Core's conformance suites through the HTTP client, one live server per
//! check: the lock suite as a tenant (with its secret, and with a session
//! token), the registry suite as the admin. Both are strict: no check is
//! skipped.
//!
//! One thing cannot go through HTTP by design: creating the registry. A
//! server bootstraps its own at its first start and has no route for it
//! (an unauthenticated bootstrap route would let whoever comes first become
//! admin), so `HttpRegistry::bootstrap` and `is_bootstrapped` are
//! `NotImplemented`. The fixture below, [`Operator`], does what the
//! operator does: it bootstraps the server's store directly, then hands the
//! admin token to the HTTP registry; every other call of every check goes
//! through HTTP.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tenancy_core::testkit::lock::LockFixture;
use tenancy_core::testkit::registry::RegistryFixture;
use tenancy_core::{
    AuthenticatedSession, CreatedTenant, IssuedSession, ListedReservation, NewTenant, Plan,
    Reservation, Resource, Result, Secret, ServerSession, SessionId, SessionOwner, Tenant,
    TenantFilter, TenantId, TenantRegistry, TenantUpdate, Usage, UsageEvent,
};
use tenancy_server::client::{Client, HttpLockManager, HttpRegistry, TenantCredential};
use tenancy_state::StoreRegistry;

use super::{live, Live, ADMIN};

/// A tenant's locks through a fresh server, as the tenant's secret or a
/// session token authenticates.
async fn locks(session: bool) -> LockFixture<HttpLockManager> {
    let live = live(true).await;
    let client = Client::new(&live.url).expect("client");
    let admin = client.registry(Secret::new(ADMIN));
    let created = admin
        .create(NewTenant {
            plan: Plan::Enterprise,
            ..NewTenant::new(TenantId::new("suite").expect("id"))
        })
        .await
        .expect("create the suite's tenant");
    let credential = if session {
        let issued = client
            .login_tenant(&created.tenant.id, &created.secret)
            .await
            .expect("login");
        TenantCredential::Session(issued.token)
    } else {
        TenantCredential::Secret {
            secret: created.secret,
            tenant: Some(created.tenant.id),
        }
    };
    let clock = live.clock.clone();
    let locks = client
        .tenant(credential)
        .locks()
        .with_clock(Arc::new(clock.clone()));
    LockFixture::new(locks, clock).guarded(live)
}

mod locks_with_a_secret {
    tenancy_core::lock_suite!(async { Some(super::locks(false).await) });
}

mod locks_with_a_session {
    tenancy_core::lock_suite!(async { Some(super::locks(true).await) });
}

/// The registry as the suite sees it: everything over HTTP, but the
/// registry's creation, which only the operator does (see the module docs).
#[derive(Debug)]
pub(crate) struct Operator {
    http: HttpRegistry,
    store: Arc<StoreRegistry>,
    _live: Live,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("url", &self.url).finish()
    }
}

async fn operator() -> RegistryFixture<Operator> {
    let live = live(false).await;
    let client = Client::new(&live.url).expect("client");
    let clock = live.clock.clone();
    let op = Operator {
        http: client.registry(Secret::new("no-admin-before-bootstrap")),
        store: live.registry.clone(),
        _live: live,
    };
    RegistryFixture::new(op, clock)
}

mod registry_over_http {
    tenancy_core::registry_suite!(strict: async { Some(super::operator().await) });
}

#[async_trait]
impl TenantRegistry for Operator {
    async fn is_bootstrapped(&self) -> Result<bool> {
        self.store.is_bootstrapped().await
    }
    async fn bootstrap(&self, p: &Secret) -> Result<()> {
        self.store.bootstrap(p).await?;
        self.http.set_credential(p.clone());
        Ok(())
    }
    async fn admin_generation(&self) -> Result<u64> {
        self.http.admin_generation().await
    }
    async fn set_admin_password(&self, p: &Secret) -> Result<u64> {
        self.http.set_admin_password(p).await
    }
    async fn verify_admin(&self, p: &Secret) -> Result<()> {
        self.http.verify_admin(p).await
    }
    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        self.http.create(new).await
    }
    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        self.http.get(id).await
    }
    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        self.http.list(filter)
    }
    async fn update(&self, id: &TenantId, u: TenantUpdate) -> Result<Tenant> {
        self.http.update(id, u).await
    }
    async fn suspend(&self, id: &TenantId, r: Option<String>) -> Result<Tenant> {
        self.http.suspend(id, r).await
    }
    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        self.http.activate(id).await
    }
    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        self.http.rotate(id).await
    }
    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        self.http.delete(id).await
    }
    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        self.http.purge(id, grace).await
    }
    async fn authenticate(&self, id: &TenantId, s: &Secret) -> Result<Tenant> {
        self.http.authenticate(id, s).await
    }
    async fn authenticate_key(&self, s: &Secret) -> Result<Tenant> {
        self.http.authenticate_key(s).await
    }
    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        self.http.usage(id).await
    }
    async fn reserve(&self, id: &TenantId, r: Resource, n: u64) -> Result<Reservation> {
        self.http.reserve(id, r, n).await
    }
    async fn commit(&self, r: &Reservation) -> Result<()> {
        self.http.commit(r).await
    }
    async fn release(&self, r: &Reservation) -> Result<()> {
        self.http.release(r).await
    }
    async fn record_usage(&self, id: &TenantId, e: UsageEvent) -> Result<Usage> {
        self.http.record_usage(id, e).await
    }
    async fn release_recording(&self, r: &Reservation, e: UsageEvent) -> Result<bool> {
        self.http.release_recording(r, e).await
    }
    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
        self.http.reservations(id).await
    }
    async fn login_tenant(&self, id: &TenantId, s: &Secret) -> Result<IssuedSession> {
        self.http.login_tenant(id, s).await
    }
    async fn login_admin(&self, p: &Secret) -> Result<IssuedSession> {
        self.http.login_admin(p).await
    }
    async fn authenticate_session(&self, t: &Secret) -> Result<AuthenticatedSession> {
        self.http.authenticate_session(t).await
    }
    async fn sessions(&self, o: &SessionOwner) -> Result<Vec<ServerSession>> {
        self.http.sessions(o).await
    }
    async fn revoke_session(&self, o: &SessionOwner, id: &SessionId) -> Result<()> {
        self.http.revoke_session(o, id).await
    }
    async fn authenticate_caller(
        &self,
        id: Option<&TenantId>,
        s: &Secret,
    ) -> Result<tenancy_core::Caller> {
        self.http.authenticate_caller(id, s).await
    }
    async fn create_key(
        &self,
        t: &TenantId,
        new: tenancy_core::NewApiKey,
    ) -> Result<tenancy_core::CreatedApiKey> {
        self.http.create_key(t, new).await
    }
    async fn keys(&self, t: &TenantId) -> Result<Vec<tenancy_core::ApiKey>> {
        self.http.keys(t).await
    }
    async fn revoke_key(
        &self,
        t: &TenantId,
        id: &tenancy_core::KeyId,
    ) -> Result<tenancy_core::ApiKey> {
        self.http.revoke_key(t, id).await
    }
    async fn rotate_key(
        &self,
        t: &TenantId,
        id: &tenancy_core::KeyId,
        grace: Duration,
    ) -> Result<tenancy_core::RotatedApiKey> {
        self.http.rotate_key(t, id, grace).await
    }
}
