//! [`HttpRegistry`]: core's `TenantRegistry` over the admin API, with the
//! admin token or an admin session token.
//!
//! Every method is one or two requests; what goes through the tenant
//! routes (`authenticate`, `authenticate_key`, tenant sessions) is checked
//! by the server's tenant layer, whose cache applies a change made on
//! another replica within its refresh interval. The server bootstraps its
//! own registry, so `is_bootstrapped` and `bootstrap` are `NotImplemented`.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::Method;
use tenancy_core::session::parse_session_token;
use tenancy_core::{
    ApiKey, AuthenticatedSession, Caller, CreatedApiKey, CreatedTenant, Error, IssuedSession,
    KeyId, ListedReservation, LockId, LockInfo, LockKey, NewApiKey, NewTenant, Reservation,
    Resource, Result, RotatedApiKey, Secret, ServerSession, SessionId, SessionOwner, Tenant,
    TenantFilter, TenantId, TenantRegistry, TenantUpdate, Usage, UsageEvent,
};

use super::{Auth, Client, TenantCredential};
use crate::views::{
    AdminCredentialChanged, AdminCredentialInfo, CommitReservation, CreateTenant, LockList,
    NewAdminCredential, PatchTenant, PurgeTenant, Purged, RecordUsage, ReleaseReservation,
    Released, ReservationList, ReserveQuota, SessionList, SessionView, StatsView, Suspend,
    TenantList, TenantView, TenantWithSecret,
};
use crate::views::{AuditHeadView, AuditList, AuditVerificationView};

const NO_BOOTSTRAP: &str = "a tenancy-server bootstraps its own registry at its first start \
     (`tenancy init` is for stores the CLI opens directly)";

/// The admin API of one server as a [`TenantRegistry`]. After
/// [`TenantRegistry::set_admin_password`] through it, a client that used
/// the admin token goes on with the new one (one that used an admin session
/// must log in again: the change ended it).
#[derive(Debug)]
pub struct HttpRegistry {
    client: Client,
    admin: RwLock<Secret>,
}

impl HttpRegistry {
    pub(crate) fn new(client: Client, admin: Secret) -> Self {
        HttpRegistry {
            client,
            admin: RwLock::new(admin),
        }
    }

    /// The server.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces the admin credential this client sends (the admin token or
    /// an admin session token), e.g. after a new admin login.
    pub fn set_credential(&self, admin: Secret) {
        *self.admin.write().unwrap_or_else(|p| p.into_inner()) = admin;
    }

    fn admin(&self) -> Secret {
        self.admin.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The tenants that pass `filter`, each with its usage counters, in one
    /// request (`GET /v1/tenants?include=usage`).
    pub async fn list_with_usage(&self, filter: TenantFilter) -> Result<Vec<(Tenant, Usage)>> {
        let list = self.list_views(filter, true).await?;
        list.tenants
            .into_iter()
            .map(|v| Ok((v.to_tenant()?, v.usage.unwrap_or_default())))
            .collect()
    }

    /// One tenant with its usage counters, in one request
    /// (`GET /v1/tenants/{id}?include=usage`).
    pub async fn get_with_usage(&self, id: &TenantId) -> Result<(Tenant, Usage)> {
        let admin = self.admin();
        let v: TenantView = self
            .client
            .call(
                Method::GET,
                &["v1", "tenants", id.as_str()],
                Auth::Admin(&admin),
            )
            .query(&[("include", "usage")])
            .send_json()
            .await?;
        Ok((v.to_tenant()?, v.usage.unwrap_or_default()))
    }

    /// `GET /v1/tenants` with `filter` (and `?include=usage`).
    async fn list_views(&self, filter: TenantFilter, with_usage: bool) -> Result<TenantList> {
        let admin = self.admin();
        let mut query = Vec::new();
        if with_usage {
            query.push(("include", "usage"));
        }
        if let Some(s) = filter.status {
            query.push(("status", s.as_str()));
        }
        if let Some(p) = filter.plan {
            query.push(("plan", p.as_str()));
        }
        self.client
            .call(Method::GET, &["v1", "tenants"], Auth::Admin(&admin))
            .query(&query)
            .send_json()
            .await
    }

    /// Entries of the admin log, or of `tenant`'s (`GET /v1/audit`), oldest
    /// first: the newest `limit` that pass the filters.
    pub async fn audit(
        &self,
        tenant: Option<&TenantId>,
        filter: &tenancy_core::audit::Filter,
        limit: Option<u64>,
    ) -> Result<AuditList> {
        let admin = self.admin();
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(t) = tenant {
            query.push(("tenant", t.to_string()));
        }
        if let Some(since) = filter.since {
            query.push((
                "since",
                since.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ));
        }
        if let Some(a) = &filter.action {
            query.push(("action", a.clone()));
        }
        if let Some(n) = limit {
            query.push(("limit", n.to_string()));
        }
        self.client
            .call(Method::GET, &["v1", "audit"], Auth::Admin(&admin))
            .query(&query)
            .send_json()
            .await
    }

    /// The head of the admin log, or of `tenant`'s (`GET /v1/audit/head`).
    pub async fn audit_head(&self, tenant: Option<&TenantId>) -> Result<AuditHeadView> {
        let admin = self.admin();
        let query: Vec<(&str, String)> = tenant
            .map(|t| ("tenant", t.to_string()))
            .into_iter()
            .collect();
        self.client
            .call(Method::GET, &["v1", "audit", "head"], Auth::Admin(&admin))
            .query(&query)
            .send_json()
            .await
    }

    /// Verifies the admin log, or `tenant`'s, against `head` if given
    /// (`GET /v1/audit/verify`).
    pub async fn audit_verify(
        &self,
        tenant: Option<&TenantId>,
        head: Option<&tenancy_core::audit::Head>,
    ) -> Result<AuditVerificationView> {
        let admin = self.admin();
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(t) = tenant {
            query.push(("tenant", t.to_string()));
        }
        if let Some(h) = head {
            query.push(("head", h.to_string()));
        }
        self.client
            .call(Method::GET, &["v1", "audit", "verify"], Auth::Admin(&admin))
            .query(&query)
            .send_json()
            .await
    }

    /// A tenant's usage against its limits (`GET /v1/tenants/{id}/stats`).
    pub async fn stats(&self, id: &TenantId) -> Result<StatsView> {
        self.admin_json(Method::GET, &["v1", "tenants", id.as_str(), "stats"], None)
            .await
    }

    /// A tenant's held locks, sorted by key (`GET /v1/tenants/{id}/locks`).
    pub async fn tenant_locks(&self, id: &TenantId) -> Result<Vec<LockInfo>> {
        let list: LockList = self
            .admin_json(Method::GET, &["v1", "tenants", id.as_str(), "locks"], None)
            .await?;
        list.locks.into_iter().map(LockInfo::try_from).collect()
    }

    /// Force-unlocks `key` of tenant `id` held by `lock_id` (`NotFound`
    /// when it is not held, `Precondition` when another lock id holds it).
    pub async fn force_unlock_tenant_lock(
        &self,
        id: &TenantId,
        key: &LockKey,
        lock_id: LockId,
    ) -> Result<()> {
        let admin = self.admin();
        self.client
            .call(
                Method::DELETE,
                &["v1", "tenants", id.as_str(), "locks", key.as_str()],
                Auth::Admin(&admin),
            )
            .query(&[("lock_id", lock_id.to_string())])
            .send_empty()
            .await
    }

    async fn admin_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let admin = self.admin();
        let call = self.client.call(method, path, Auth::Admin(&admin));
        let call = match &body {
            Some(b) => call.json(b),
            None => call,
        };
        call.send_json().await
    }

    async fn admin_empty(
        &self,
        method: Method,
        path: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let admin = self.admin();
        let call = self.client.call(method, path, Auth::Admin(&admin));
        let call = match &body {
            Some(b) => call.json(b),
            None => call,
        };
        call.send_empty().await
    }

    async fn tenant_view(
        &self,
        method: Method,
        path: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<Tenant> {
        let view: TenantView = self.admin_json(method, path, body).await?;
        view.to_tenant()
    }

    fn created(view: TenantWithSecret) -> Result<CreatedTenant> {
        Ok(CreatedTenant {
            tenant: view.tenant.to_tenant()?,
            secret: Secret::new(view.secret),
        })
    }

    /// The tenant a secret belongs to, through the tenant layer.
    /// The tenant and the named key (`None`: the primary secret) a secret
    /// authenticates as: `GET /v1/tenant` and `GET /v1/keys/current`.
    async fn identify(&self, secret: &Secret) -> Result<(TenantId, Option<ApiKey>)> {
        // A session token opens tenant routes too, but is no secret.
        if parse_session_token(secret.expose()).is_some() {
            return Err(Error::unauthorized("invalid credentials"));
        }
        let tenant = self.client.tenant(TenantCredential::Secret {
            secret: secret.clone(),
            tenant: None,
        });
        let (me, key) = futures::join!(tenant.me(), tenant.current_key());
        Ok((TenantId::new(me?.id)?, key?))
    }

    /// The tenant whose primary secret `secret` is (a named key is refused).
    async fn key_owner(&self, secret: &Secret) -> Result<TenantId> {
        match self.identify(secret).await? {
            (id, None) => Ok(id),
            (_, Some(_)) => Err(Error::unauthorized("invalid credentials")),
        }
    }

    fn keys_routes<'a>(
        &'a self,
        id: &'a TenantId,
        admin: &'a Secret,
    ) -> super::keys::KeyRoutes<'a> {
        super::keys::KeyRoutes {
            client: &self.client,
            base: vec!["v1", "tenants", id.as_str(), "keys"],
            auth: Auth::Admin(admin),
        }
    }

    fn reservation_path<'a>(r: &'a Reservation, id: &'a str, action: &'a str) -> [&'a str; 6] {
        [
            "v1",
            "tenants",
            r.tenant.as_str(),
            "reservations",
            id,
            action,
        ]
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(format!("cannot encode the request: {e}")))
}

#[async_trait]
impl TenantRegistry for HttpRegistry {
    async fn is_bootstrapped(&self) -> Result<bool> {
        Err(Error::not_implemented(NO_BOOTSTRAP))
    }

    async fn bootstrap(&self, _admin_password: &Secret) -> Result<()> {
        Err(Error::not_implemented(NO_BOOTSTRAP))
    }

    async fn admin_generation(&self) -> Result<u64> {
        let info: AdminCredentialInfo = self
            .admin_json(Method::GET, &["v1", "admin", "credential"], None)
            .await?;
        Ok(info.generation)
    }

    async fn set_admin_password(&self, new: &Secret) -> Result<u64> {
        let body = json(&NewAdminCredential {
            token: new.expose().to_string(),
        })?;
        let changed: AdminCredentialChanged = self
            .admin_json(Method::PUT, &["v1", "admin", "credential"], Some(body))
            .await?;
        let mut admin = self.admin.write().unwrap_or_else(|p| p.into_inner());
        if parse_session_token(admin.expose()).is_none() {
            *admin = new.clone();
        }
        Ok(changed.generation)
    }

    async fn verify_admin(&self, password: &Secret) -> Result<()> {
        if parse_session_token(password.expose()).is_some() {
            return Err(Error::unauthorized("invalid admin credential"));
        }
        self.client
            .call(
                Method::GET,
                &["v1", "admin", "credential"],
                Auth::Admin(password),
            )
            .send_empty()
            .await
    }

    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        let body = CreateTenant {
            id: new.id.map(|id| id.to_string()),
            display_name: new.display_name,
            email: new.email,
            plan: Some(new.plan),
            limits: Some(new.limits),
            secret_prefix: new.secret_prefix,
            metadata: Some(new.metadata),
            expires_at: new.expires_at,
        };
        let created: TenantWithSecret = self
            .admin_json(Method::POST, &["v1", "tenants"], Some(json(&body)?))
            .await?;
        Self::created(created)
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        self.tenant_view(Method::GET, &["v1", "tenants", id.as_str()], None)
            .await
    }

    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        let fetch = async move {
            match self.list_views(filter, false).await {
                Ok(list) => stream::iter(list.tenants.into_iter().map(|v| v.to_tenant())).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        };
        stream::once(fetch).flatten().boxed()
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<Tenant> {
        let body = PatchTenant {
            display_name: update.display_name,
            email: update.email,
            plan: update.plan,
            limits: update.limits,
            metadata: update.metadata,
            expires_at: update.expires_at,
            expected_revision: update.expected_revision,
        };
        self.tenant_view(
            Method::PATCH,
            &["v1", "tenants", id.as_str()],
            Some(json(&body)?),
        )
        .await
    }

    async fn suspend(&self, id: &TenantId, reason: Option<String>) -> Result<Tenant> {
        let body = reason
            .map(|r| json(&Suspend { reason: Some(r) }))
            .transpose()?;
        self.tenant_view(
            Method::POST,
            &["v1", "tenants", id.as_str(), "suspend"],
            body,
        )
        .await
    }

    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        self.tenant_view(
            Method::POST,
            &["v1", "tenants", id.as_str(), "activate"],
            None,
        )
        .await
    }

    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        let rotated: TenantWithSecret = self
            .admin_json(
                Method::POST,
                &["v1", "tenants", id.as_str(), "rotate"],
                None,
            )
            .await?;
        Self::created(rotated)
    }

    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        self.tenant_view(Method::DELETE, &["v1", "tenants", id.as_str()], None)
            .await
    }

    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        let body = json(&PurgeTenant {
            grace_seconds: grace.as_secs(),
        })?;
        let purged: Purged = self
            .admin_json(
                Method::POST,
                &["v1", "tenants", id.as_str(), "purge"],
                Some(body),
            )
            .await?;
        Ok(purged.removed)
    }

    /// Through the tenant layer (`GET /v1/tenant` with the secret), then the
    /// tenant's record through the admin API. Another tenant's secret is
    /// `Unauthorized`, as a wrong one is.
    async fn authenticate(&self, id: &TenantId, secret: &Secret) -> Result<Tenant> {
        if &self.key_owner(secret).await? != id {
            return Err(Error::unauthorized("invalid credentials"));
        }
        self.get(id).await
    }

    async fn authenticate_key(&self, secret: &Secret) -> Result<Tenant> {
        let id = self.key_owner(secret).await?;
        self.get(&id).await
    }

    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        let stats: StatsView = self
            .admin_json(Method::GET, &["v1", "tenants", id.as_str(), "stats"], None)
            .await?;
        Ok(stats.usage)
    }

    async fn reserve(&self, id: &TenantId, resource: Resource, amount: u64) -> Result<Reservation> {
        let body = json(&ReserveQuota { resource, amount })?;
        self.admin_json(
            Method::POST,
            &["v1", "tenants", id.as_str(), "reservations"],
            Some(body),
        )
        .await
    }

    async fn commit(&self, reservation: &Reservation) -> Result<()> {
        let id = reservation.id.hyphenated().to_string();
        let body = json(&CommitReservation {
            reservation: reservation.clone(),
        })?;
        self.admin_empty(
            Method::POST,
            &Self::reservation_path(reservation, &id, "commit"),
            Some(body),
        )
        .await
    }

    async fn release(&self, reservation: &Reservation) -> Result<()> {
        let id = reservation.id.hyphenated().to_string();
        let body = json(&ReleaseReservation {
            reservation: reservation.clone(),
            event: None,
        })?;
        let _: Released = self
            .admin_json(
                Method::POST,
                &Self::reservation_path(reservation, &id, "release"),
                Some(body),
            )
            .await?;
        Ok(())
    }

    async fn record_usage(&self, id: &TenantId, event: UsageEvent) -> Result<Usage> {
        let body = json(&RecordUsage { event })?;
        self.admin_json(
            Method::POST,
            &["v1", "tenants", id.as_str(), "usage"],
            Some(body),
        )
        .await
    }

    async fn release_recording(
        &self,
        reservation: &Reservation,
        event: UsageEvent,
    ) -> Result<bool> {
        let id = reservation.id.hyphenated().to_string();
        let body = json(&ReleaseReservation {
            reservation: reservation.clone(),
            event: Some(event),
        })?;
        let released: Released = self
            .admin_json(
                Method::POST,
                &Self::reservation_path(reservation, &id, "release"),
                Some(body),
            )
            .await?;
        Ok(released.released)
    }

    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
        let list: ReservationList = self
            .admin_json(
                Method::GET,
                &["v1", "tenants", id.as_str(), "reservations"],
                None,
            )
            .await?;
        Ok(list.reservations)
    }

    async fn login_tenant(&self, id: &TenantId, secret: &Secret) -> Result<IssuedSession> {
        self.client.login_tenant(id, secret).await
    }

    async fn login_admin(&self, password: &Secret) -> Result<IssuedSession> {
        self.client.login_admin(password).await
    }

    /// `GET /v1/sessions/current` (or `/v1/admin/sessions/current`) with the
    /// token, then, for a tenant session, the tenant's record through the
    /// admin API.
    async fn authenticate_session(&self, token: &Secret) -> Result<AuthenticatedSession> {
        let Some((owner, _)) = parse_session_token(token.expose()) else {
            return Err(Error::unauthorized("invalid session token"));
        };
        let view: SessionView = match &owner {
            SessionOwner::Admin => {
                self.client
                    .call(
                        Method::GET,
                        &["v1", "admin", "sessions", "current"],
                        Auth::Admin(token),
                    )
                    .send_json()
                    .await?
            }
            SessionOwner::Tenant(_) => {
                let credential = TenantCredential::Session(token.clone());
                self.client
                    .call(
                        Method::GET,
                        &["v1", "sessions", "current"],
                        Auth::Tenant(&credential),
                    )
                    .send_json()
                    .await?
            }
        };
        let session = view.to_session()?;
        let (tenant, key) = match (session.owner(), &session.session.key) {
            (SessionOwner::Admin, _) => (None, None),
            (SessionOwner::Tenant(t), None) => (Some(self.get(&t).await?), None),
            (SessionOwner::Tenant(t), Some(k)) => {
                let (tenant, key) = futures::join!(self.get(&t), self.key(&t, k));
                (Some(tenant?), Some(key?))
            }
        };
        Ok(AuthenticatedSession {
            session,
            tenant,
            key,
        })
    }

    /// [`HttpRegistry::identify`], then the tenant's record through the admin API.
    async fn authenticate_caller(&self, id: Option<&TenantId>, secret: &Secret) -> Result<Caller> {
        let (owner, key) = self.identify(secret).await?;
        if id.is_some_and(|id| id != &owner) {
            return Err(Error::unauthorized("invalid credentials"));
        }
        Ok(Caller {
            tenant: self.get(&owner).await?,
            key,
        })
    }

    async fn create_key(&self, t: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
        let admin = self.admin();
        self.keys_routes(t, &admin).create(new).await
    }

    async fn keys(&self, t: &TenantId) -> Result<Vec<ApiKey>> {
        let admin = self.admin();
        self.keys_routes(t, &admin).list().await
    }

    async fn revoke_key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
        let admin = self.admin();
        self.keys_routes(t, &admin).revoke(id).await
    }

    async fn rotate_key(&self, t: &TenantId, id: &KeyId, grace: Duration) -> Result<RotatedApiKey> {
        let admin = self.admin();
        self.keys_routes(t, &admin).rotate(id, grace).await
    }

    /// The server records a key's use itself (at most once a minute) when
    /// the key makes a request; the admin API has no route for it.
    async fn touch_key(&self, t: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        let _ = (t, id, at);
        Err(Error::not_implemented(
            "a key's last use is recorded by the server when the key is used",
        ))
    }

    async fn sessions(&self, owner: &SessionOwner) -> Result<Vec<ServerSession>> {
        let list: SessionList = match owner {
            SessionOwner::Admin => {
                self.admin_json(Method::GET, &["v1", "admin", "sessions"], None)
                    .await?
            }
            SessionOwner::Tenant(t) => {
                self.admin_json(
                    Method::GET,
                    &["v1", "tenants", t.as_str(), "sessions"],
                    None,
                )
                .await?
            }
        };
        list.sessions.iter().map(SessionView::to_session).collect()
    }

    async fn revoke_session(&self, owner: &SessionOwner, id: &SessionId) -> Result<()> {
        match owner {
            SessionOwner::Admin => {
                self.admin_empty(
                    Method::DELETE,
                    &["v1", "admin", "sessions", id.as_str()],
                    None,
                )
                .await
            }
            SessionOwner::Tenant(t) => {
                self.admin_empty(
                    Method::DELETE,
                    &["v1", "tenants", t.as_str(), "sessions", id.as_str()],
                    None,
                )
                .await
            }
        }
    }
}
