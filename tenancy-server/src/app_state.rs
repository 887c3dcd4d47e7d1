//! [`AppState`]: what every handler shares, all behind trait objects
//! (`TenantRegistry`, `StateBackend`, `LockManager`, `Clock`), so the router
//! runs on memory, local files or S3 alike.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tenancy_core::{
    Clock, LockManager, Result, StateBackend, SystemClock, Tenant, TenantId, TenantRegistry, Usage,
};
use tenancy_lock::{LimitedLocks, StoreLockManager, TenantLocks};
use tenancy_state::TenantScoped;

use crate::auth::{AdminAuth, AuthConfig, TenantAuth};
use crate::metrics::Metrics;

/// Where a tenant's state and locks live. The server never touches another
/// tenant's prefix: every tenant route works on what this returns.
pub trait TenantStores: Send + Sync + Debug {
    /// The tenant's state, scoped to `tenants/<id>/<version>/`.
    fn state(&self, tenant: &Tenant) -> Result<Arc<dyn StateBackend>>;
    /// The tenant's locks, namespaced to `tenant:<id>:` ([`SharedStores`]
    /// also limits them to the tenant's `max_locks`).
    fn locks(&self, tenant: &Tenant) -> Result<Arc<dyn LockManager>>;
    /// How many locks the tenant holds through [`TenantStores::locks`], as
    /// counted against its `max_locks` (shown as `Usage::locks_held`). The
    /// default, for stores that do not count locks, is 0.
    fn locks_held<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<u64>> {
        let _ = tenant;
        Box::pin(async { Ok(0) })
    }
}

/// The usual [`TenantStores`]: one shared backend, each tenant confined to
/// its state root by [`TenantScoped`], and one shared lock manager with each
/// tenant confined to `tenant:<id>:` by [`TenantLocks`] and held to its
/// `max_locks` by [`LimitedLocks`] (counted in `locks-held/<id>.json` on the
/// backend; the protocol is in `tenancy_lock`'s `limit` module), so every
/// route that takes a lock through [`TenantStores::locks`] is counted.
#[derive(Debug, Clone)]
pub struct SharedStores {
    backend: Arc<dyn StateBackend>,
    locks: Arc<dyn LockManager>,
    /// Whether `locks` is the default store lock manager (rebuilt by `with_clock`).
    default_locks: bool,
    clock: Arc<dyn Clock>,
}

/// A tenant's locks as [`SharedStores`] hands them out.
type Limited = LimitedLocks<TenantLocks<Arc<dyn LockManager>>, Arc<dyn StateBackend>>;

impl SharedStores {
    /// State on `backend`, locks stored on the same backend (`locks/...`).
    pub fn new(backend: Arc<dyn StateBackend>) -> Self {
        let locks: Arc<dyn LockManager> = Arc::new(StoreLockManager::new(backend.clone()));
        SharedStores {
            backend,
            locks,
            default_locks: true,
            clock: Arc::new(SystemClock),
        }
    }

    /// State on `backend`, locks on `locks` (counted on `backend`).
    pub fn with_locks(backend: Arc<dyn StateBackend>, locks: Arc<dyn LockManager>) -> Self {
        SharedStores {
            backend,
            locks,
            default_locks: false,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads lock expiry from `clock` (tests pass a `ManualClock`): the
    /// default lock manager's and the locks-held count's. A manager given to
    /// [`SharedStores::with_locks`] keeps its own clock: give it this one.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if self.default_locks {
            self.locks =
                Arc::new(StoreLockManager::new(self.backend.clone()).with_clock(clock.clone()));
        }
        self.clock = clock;
        self
    }

    fn limited(&self, tenant: &Tenant) -> Result<Limited> {
        let view = TenantLocks::new(self.locks.clone(), tenant.id.clone());
        Ok(LimitedLocks::new(
            view,
            self.backend.clone(),
            tenant.id.clone(),
            tenant.limits().max_locks,
        )?
        .with_clock(self.clock.clone()))
    }
}

impl TenantStores for SharedStores {
    fn state(&self, tenant: &Tenant) -> Result<Arc<dyn StateBackend>> {
        Ok(Arc::new(TenantScoped::for_tenant(
            self.backend.clone(),
            tenant,
        )?))
    }

    fn locks(&self, tenant: &Tenant) -> Result<Arc<dyn LockManager>> {
        Ok(Arc::new(self.limited(tenant)?))
    }

    fn locks_held<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.limited(tenant)?.held().await })
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest request body, in bytes (larger gets 413). Default 1 MiB.
    pub body_limit: usize,
    /// How long a request may take before it is answered 503. Default 30 s.
    pub request_timeout: Duration,
    /// The tenant verification cache.
    pub auth: AuthConfig,
    /// How long a verified admin token is trusted before bcrypt runs again. Default 60 s.
    pub admin_cache_ttl: Duration,
    /// How often `/metrics` re-counts the tenants. Default 15 s.
    pub tenant_count_interval: Duration,
    /// The most keys one state listing returns. Default 10 000.
    pub max_list: usize,
    /// How long `GET /v1/tenant` may show a tenant's usage before re-reading
    /// it. Changes made through this replica show at once. Default 1 s.
    pub usage_cache_ttl: Duration,
    /// How often every tenant's jobs and workers are reconciled with its
    /// quota reservations (also at start and when a quota is refused).
    /// Default 60 s.
    pub reconcile_interval: Duration,
    /// How old a half-done job or worker step must be before the reconciler
    /// finishes or undoes it (operations in flight are younger). Default 60 s.
    pub reconcile_grace: Duration,
    /// The lease of a lock taken through the stack routes (Terraform never
    /// renews; every save made under the lock extends it again). Default 1 h.
    pub stack_lock_ttl: Duration,
    /// The largest stack state document a save accepts, in bytes (larger
    /// gets 413). Default 32 MiB.
    pub stack_body_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            auth: AuthConfig::default(),
            admin_cache_ttl: Duration::from_secs(60),
            tenant_count_interval: Duration::from_secs(15),
            max_list: 10_000,
            usage_cache_ttl: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(60),
            reconcile_grace: crate::jobs::DEFAULT_RECONCILE_GRACE,
            stack_lock_ttl: crate::routes::stacks::DEFAULT_STACK_LOCK_TTL,
            stack_body_limit: crate::routes::stacks::DEFAULT_STACK_BODY_LIMIT,
        }
    }
}

/// Recently read usage counters, so that `GET /v1/tenant` costs no read on
/// its hot path. Entries live `usage_cache_ttl`; this replica's own job and
/// worker changes drop the tenant's entry before they answer.
#[derive(Debug)]
pub struct UsageCache {
    ttl: Duration,
    map: RwLock<HashMap<TenantId, UsageEntry>>,
    /// Bumped by every invalidation: a read that began before one is not kept.
    epoch: AtomicU64,
}

#[derive(Debug)]
struct UsageEntry {
    at: Instant,
    usage: Usage,
    /// The rendered `GET /v1/tenant` body, for the tenant record it was made from.
    body: Option<(Arc<Tenant>, Bytes)>,
}

/// Entries kept before the cache is emptied.
const USAGE_CACHE_CAPACITY: usize = 100_000;

impl UsageCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        UsageCache {
            ttl,
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The epoch to pass to [`UsageCache::put`] and [`UsageCache::set_body`]:
    /// take it before reading.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The tenant's usage, if read within the TTL.
    pub fn get(&self, id: &TenantId) -> Option<Usage> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|e| e.at.elapsed() < self.ttl)
            .map(|e| e.usage.clone())
    }

    /// The rendered body made for exactly this tenant record, if still fresh.
    pub fn body(&self, tenant: &Arc<Tenant>) -> Option<Bytes> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let e = map.get(&tenant.id)?;
        match &e.body {
            Some((t, bytes)) if Arc::ptr_eq(t, tenant) && e.at.elapsed() < self.ttl => {
                Some(bytes.clone())
            }
            _ => None,
        }
    }

    /// Keeps the rendered body of a fresh entry, unless an invalidation came
    /// after `epoch`.
    pub fn set_body(&self, tenant: &Arc<Tenant>, body: Bytes, epoch: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch() != epoch {
            return;
        }
        if let Some(e) = map.get_mut(&tenant.id) {
            e.body = Some((tenant.clone(), body));
        }
    }

    /// Remembers a read that began at `epoch`, unless an invalidation came since.
    pub fn put(&self, id: &TenantId, usage: Usage, epoch: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch() != epoch {
            return;
        }
        if map.len() >= USAGE_CACHE_CAPACITY && !map.contains_key(id) {
            map.clear();
        }
        map.insert(
            id.clone(),
            UsageEntry {
                at: Instant::now(),
                usage,
                body: None,
            },
        );
    }

    /// Forgets the tenant's entry (its usage just changed).
    pub fn invalidate(&self, id: &TenantId) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.remove(id);
    }
}

/// The server's audited registry (see `tenancy_state::audited`).
pub(crate) type AuditedRegistry = tenancy_state::audited::Audited<Arc<dyn TenantRegistry>>;

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn TenantRegistry>,
    audit: Option<AuditedRegistry>,
    stores: Arc<dyn TenantStores>,
    auth: TenantAuth,
    admin: AdminAuth,
    metrics: Arc<Metrics>,
    usage: UsageCache,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
}

/// The state shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// Builds an [`AppState`].
#[derive(Debug)]
pub struct AppStateBuilder {
    registry: Arc<dyn TenantRegistry>,
    stores: Arc<dyn TenantStores>,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn StateBackend>>,
}

impl AppStateBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock (tests move a manual clock to expire tenants).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps the audit trail on `backend` (the registry's store): every
    /// change made through the server appends an entry (`GET /v1/audit`).
    /// Without it the server keeps none and the audit routes answer 501.
    pub fn audit(mut self, backend: Arc<dyn StateBackend>) -> Self {
        self.audit = Some(backend);
        self
    }

    /// The state: everything set above is resolved here, whatever the order
    /// of the setters. The admin credential is the registry's, only.
    pub fn build(self) -> Result<AppState> {
        let auth = TenantAuth::with_config(
            self.registry.clone(),
            self.config.auth.clone(),
            self.clock.clone(),
        );
        let ttl = self.config.admin_cache_ttl;
        let admin = AdminAuth::with_sessions(
            self.registry.clone(),
            ttl,
            self.config.auth.refresh_interval,
            self.clock.clone(),
        );
        // Handlers change tenants and revoke sessions through this one:
        // every change reaches this replica's caches at once.
        let watched: Arc<dyn TenantRegistry> = Arc::new(
            crate::watched::Watched::new(self.registry, auth.clone()).with_admin(admin.clone()),
        );
        let metrics = Arc::new(Metrics::new(self.config.tenant_count_interval));
        // Outside the watched registry: a change reaches the caches first,
        // then the trail. The default view is the server itself; handlers
        // act through per-request views (`routes::audit::Audit`).
        let audit = self.audit.map(|backend| {
            crate::routes::audit::audited(watched.clone(), backend, self.clock.clone(), &metrics)
        });
        let registry: Arc<dyn TenantRegistry> = match &audit {
            Some(a) => Arc::new(a.clone()),
            None => watched,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                metrics,
                usage: UsageCache::new(self.config.usage_cache_ttl),
                registry,
                audit,
                stores: self.stores,
                auth,
                admin,
                clock: self.clock,
                config: self.config,
            }),
        })
    }
}

impl AppState {
    /// A builder over a registry and the tenants' stores.
    pub fn builder(
        registry: Arc<dyn TenantRegistry>,
        stores: Arc<dyn TenantStores>,
    ) -> AppStateBuilder {
        AppStateBuilder {
            registry,
            stores,
            config: ServerConfig::default(),
            clock: Arc::new(SystemClock),
            audit: None,
        }
    }

    /// The audited registry, when the server keeps an audit trail.
    pub(crate) fn audit(&self) -> Option<&AuditedRegistry> {
        self.inner.audit.as_ref()
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn TenantRegistry> {
        &self.inner.registry
    }

    /// The tenants' stores.
    pub fn stores(&self) -> &Arc<dyn TenantStores> {
        &self.inner.stores
    }

    /// The tenant authentication (its layer, cache and counters).
    pub fn auth(&self) -> &TenantAuth {
        &self.inner.auth
    }

    /// The admin authentication.
    pub fn admin(&self) -> &AdminAuth {
        &self.inner.admin
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The usage cache of `GET /v1/tenant`.
    pub fn usage_cache(&self) -> &UsageCache {
        &self.inner.usage
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The tenant's usage: the registry's counters and the locks it holds
    /// (from [`TenantStores::locks_held`]). Every usage the server shows
    /// comes from here.
    pub(crate) async fn usage(&self, tenant: &Tenant) -> Result<Usage> {
        let mut usage = self.registry().usage(&tenant.id).await?;
        usage.locks_held = self.stores().locks_held(tenant).await?;
        Ok(usage)
    }

    /// The jobs and workers of `tenant`, on its scoped state (the one
    /// place the routes and the reconciler get a job store from).
    pub(crate) fn jobs(&self, tenant: &Tenant) -> Result<crate::jobs::JobStore> {
        self.jobs_through(tenant, self.registry().clone())
    }

    /// [`AppState::jobs`] with its quota reservations made through
    /// `registry` (a request's audited view, so a refusal names the caller).
    pub(crate) fn jobs_through(
        &self,
        tenant: &Tenant,
        registry: Arc<dyn TenantRegistry>,
    ) -> Result<crate::jobs::JobStore> {
        Ok(crate::jobs::JobStore::new(
            self.stores().state(tenant)?,
            registry,
            tenant.id.clone(),
            self.clock().clone(),
        )
        .with_grace(self.config().reconcile_grace))
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}
