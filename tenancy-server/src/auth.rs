//! Authentication: the tenant middleware (a reusable tower [`Layer`]) with its
//! verification cache, and the admin bearer-token check.
//!
//! # The tenant verification cache
//!
//! A presented key (`X-API-Key: <secret>` or `Authorization: Bearer <secret>`,
//! at most 512 bytes) that is not shaped like a secret is refused at once
//! (no cache, permit or read). Otherwise it is hashed with SHA-256; the
//! digest is the cache key, so the secret itself is never kept. On a miss
//! the registry's `authenticate_key` resolves the key to its tenant through
//! the key's lookup id (one read, no scan; a lookup id that names no tenant
//! is refused there without bcrypt) and checks it with bcrypt on the
//! blocking pool, one verification per key at a time (concurrent requests
//! with the same key wait for it) and at most `max_concurrent_verifications`
//! (default 2 x cores) at once. Each verification runs in its own task that
//! owns its permit, so a request that is abandoned (client gone, timeout)
//! cannot free the bound while its bcrypt still runs. The entry then binds the digest to the tenant's
//! credential **generation** and keeps the tenant record it was checked
//! against. Later requests with the same key cost one SHA-256 and one map
//! lookup; bcrypt never runs on that path.
//!
//! - The entry's tenant record gives the status on every request, and
//!   expiry is checked against the clock on every request.
//! - **No revocation is lost to a race.** Every tenant change this server
//!   learns of bumps an epoch under the cache's write lock; a verification
//!   or refresh notes the epoch before it reads the record and caches its
//!   result only if the epoch is unchanged, else it re-reads the record (no
//!   bcrypt) first. So a suspend, rotate or delete that returns while a
//!   cold-cache verification of that tenant is in flight applies to the
//!   very next request.
//! - Rotation, suspension, activation, updates and deletion made through
//!   this server call [`TenantAuth::tenant_changed`], which updates every
//!   entry of the tenant at once: a rotated key (older generation) is
//!   dropped and answers 401 on the very next request; a suspended or
//!   deleted tenant answers 403. Handlers get the registry wrapped by
//!   [`TenantAuth::watching`], which makes that call after every change
//!   made through it, so no route or embedder can forget it.
//! - Changes made elsewhere (another replica, the CLI) are seen within the
//!   **refresh interval** (default 5 s, [`AuthConfig::refresh_interval`]):
//!   an entry older than that re-reads the tenant record (one small read,
//!   no bcrypt) before it is used again; another generation means the key
//!   was rotated (401, remembered as failed), a missing record 401, else
//!   the entry is renewed with the new record.
//! - Keys that failed verification are remembered (by digest) for
//!   `negative_ttl` (default 60 s), so a flood of one bad key does not buy a
//!   bcrypt per request. A valid key of a suspended, expired or deleted
//!   tenant met on a cold cache is answered 403 without bcrypt for one
//!   refresh interval (any tenant change made through this server forgets
//!   these at once).
//!
//! # The admin token
//!
//! [`AdminAuth`] checks a bearer token of 8 to 72 bytes (others are refused
//! without bcrypt, never cut to 72) with bcrypt against the registry's one
//! admin credential, then trusts its digest for the admin cache TTL (default
//! 60 s) while the credential's generation stays the one it verified at: a
//! change made on any replica ends every cached token at its next request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tenancy_core::{
    Clock, Error, Secret, SystemClock, Tenant, TenantId, TenantRegistry, TenantStatus,
};
use tenancy_state::registry::ADMIN_PASSWORD_BYTES;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::ratelimit::{RateInfo, RateLimits, TenantLimiter};
use crate::ttl::TtlMap;

/// The header carrying a tenant's API key.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";
/// The optional header naming the tenant; it must match the key's tenant.
pub(crate) const TENANT_ID_HEADER: &str = "x-tenant-id";
/// The longest credential accepted (anything longer is refused unhashed).
pub(crate) const MAX_CREDENTIAL_LEN: usize = 512;

/// Tuning of the tenant verification cache.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// How old a cache entry may get before the tenant record is re-read
    /// (the bound for changes made by other replicas). Default 5 s.
    pub refresh_interval: Duration,
    /// How long a key that failed verification is refused without bcrypt. Default 60 s.
    pub negative_ttl: Duration,
    /// The most cached keys; beyond it, stale entries and then arbitrary ones are dropped.
    pub capacity: usize,
    /// The most bcrypt verifications running at once.
    pub max_concurrent_verifications: usize,
    /// Whether the layer applies the tenant's request rate limit.
    pub rate_limit: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            refresh_interval: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(60),
            capacity: 100_000,
            max_concurrent_verifications: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4),
            rate_limit: true,
        }
    }
}

type Digest32 = [u8; 32];

#[derive(Debug, Clone)]
struct Entry {
    tenant: Arc<Tenant>,
    generation: u64,
    checked_at: Instant,
    limiter: Arc<TenantLimiter>,
}

/// Counters of the verification cache (for tests, benches and `/metrics`).
/// Cache hits are not counted (a shared counter would cost every request a
/// contended atomic): they are the tenant requests less these.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Cache entries refreshed by re-reading the tenant record.
    pub refreshes: AtomicU64,
    /// Well-formed keys checked through the registry (cache misses); one
    /// whose lookup id names no tenant is refused there without bcrypt.
    pub verifications: AtomicU64,
    /// Requests refused from the caches of failed keys and forbidden tenants.
    pub negative_hits: AtomicU64,
}

struct AuthInner {
    registry: Arc<dyn TenantRegistry>,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
    cache: RwLock<HashMap<Digest32, Entry>>,
    negative: TtlMap<Digest32, ()>,
    /// Valid keys of tenants that may not work (suspended, expired, deleted)
    /// seen on a cold cache: refused with 403 without bcrypt for one refresh
    /// interval; emptied by any tenant change made through this server.
    forbidden: TtlMap<Digest32, String>,
    inflight: Mutex<HashMap<Digest32, Arc<tokio::sync::Mutex<()>>>>,
    /// The verification pool's bound. A verification owns its permit until
    /// its bcrypt finishes, even when the request that started it is gone.
    permits: Arc<Semaphore>,
    /// Bumped (under the cache's write lock) by every tenant change this
    /// server learns of; a verification that saw another epoch when it
    /// started does not cache what it read before the change.
    epoch: AtomicU64,
    limits: RateLimits,
    stats: AuthStats,
}

impl std::fmt::Debug for AuthInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cache's contents: digests of live keys stay in memory only.
        f.debug_struct("TenantAuth")
            .field("config", &self.config)
            .field(
                "cached_keys",
                &self.cache.read().map(|c| c.len()).unwrap_or(0),
            )
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The authenticated tenant of a request, put into the request's extensions
/// by [`TenantAuthLayer`]. Handlers take it as an extractor.
#[derive(Debug, Clone)]
pub struct AuthenticatedTenant {
    tenant: Arc<Tenant>,
}

impl AuthenticatedTenant {
    /// The tenant record the request was authorized against.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The tenant record, shared.
    pub fn tenant_arc(&self) -> Arc<Tenant> {
        self.tenant.clone()
    }

    /// The tenant id.
    pub fn id(&self) -> &TenantId {
        &self.tenant.id
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthenticatedTenant>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("this route needs a tenant credential"))
    }
}

/// The tenant of an answered request, put into the response's extensions
/// (read by the metrics layer for its `tenant` label).
#[derive(Debug, Clone)]
pub(crate) struct TenantLabel(pub Arc<Tenant>);

impl TenantLabel {
    /// The tenant id.
    pub(crate) fn id(&self) -> &TenantId {
        &self.0.id
    }
}

/// Tenant authentication with its verification cache and rate limits.
/// Cheap to clone; clones share the cache.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    inner: Arc<AuthInner>,
}

fn digest(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

/// A presented tenant credential: the key, and the user of HTTP Basic auth
/// (the tenant id the client claims, checked like `X-Tenant-ID`).
#[derive(Debug)]
pub(crate) struct Presented<'a> {
    /// The secret (or key) itself.
    pub(crate) key: std::borrow::Cow<'a, str>,
    /// The Basic auth user name, if the key came that way.
    pub(crate) user: Option<String>,
}

/// Reads the presented tenant key from `X-API-Key`, `Authorization: Bearer`
/// or `Authorization: Basic` (user: the tenant id, password: the secret; the
/// way Terraform's and OpenTofu's `http` backend authenticate).
pub(crate) fn presented_key(headers: &HeaderMap) -> Result<Presented<'_>, ApiError> {
    let invalid = || ApiError::unauthorized("invalid credentials");
    let (raw, user): (Option<std::borrow::Cow<'_, str>>, Option<String>) = if let Some(v) =
        headers.get(API_KEY_HEADER)
    {
        (v.to_str().ok().map(Into::into), None)
    } else if let Some(v) = headers.get(AUTHORIZATION) {
        match v.to_str().ok().and_then(|s| s.trim().split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                (Some(token.into()), None)
            }
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => {
                let (user, password) = basic_credentials(encoded.trim()).ok_or_else(invalid)?;
                (Some(password.into()), Some(user))
            }
            _ => (None, None),
        }
    } else {
        return Err(ApiError::unauthorized(
                "missing credentials: send X-API-Key, Authorization: Bearer, or HTTP Basic auth (tenant id and secret)",
            ));
    };
    match raw {
        Some(k) if !k.trim().is_empty() && k.trim().len() <= MAX_CREDENTIAL_LEN => {
            let key = match k {
                std::borrow::Cow::Borrowed(b) => std::borrow::Cow::Borrowed(b.trim()),
                std::borrow::Cow::Owned(o) => std::borrow::Cow::Owned(o.trim().to_string()),
            };
            Ok(Presented { key, user })
        }
        _ => Err(invalid()),
    }
}

/// Decodes the `user:password` of a Basic credential (RFC 7617); `None` when
/// it is not base64 of UTF-8 with a `:`, or longer than any credential.
fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    if encoded.len() > 4 * MAX_CREDENTIAL_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The optional `X-Tenant-ID`: more than one is a 400 (which one would count?).
fn claimed_tenant(headers: &HeaderMap) -> Result<Option<&axum::http::HeaderValue>, ApiError> {
    let mut given = headers.get_all(TENANT_ID_HEADER).iter();
    match (given.next(), given.next()) {
        (claimed, None) => Ok(claimed),
        (_, Some(_)) => Err(ApiError::bad_request(
            "X-Tenant-ID is given more than once; send it once, or not at all",
        )),
    }
}

impl TenantAuth {
    /// Tenant authentication against `registry` with the default configuration.
    pub fn new(registry: Arc<dyn TenantRegistry>) -> Self {
        Self::with_config(registry, AuthConfig::default(), Arc::new(SystemClock))
    }

    /// Tenant authentication with a configuration and a clock (for expiry).
    pub fn with_config(
        registry: Arc<dyn TenantRegistry>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_verifications.max(1)));
        TenantAuth {
            inner: Arc::new(AuthInner {
                registry,
                clock,
                negative: TtlMap::new(config.negative_ttl, config.capacity),
                forbidden: TtlMap::new(config.refresh_interval, config.capacity),
                config,
                cache: RwLock::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                permits,
                epoch: AtomicU64::new(0),
                limits: RateLimits::new(),
                stats: AuthStats::default(),
            }),
        }
    }

    /// The tower layer that authenticates every request it wraps.
    pub fn layer(&self) -> TenantAuthLayer {
        TenantAuthLayer { auth: self.clone() }
    }

    /// The cache's counters.
    pub fn stats(&self) -> &AuthStats {
        &self.inner.stats
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The number of cached keys.
    pub fn cached_keys(&self) -> usize {
        self.read_cache().len()
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Digest32, Entry>> {
        self.inner.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Digest32, Entry>> {
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// `registry`, telling this cache about every tenant change made
    /// through it ([`TenantAuth::tenant_changed`]), so none can be
    /// forgotten. [`crate::AppState`] hands this to its handlers.
    pub fn watching(&self, registry: Arc<dyn TenantRegistry>) -> Arc<dyn TenantRegistry> {
        Arc::new(crate::watched::Watched::new(registry, self.clone()))
    }

    /// Tells the cache that `tenant` changed (rotation, suspension,
    /// activation, update, deletion): entries of an older credential
    /// generation are dropped, the others take the new record. Takes effect
    /// on the next request.
    pub fn tenant_changed(&self, tenant: &Tenant) {
        let now = Instant::now();
        let fresh = Arc::new(tenant.clone());
        let limiter = self.inner.limits.bucket(&tenant.id, &tenant.limits());
        let mut superseded = Vec::new();
        let mut cache = self.write_cache();
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        cache.retain(|d, e| {
            if e.tenant.id != tenant.id {
                return true;
            }
            if e.generation != tenant.credential.generation {
                superseded.push(*d);
                return false;
            }
            e.tenant = fresh.clone();
            e.checked_at = now;
            e.limiter = limiter.clone();
            true
        });
        // A rotated-out key is refused without bcrypt from now on.
        for d in superseded {
            self.remember_failure(d);
        }
        self.clear_forbidden();
        drop(cache);
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    fn clear_forbidden(&self) {
        self.inner.forbidden.clear();
    }

    /// The refusal remembered for a valid key of a tenant that may not work.
    fn forbidden_cached(&self, d: &Digest32) -> Option<String> {
        self.inner.forbidden.get(d)
    }

    /// Drops every cached key of a tenant.
    pub fn forget_tenant(&self, id: &TenantId) {
        let mut cache = self.write_cache();
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        cache.retain(|_, e| &e.tenant.id != id);
        self.inner.limits.forget(id);
        self.clear_forbidden();
        drop(cache);
    }

    /// Authenticates the credential in `headers` and applies the tenant's
    /// rate limit. On success returns the tenant and the rate-limit state.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Authorized, Refused> {
        let claimed = claimed_tenant(headers)?;
        let presented = presented_key(headers)?;
        let key: &str = &presented.key;
        // Not a secret at all: refused before any cache, permit or store read.
        if tenancy_core::credentials::parse_secret(key).is_none() {
            return Err(ApiError::unauthorized("invalid credentials").into());
        }
        let d = digest(key);
        let entry = match self.lookup(&d) {
            Some(e) => e,
            None => self.verify(key, d).await?,
        };
        let tenant = entry.tenant;
        if tenant.status != TenantStatus::Active || tenant.expires_at.is_some() {
            let status = tenant.effective_status(self.inner.clock.now());
            if status != TenantStatus::Active {
                return Err(
                    ApiError::forbidden(format!("tenant {} is {status}", tenant.id)).into(),
                );
            }
        }
        if let Some(claimed) = claimed {
            if claimed.as_bytes() != tenant.id.as_str().as_bytes() {
                return Err(ApiError::forbidden(
                    "X-Tenant-ID does not match the tenant of the credential",
                )
                .into());
            }
        }
        // The Basic auth user is part of the credential: a secret sent with
        // another tenant's id is refused like a wrong secret.
        if let Some(user) = presented.user.as_deref().filter(|u| !u.is_empty()) {
            if user != tenant.id.as_str() {
                return Err(ApiError::unauthorized("invalid credentials").into());
            }
        }
        let rate = if self.inner.config.rate_limit {
            let info = entry.limiter.check();
            if let Some(wait) = info.retry_after {
                let error = ApiError::rate_limited(wait).with_message(format!(
                    "tenant {} is over its rate of {} requests per second; retry later",
                    tenant.id,
                    tenant.limits().requests_per_second
                ));
                return Err(Refused {
                    error,
                    rate: Some(info),
                });
            }
            Some(info)
        } else {
            None
        };
        Ok(Authorized {
            tenant: AuthenticatedTenant { tenant },
            rate,
        })
    }

    /// A fresh cache entry for `d`, or `None` (missing or stale).
    fn lookup(&self, d: &Digest32) -> Option<Entry> {
        let cache = self.read_cache();
        let e = cache.get(d)?;
        if e.checked_at.elapsed() < self.inner.config.refresh_interval {
            Some(e.clone())
        } else {
            None
        }
    }

    async fn verify(&self, key: &str, d: Digest32) -> Result<Entry, Refused> {
        if self.negatively_cached(&d) {
            self.inner
                .stats
                .negative_hits
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unauthorized("invalid credentials").into());
        }
        // One verification per key at a time: concurrent requests with the
        // same key wait for the first and then read its cache entry.
        let gate = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            inflight.entry(d).or_default().clone()
        };
        // The gate entry goes when this future ends, however it ends: a
        // client that disconnects or a request timeout drops the future, and
        // the map must not keep one entry per abandoned key.
        let _forget = ForgetInflight {
            inflight: &self.inner.inflight,
            digest: d,
        };
        let _turn = gate.lock().await;
        self.verify_locked(key, d).await.map_err(Refused::from)
    }

    async fn verify_locked(&self, key: &str, d: Digest32) -> Result<Entry, ApiError> {
        if let Some(e) = self.lookup(&d) {
            return Ok(e);
        }
        if self.negatively_cached(&d) {
            return Err(ApiError::unauthorized("invalid credentials"));
        }
        if let Some(message) = self.forbidden_cached(&d) {
            self.inner
                .stats
                .negative_hits
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::forbidden(message));
        }
        let stale = self.read_cache().get(&d).cloned();
        if let Some(stale) = stale {
            return self.refresh(d, stale).await;
        }
        // Its result still reaches the cache if the request is gone.
        let this = self.clone();
        let secret = Secret::new(key);
        bounded(&self.inner.permits, async move {
            this.verify_key(secret, d).await
        })
        .await
    }

    /// One bcrypt verification of a key that is in no cache.
    async fn verify_key(&self, secret: Secret, d: Digest32) -> Result<Entry, ApiError> {
        self.inner
            .stats
            .verifications
            .fetch_add(1, Ordering::Relaxed);
        let started = self.epoch();
        // bcrypt runs on the registry's BlockingRunner (the server wires
        // TokioBlocking), so this await keeps the async workers free.
        let outcome = self.inner.registry.authenticate_key(&secret).await;
        match outcome {
            Ok(tenant) => self.settle(d, tenant, started).await,
            Err(Error::Unauthorized { .. })
            | Err(Error::CredentialsRotated { .. })
            | Err(Error::InvalidInput { .. })
            | Err(Error::NotFound { .. }) => {
                self.remember_failure(d);
                Err(ApiError::unauthorized("invalid credentials"))
            }
            Err(Error::Forbidden { message }) => {
                // Remembered only if no tenant changed meanwhile (an
                // activation must not be hidden for a refresh interval).
                let cache = self.write_cache();
                if self.epoch() == started {
                    self.inner.forbidden.insert(d, message.clone());
                }
                drop(cache);
                Err(ApiError::forbidden(message))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Re-reads the tenant record of a stale entry (no bcrypt).
    async fn refresh(&self, d: Digest32, stale: Entry) -> Result<Entry, ApiError> {
        self.inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let started = self.epoch();
        match self.inner.registry.get(&stale.tenant.id).await {
            Ok(t) if t.credential.generation == stale.generation => {
                self.settle(d, t, started).await
            }
            Ok(_) | Err(Error::NotFound { .. }) => {
                self.write_cache().remove(&d);
                self.remember_failure(d);
                Err(ApiError::unauthorized("invalid credentials"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Caches `tenant` (read while the epoch was `started`) for `d`, unless
    /// a tenant change arrived since: then the record may predate a
    /// suspension, rotation or deletion, so it is read again (no bcrypt)
    /// and only a record read in an unchanged epoch is cached.
    async fn settle(
        &self,
        d: Digest32,
        mut tenant: Tenant,
        mut started: u64,
    ) -> Result<Entry, ApiError> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            if let Some(entry) = self.insert_unless_changed(d, &tenant, started) {
                return Ok(entry);
            }
            started = self.epoch();
            let generation = tenant.credential.generation;
            tenant = match self.inner.registry.get(&tenant.id).await {
                Ok(t) if t.credential.generation == generation => t,
                Ok(_) | Err(Error::NotFound { .. }) => {
                    self.write_cache().remove(&d);
                    self.remember_failure(d);
                    return Err(ApiError::unauthorized("invalid credentials"));
                }
                Err(e) => return Err(e.into()),
            };
        }
        // Tenants keep changing: answer from the fresh record, cache nothing.
        Ok(self.entry(tenant))
    }

    fn entry(&self, tenant: Tenant) -> Entry {
        let limiter = self.inner.limits.bucket(&tenant.id, &tenant.limits());
        Entry {
            generation: tenant.credential.generation,
            tenant: Arc::new(tenant),
            checked_at: Instant::now(),
            limiter,
        }
    }

    /// Inserts the entry if the epoch is still `started` (checked under the
    /// write lock that tenant changes take to bump it).
    fn insert_unless_changed(&self, d: Digest32, tenant: &Tenant, started: u64) -> Option<Entry> {
        let entry = self.entry(tenant.clone());
        let mut cache = self.write_cache();
        if self.epoch() != started {
            return None;
        }
        if cache.len() >= self.inner.config.capacity && !cache.contains_key(&d) {
            let refresh = self.inner.config.refresh_interval;
            cache.retain(|_, e| e.checked_at.elapsed() < refresh);
            if cache.len() >= self.inner.config.capacity {
                if let Some(victim) = cache.keys().next().copied() {
                    cache.remove(&victim);
                }
            }
        }
        cache.insert(d, entry.clone());
        Some(entry)
    }

    fn negatively_cached(&self, d: &Digest32) -> bool {
        self.inner.negative.contains(d)
    }

    fn remember_failure(&self, d: Digest32) {
        self.inner.negative.insert(d, ());
    }
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The tenant.
    pub tenant: AuthenticatedTenant,
    /// The rate-limit state after this request, when rate limiting is on.
    pub rate: Option<RateInfo>,
}

/// A refused request: the error, and the rate-limit state when the refusal is a 429.
#[derive(Debug)]
pub struct Refused {
    /// The error.
    pub error: ApiError,
    /// The rate-limit state, for the `x-ratelimit-*` headers.
    pub rate: Option<RateInfo>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused { error, rate: None }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut res = self.error.into_response();
        if let Some(rate) = self.rate {
            rate.write_headers(res.headers_mut());
        }
        res
    }
}

/// The tower layer of [`TenantAuth`]: authenticates each request, refuses
/// with a JSON 401/403/429, else puts an [`AuthenticatedTenant`] into the
/// request's extensions and the `x-ratelimit-*` headers on the response.
#[derive(Debug, Clone)]
pub struct TenantAuthLayer {
    auth: TenantAuth,
}

impl TenantAuthLayer {
    /// A layer over `auth`.
    pub fn new(auth: TenantAuth) -> Self {
        TenantAuthLayer { auth }
    }
}

impl<S> Layer<S> for TenantAuthLayer {
    type Service = TenantAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantAuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// The service made by [`TenantAuthLayer`].
#[derive(Debug, Clone)]
pub struct TenantAuthService<S> {
    auth: TenantAuth,
    inner: S,
}

impl<S> Service<Request> for TenantAuthService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match auth.authenticate(req.headers()).await {
                Ok(Authorized { tenant, rate }) => {
                    let label = TenantLabel(tenant.tenant_arc());
                    req.extensions_mut().insert(tenant);
                    let mut res = inner.call(req).await?;
                    if let Some(rate) = rate {
                        rate.write_headers(res.headers_mut());
                    }
                    res.extensions_mut().insert(label);
                    Ok(res)
                }
                Err(refused) => Ok(refused.into_response()),
            }
        })
    }
}

/// The admin credential check: a bearer token verified with bcrypt against
/// the registry's one admin credential, then trusted by SHA-256 digest for
/// the cache TTL, but only while the credential's generation is the one it
/// was verified at (one small read of the manifest per admin request), so
/// `PUT /v1/admin/credential` or `tenancy admin passwd` on any replica ends
/// every cached admin token at the next request.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    registry: Arc<dyn TenantRegistry>,
    /// Digest -> the admin credential generation it verified against.
    verified: TtlMap<Digest32, u64>,
    /// Digest -> the generation it failed against.
    failed: TtlMap<Digest32, u64>,
    /// Owned by each check's task until its bcrypt finishes.
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for AdminInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("ttl", &self.verified.ttl())
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Checks admin tokens against the registry's admin credential; a
    /// verified token is trusted for `ttl` (while the credential's
    /// generation stays) before bcrypt runs again.
    pub fn new(registry: Arc<dyn TenantRegistry>, ttl: Duration) -> Self {
        AdminAuth {
            inner: Arc::new(AdminInner {
                registry,
                verified: TtlMap::new(ttl, 1024),
                failed: TtlMap::new(ttl, 10_000),
                permits: Arc::new(Semaphore::new(2)),
            }),
        }
    }

    /// Forgets every verified and failed token (the credential changed).
    pub fn forget_all(&self) {
        self.inner.verified.clear();
        self.inner.failed.clear();
    }

    /// Checks the `Authorization: Bearer` token of a request.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing admin credentials: send Authorization: Bearer <admin token>",
                )
            })?
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            // Outside 8..=72 bytes no admin credential can match: refused
            // without bcrypt, and never truncated to a matching prefix.
            .filter(|t| ADMIN_PASSWORD_BYTES.contains(&t.len()))
            .ok_or_else(|| ApiError::unauthorized("invalid admin credentials"))?;
        let d = digest(token);
        let current = self.inner.registry.admin_generation().await?;
        if self.inner.verified.get(&d) == Some(current) {
            return Ok(());
        }
        if self.inner.failed.get(&d) == Some(current) {
            return Err(ApiError::unauthorized("invalid admin credentials"));
        }
        let this = self.clone();
        let secret = Secret::new(token);
        bounded(&self.inner.permits, async move {
            this.verify(secret, d, current).await
        })
        .await
    }

    async fn verify(&self, secret: Secret, d: Digest32, generation: u64) -> Result<(), ApiError> {
        match self.inner.registry.verify_admin(&secret).await {
            Ok(()) => {
                self.inner.verified.insert(d, generation);
                Ok(())
            }
            Err(Error::Unauthorized { .. }) => {
                self.inner.failed.insert(d, generation);
                Err(ApiError::unauthorized("invalid admin credentials"))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs a bcrypt-bound `job` within `permits`, in its own task that owns
/// its permit until the job ends: a request that is dropped (client gone,
/// timeout) stops waiting, but the job still counts against the bound
/// until its bcrypt finishes. Waiting for a permit is abandoned with the
/// request.
async fn bounded<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    job: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal())?;
    tokio::spawn(async move {
        let _permit = permit;
        job.await
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// Removes a key's verification gate from the in-flight map when dropped.
struct ForgetInflight<'a> {
    inflight: &'a Mutex<HashMap<Digest32, Arc<tokio::sync::Mutex<()>>>>,
    digest: Digest32,
}

impl Drop for ForgetInflight<'_> {
    fn drop(&mut self) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.digest);
    }
}
