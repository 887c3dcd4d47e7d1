//! A [`TenantRegistry`] that tells a [`TenantAuth`] cache about every change
//! it makes, so a server (or an embedder) cannot forget to: a rotation,
//! suspension, activation, update or deletion made through it applies to the
//! very next request on this replica, and so does a session revocation
//! (tenant sessions through the [`TenantAuth`], admin sessions through the
//! [`AdminAuth`] when it has one), and so do a key's revocation and
//! rotation (the old key's new expiry).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use tenancy_core::{
    ApiKey, AuthenticatedSession, Caller, CreatedApiKey, CreatedTenant, IssuedSession, KeyId,
    ListedReservation, NewApiKey, NewTenant, Reservation, Resource, Result, RotatedApiKey, Secret,
    ServerSession, SessionId, SessionOwner, Tenant, TenantFilter, TenantId, TenantRegistry,
    TenantUpdate, Usage, UsageEvent,
};

use crate::auth::{AdminAuth, TenantAuth};

/// See the module docs; made by [`TenantAuth::watching`].
#[derive(Debug)]
pub(crate) struct Watched {
    inner: Arc<dyn TenantRegistry>,
    auth: TenantAuth,
    admin: Option<AdminAuth>,
}

impl Watched {
    pub(crate) fn new(inner: Arc<dyn TenantRegistry>, auth: TenantAuth) -> Self {
        Watched {
            inner,
            auth,
            admin: None,
        }
    }

    /// Also tells `admin` about revoked admin sessions.
    pub(crate) fn with_admin(mut self, admin: AdminAuth) -> Self {
        self.admin = Some(admin);
        self
    }

    fn changed(&self, t: Result<Tenant>) -> Result<Tenant> {
        if let Ok(t) = &t {
            self.auth.tenant_changed(t);
        }
        t
    }
}

#[async_trait]
impl TenantRegistry for Watched {
    async fn is_bootstrapped(&self) -> Result<bool> {
        self.inner.is_bootstrapped().await
    }
    async fn bootstrap(&self, p: &Secret) -> Result<()> {
        self.inner.bootstrap(p).await
    }
    async fn verify_admin(&self, p: &Secret) -> Result<()> {
        self.inner.verify_admin(p).await
    }
    async fn admin_generation(&self) -> Result<u64> {
        self.inner.admin_generation().await
    }
    async fn set_admin_password(&self, p: &Secret) -> Result<u64> {
        self.inner.set_admin_password(p).await
    }
    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        let created = self.inner.create(new).await?;
        self.auth.tenant_changed(&created.tenant);
        Ok(created)
    }
    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        self.inner.get(id).await
    }
    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        self.inner.list(filter)
    }
    async fn update(&self, id: &TenantId, u: TenantUpdate) -> Result<Tenant> {
        self.changed(self.inner.update(id, u).await)
    }
    async fn suspend(&self, id: &TenantId, r: Option<String>) -> Result<Tenant> {
        self.changed(self.inner.suspend(id, r).await)
    }
    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        self.changed(self.inner.activate(id).await)
    }
    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        let rotated = self.inner.rotate(id).await?;
        self.auth.tenant_changed(&rotated.tenant);
        Ok(rotated)
    }
    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        self.changed(self.inner.delete(id).await)
    }
    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        self.inner.purge(id, grace).await
    }
    async fn authenticate(&self, id: &TenantId, s: &Secret) -> Result<Tenant> {
        self.inner.authenticate(id, s).await
    }
    async fn authenticate_key(&self, s: &Secret) -> Result<Tenant> {
        self.inner.authenticate_key(s).await
    }
    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        self.inner.usage(id).await
    }
    async fn reserve(&self, id: &TenantId, r: Resource, n: u64) -> Result<Reservation> {
        self.inner.reserve(id, r, n).await
    }
    async fn commit(&self, r: &Reservation) -> Result<()> {
        self.inner.commit(r).await
    }
    async fn release(&self, r: &Reservation) -> Result<()> {
        self.inner.release(r).await
    }
    async fn record_usage(&self, id: &TenantId, e: UsageEvent) -> Result<Usage> {
        self.inner.record_usage(id, e).await
    }
    async fn release_recording(&self, r: &Reservation, e: UsageEvent) -> Result<bool> {
        self.inner.release_recording(r, e).await
    }
    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
        self.inner.reservations(id).await
    }
    async fn login_tenant(&self, id: &TenantId, s: &Secret) -> Result<IssuedSession> {
        self.inner.login_tenant(id, s).await
    }
    async fn login_admin(&self, p: &Secret) -> Result<IssuedSession> {
        self.inner.login_admin(p).await
    }
    async fn authenticate_session(&self, t: &Secret) -> Result<AuthenticatedSession> {
        self.inner.authenticate_session(t).await
    }
    async fn sessions(&self, o: &SessionOwner) -> Result<Vec<ServerSession>> {
        self.inner.sessions(o).await
    }
    async fn revoke_session(&self, o: &SessionOwner, id: &SessionId) -> Result<()> {
        let revoked = self.inner.revoke_session(o, id).await;
        // Also when it was already gone: a cached entry must not outlive it.
        if revoked.is_ok() || revoked.as_ref().is_err_and(|e| e.is_not_found()) {
            match o {
                SessionOwner::Tenant(_) => self.auth.session_revoked(id),
                SessionOwner::Admin => {
                    if let Some(admin) = &self.admin {
                        admin.session_revoked(id);
                    }
                }
            }
        }
        revoked
    }
    async fn authenticate_caller(&self, id: Option<&TenantId>, s: &Secret) -> Result<Caller> {
        self.inner.authenticate_caller(id, s).await
    }
    async fn create_key(&self, t: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
        self.inner.create_key(t, new).await
    }
    async fn keys(&self, t: &TenantId) -> Result<Vec<ApiKey>> {
        self.inner.keys(t).await
    }
    async fn key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
        self.inner.key(t, id).await
    }
    async fn revoke_key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
        let key = self.inner.revoke_key(t, id).await?;
        self.auth.key_changed(&key);
        Ok(key)
    }
    async fn rotate_key(&self, t: &TenantId, id: &KeyId, grace: Duration) -> Result<RotatedApiKey> {
        let rotated = self.inner.rotate_key(t, id, grace).await?;
        self.auth.key_changed(&rotated.previous);
        Ok(rotated)
    }
    async fn touch_key(&self, t: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        self.inner.touch_key(t, id, at).await
    }
}
