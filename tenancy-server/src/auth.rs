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
//! # Named API keys
//!
//! A named key (`tenancy_core::apikey`) is presented like the secret and
//! cached the same way; a miss checks it with the registry's
//! `authenticate_caller` (the index entry, the tenant record and the key
//! set, one bcrypt) and the entry keeps the key's record. Then:
//!
//! - its expiry is checked on every request, against the clock;
//! - a revocation or rotation made through this server
//!   ([`TenantAuth::key_changed`], called by the watched registry) drops
//!   its entries (and those of sessions opened with it) or gives them the
//!   new `expires_at`, so a revoked key is never served from the cache; a
//!   refused key is remembered with its reason for `negative_ttl`;
//! - a stale entry re-reads the key with the tenant record (no bcrypt), so
//!   a change made elsewhere applies within the refresh interval;
//! - a rotation of the primary secret does not touch a key's entries (it
//!   ends sessions, also those opened with keys);
//! - `last_used_at` is marked when a key is verified or its entry refreshed
//!   (so within the refresh interval of its last use), and written at most
//!   once per key per minute per replica, in its own task (the registry
//!   writes nothing when the stored mark is that recent): the cache-hit
//!   path neither writes nor does any work for it;
//! - the rate-limit bucket is the tenant's, so all of its keys share it.
//!
//! The request's role (the key's, else owner) is in
//! [`AuthenticatedTenant::role`]; the role guard of the routes applies it.
//!
//! # Session tokens
//!
//! A tenant session token (`tns_<tenant>_<random>`, issued by `POST
//! /v1/sessions`, see `tenancy_core::session`) is accepted wherever a key
//! is, and cached the same way, by its SHA-256: a miss checks it with the
//! registry's `authenticate_session` (the session record and the tenant
//! record: two reads, no bcrypt) and binds the entry to the session's
//! credential generation and expiry. Then:
//!
//! - expiry is checked on every request (401 `session_expired`);
//! - a rotation made through this server drops the entry at once (401
//!   `credentials_rotated`), a suspension or deletion answers 403 at once,
//!   like keys;
//! - a revocation made through this server ([`TenantAuth::session_revoked`],
//!   called by the watched registry) drops the entry at once (401);
//! - a stale entry (older than the refresh interval) is checked again with
//!   `authenticate_session`, so a revocation, rotation or suspension made
//!   on another replica applies within the refresh interval.
//!
//! Refusals of a session are final (a revoked, expired or rotated session
//! never comes back), so they are remembered by digest for `negative_ttl`
//! with their reason. An admin session token is refused on tenant routes
//! with 403, and a tenant session on admin routes.
//!
//! # The admin token
//!
//! [`AdminAuth`] checks a bearer token of 8 to 72 bytes (others are refused
//! without bcrypt, never cut to 72) with bcrypt against the registry's one
//! admin credential, then trusts its digest for the admin cache TTL (default
//! 60 s) while the credential's generation stays the one it verified at: a
//! change made on any replica ends every cached token at its next request.
//! An admin session token (`tns_admin_<random>`, from `POST
//! /v1/admin/sessions`) is checked with `authenticate_session` (no bcrypt)
//! and trusted for the refresh interval, while the admin credential's
//! generation (read on every admin request) is the one it was opened with
//! and it has not expired; a revocation through this server applies at
//! once ([`AdminAuth::session_revoked`]), one made elsewhere within the
//! refresh interval.

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
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tenancy_core::apikey::LAST_USED_GRANULARITY;
use tenancy_core::session::parse_session_token;
use tenancy_core::{
    ApiKey, AuthenticatedSession, Caller, Clock, Error, KeyId, Role, Secret, SessionId,
    SessionKind, SessionOwner, SystemClock, Tenant, TenantId, TenantRegistry, TenantStatus,
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
    /// Set when the credential is a session token.
    session: Option<SessionMark>,
    /// Set when the credential is a named key or a session opened with one.
    key: Option<Arc<ApiKey>>,
}

/// What a cache entry of a session token knows of its session.
#[derive(Debug, Clone)]
struct SessionMark {
    id: SessionId,
    expires_at: DateTime<Utc>,
}

/// Why a remembered credential is refused.
#[derive(Debug, Clone)]
enum Refusal {
    /// A key that failed verification (or was rotated out).
    Invalid,
    /// A session token that opens no session (revoked, never issued).
    NoSession(String),
    /// A session that expired.
    Expired(DateTime<Utc>),
    /// A session opened before a rotation (or admin credential change).
    Rotated(String),
    /// A named key (or a session opened with one) whose key was revoked or
    /// expired: the message says which.
    KeyEnded(String),
}

impl Refusal {
    fn error(&self) -> ApiError {
        match self {
            Refusal::Invalid => ApiError::unauthorized("invalid credentials"),
            Refusal::NoSession(m) => ApiError::unauthorized(m.clone()),
            Refusal::Expired(at) => Error::SessionExpired { expired_at: *at }.into(),
            Refusal::Rotated(t) => Error::CredentialsRotated { tenant: t.clone() }.into(),
            Refusal::KeyEnded(m) => ApiError::unauthorized(m.clone()),
        }
    }

    /// The final refusal a session check ended with, if it is one.
    fn of_session(e: &Error) -> Option<Refusal> {
        match e {
            Error::Unauthorized { message } => Some(Refusal::NoSession(message.clone())),
            Error::SessionExpired { expired_at } => Some(Refusal::Expired(*expired_at)),
            Error::CredentialsRotated { tenant } => Some(Refusal::Rotated(tenant.clone())),
            _ => None,
        }
    }
}

/// The message of an `Unauthorized` refusal (without the "unauthorized:" of its `Display`).
fn unauthorized_message(e: Error) -> String {
    match e {
        Error::Unauthorized { message } => message,
        e => e.to_string(),
    }
}

const REVOKED: &str = "the session was revoked; log in again";

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
    negative: TtlMap<Digest32, Refusal>,
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
    /// When this replica last had a key's `last_used_at` written: at most
    /// once per key per [`LAST_USED_GRANULARITY`].
    touched: Mutex<HashMap<KeyId, Instant>>,
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
    session: Option<SessionId>,
    key: Option<Arc<ApiKey>>,
}

impl AuthenticatedTenant {
    /// The session the request was made with, when its credential is a
    /// session token (not the tenant's secret).
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

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

    /// The named key the request was made with (directly or through a
    /// session opened with it); `None` for the primary secret.
    pub fn key(&self) -> Option<&ApiKey> {
        self.key.as_deref()
    }

    /// What the request may do: its key's role, or owner.
    pub fn role(&self) -> Role {
        self.key.as_ref().map_or(Role::Owner, |k| k.role)
    }

    /// `403` naming the role needed when the request's is weaker.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        Ok(tenancy_core::apikey::require_role(
            self.role(),
            self.key(),
            needed,
        )?)
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

/// The admin credential or admin session token of `Authorization: Bearer`.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
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
        .ok_or_else(|| ApiError::unauthorized("invalid admin credentials"))
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
                touched: Mutex::new(HashMap::new()),
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
            // A named key does not hang on the primary secret; a session
            // (also one opened with a key) does.
            let named_key = e.key.is_some() && e.session.is_none();
            if e.generation != tenant.credential.generation && !named_key {
                superseded.push((*d, e.session.is_some()));
                return false;
            }
            e.tenant = fresh.clone();
            e.checked_at = now;
            e.limiter = limiter.clone();
            true
        });
        // A rotated-out key is refused without bcrypt from now on, and a
        // session opened before the rotation says so.
        for (d, session) in superseded {
            if session {
                self.remember(d, Refusal::Rotated(tenant.id.to_string()));
            } else {
                self.remember_failure(d);
            }
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

    /// Tells the cache that a tenant session was revoked: its entry goes,
    /// and its token is refused (401) from the next request on.
    pub fn session_revoked(&self, id: &SessionId) {
        let mut gone = Vec::new();
        let mut cache = self.write_cache();
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        cache.retain(|d, e| {
            let hit = e.session.as_ref().is_some_and(|m| &m.id == id);
            if hit {
                gone.push(*d);
            }
            !hit
        });
        for d in gone {
            self.remember(d, Refusal::NoSession(REVOKED.into()));
        }
        drop(cache);
    }

    /// Tells the cache that a named key changed (revoked, or rotated: a new
    /// `expires_at`): entries of a key that can no longer be used go and the
    /// key is refused (401) from the next request on; the others take the
    /// new record.
    pub fn key_changed(&self, key: &ApiKey) {
        let now = self.inner.clock.now();
        let fresh = Arc::new(key.clone());
        let ended = key.ensure_usable(now).err().map(unauthorized_message);
        let mut gone = Vec::new();
        let mut cache = self.write_cache();
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        cache.retain(|d, e| {
            if e.key.as_ref().is_none_or(|k| k.id != key.id) {
                return true;
            }
            if ended.is_some() {
                gone.push(*d);
                return false;
            }
            e.key = Some(fresh.clone());
            true
        });
        if let Some(message) = ended {
            for d in gone {
                self.remember(d, Refusal::KeyEnded(message.clone()));
            }
        }
        drop(cache);
    }

    /// Has the key's last use written, unless this replica did so within
    /// the granularity (the registry skips the write too when the stored
    /// mark is that recent). The write runs in its own task; a failure
    /// only leaves the mark older.
    fn touch(&self, tenant: &TenantId, key: &KeyId) {
        let granularity = LAST_USED_GRANULARITY;
        {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched
                .get(key)
                .is_some_and(|at| at.elapsed() < granularity)
            {
                return;
            }
            if touched.len() >= self.inner.config.capacity {
                touched.retain(|_, at| at.elapsed() < granularity);
            }
            touched.insert(key.clone(), Instant::now());
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (registry, tenant, key, at) = (
            self.inner.registry.clone(),
            tenant.clone(),
            key.clone(),
            self.inner.clock.now(),
        );
        handle.spawn(async move {
            if let Err(e) = registry.touch_key(&tenant, &key, at).await {
                tracing::debug!(tenant = %tenant, key = %key, error = %e, "could not record the key's last use");
            }
        });
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
        match parse_session_token(key) {
            Some((SessionOwner::Admin, _)) => {
                return Err(ApiError::forbidden(
                    "this is an admin session: tenant routes need a tenant secret or a tenant session (`tenancy login --tenant ID`)",
                )
                .into())
            }
            Some(_) => {}
            // Not a secret at all: refused before any cache, permit or store read.
            None if tenancy_core::credentials::is_mistyped(key) => {
                return Err(ApiError::unauthorized(
                    "the key's checksum does not match: it was mistyped or cut short",
                )
                .into());
            }
            None if tenancy_core::credentials::parse_secret(key).is_none() => {
                return Err(ApiError::unauthorized("invalid credentials").into());
            }
            None => {}
        }
        let d = digest(key);
        let entry = match self.lookup(&d) {
            Some(e) => e,
            None => self.verify(key, d).await?,
        };
        if let Some(mark) = &entry.session {
            if self.inner.clock.now() >= mark.expires_at {
                self.write_cache().remove(&d);
                let refusal = Refusal::Expired(mark.expires_at);
                self.remember(d, refusal.clone());
                return Err(refusal.error().into());
            }
        }
        // A key's expiry on every request, from the cached record (a revoked
        // key has no entry).
        if let Some(key) = entry.key.as_ref().filter(|k| k.expires_at.is_some()) {
            if let Err(e) = key.ensure_usable(self.inner.clock.now()) {
                self.write_cache().remove(&d);
                let refusal = Refusal::KeyEnded(unauthorized_message(e));
                self.remember(d, refusal.clone());
                return Err(refusal.error().into());
            }
        }
        let session = entry.session.map(|m| m.id);
        let key = entry.key;
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
            tenant: AuthenticatedTenant {
                tenant,
                session,
                key,
            },
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
        if let Some(refusal) = self.refusal(&d) {
            self.inner
                .stats
                .negative_hits
                .fetch_add(1, Ordering::Relaxed);
            return Err(refusal.error().into());
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
        if let Some(refusal) = self.refusal(&d) {
            return Err(refusal.error());
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
            if stale.session.is_some() {
                self.inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                return self.verify_session(key, d).await;
            }
            return self.refresh(d, stale).await;
        }
        if parse_session_token(key).is_some() {
            self.inner
                .stats
                .verifications
                .fetch_add(1, Ordering::Relaxed);
            return self.verify_session(key, d).await;
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
        let outcome = self.inner.registry.authenticate_caller(None, &secret).await;
        match outcome {
            Ok(Caller { tenant, key }) => self.settle(d, tenant, key.map(Arc::new), started).await,
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

    /// Checks a session token with the registry (no bcrypt) and caches it;
    /// also how a stale session entry is refreshed, so a revocation made
    /// elsewhere is seen.
    async fn verify_session(&self, token: &str, d: Digest32) -> Result<Entry, ApiError> {
        let secret = Secret::new(token);
        let mut started = self.epoch();
        let mut outcome = self.inner.registry.authenticate_session(&secret).await;
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let auth = match outcome {
                Ok(a) => a,
                Err(e) => return Err(self.session_refused(d, e, started)),
            };
            let (tenant, mark, key) = session_parts(auth)?;
            if let Some(k) = &key {
                self.touch(&tenant.id, &k.id);
            }
            if let Some(entry) =
                self.insert_unless_changed(d, &tenant, started, Some(mark.clone()), key.clone())
            {
                return Ok(entry);
            }
            // A tenant change or revocation arrived meanwhile: check again.
            started = self.epoch();
            outcome = self.inner.registry.authenticate_session(&secret).await;
        }
        // Sessions keep changing: answer from the last check, cache nothing.
        let (tenant, mark, key) =
            session_parts(outcome.map_err(|e| self.session_refused(d, e, started))?)?;
        Ok(self.entry(tenant, Some(mark), key))
    }

    /// The answer to a failed session check; final refusals are remembered.
    fn session_refused(&self, d: Digest32, e: Error, started: u64) -> ApiError {
        self.write_cache().remove(&d);
        if let Some(refusal) = Refusal::of_session(&e) {
            self.remember(d, refusal);
        } else if let Error::Forbidden { message } = &e {
            let cache = self.write_cache();
            if self.epoch() == started {
                self.inner.forbidden.insert(d, message.clone());
            }
            drop(cache);
        }
        e.into()
    }

    /// Re-reads the tenant record of a stale entry (no bcrypt).
    async fn refresh(&self, d: Digest32, stale: Entry) -> Result<Entry, ApiError> {
        self.inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let started = self.epoch();
        let key = match &stale.key {
            None => None,
            // A named key: its record is read again too (revoked or expired
            // elsewhere shows here).
            Some(k) => match self.inner.registry.key(&stale.tenant.id, &k.id).await {
                Ok(k) => match k.ensure_usable(self.inner.clock.now()) {
                    Ok(()) => Some(Arc::new(k)),
                    Err(e) => {
                        self.write_cache().remove(&d);
                        let refusal = Refusal::KeyEnded(unauthorized_message(e));
                        self.remember(d, refusal.clone());
                        return Err(refusal.error());
                    }
                },
                Err(Error::NotFound { .. }) => {
                    self.write_cache().remove(&d);
                    self.remember_failure(d);
                    return Err(ApiError::unauthorized("invalid credentials"));
                }
                Err(e) => return Err(e.into()),
            },
        };
        match self.inner.registry.get(&stale.tenant.id).await {
            Ok(t) if t.credential.generation == stale.generation || key.is_some() => {
                self.settle(d, t, key, started).await
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
        key: Option<Arc<ApiKey>>,
        mut started: u64,
    ) -> Result<Entry, ApiError> {
        // A verified or refreshed key was used now: its last-use mark is
        // due at most once a minute (so the cache-hit path writes nothing
        // and does no extra work for it).
        if let Some(k) = &key {
            self.touch(&tenant.id, &k.id);
        }
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            if let Some(entry) = self.insert_unless_changed(d, &tenant, started, None, key.clone())
            {
                return Ok(entry);
            }
            started = self.epoch();
            let generation = tenant.credential.generation;
            tenant = match self.inner.registry.get(&tenant.id).await {
                // A named key does not depend on the primary secret's generation.
                Ok(t) if t.credential.generation == generation || key.is_some() => t,
                Ok(_) | Err(Error::NotFound { .. }) => {
                    self.write_cache().remove(&d);
                    self.remember_failure(d);
                    return Err(ApiError::unauthorized("invalid credentials"));
                }
                Err(e) => return Err(e.into()),
            };
        }
        // Tenants keep changing: answer from the fresh record, cache nothing.
        Ok(self.entry(tenant, None, key))
    }

    fn entry(
        &self,
        tenant: Tenant,
        session: Option<SessionMark>,
        key: Option<Arc<ApiKey>>,
    ) -> Entry {
        let limiter = self.inner.limits.bucket(&tenant.id, &tenant.limits());
        Entry {
            generation: tenant.credential.generation,
            tenant: Arc::new(tenant),
            checked_at: Instant::now(),
            limiter,
            session,
            key,
        }
    }

    /// Inserts the entry if the epoch is still `started` (checked under the
    /// write lock that tenant changes take to bump it).
    fn insert_unless_changed(
        &self,
        d: Digest32,
        tenant: &Tenant,
        started: u64,
        session: Option<SessionMark>,
        key: Option<Arc<ApiKey>>,
    ) -> Option<Entry> {
        let entry = self.entry(tenant.clone(), session, key);
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

    fn refusal(&self, d: &Digest32) -> Option<Refusal> {
        self.inner.negative.get(d)
    }

    fn remember_failure(&self, d: Digest32) {
        self.remember(d, Refusal::Invalid);
    }

    fn remember(&self, d: Digest32, refusal: Refusal) {
        self.inner.negative.insert(d, refusal);
    }
}

/// The tenant and the cache's view of a tenant session that checked out.
type SessionParts = (Tenant, SessionMark, Option<Arc<ApiKey>>);

fn session_parts(auth: AuthenticatedSession) -> Result<SessionParts, ApiError> {
    let mark = SessionMark {
        id: auth.session.id,
        expires_at: auth.session.session.expires_at,
    };
    let key = auth.key.map(Arc::new);
    match auth.tenant {
        Some(t) => Ok((t, mark, key)),
        // The registry checked an admin session: never a tenant's.
        None => Err(ApiError::forbidden(
            "this is an admin session: tenant routes need a tenant secret or a tenant session",
        )),
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
                    // The request's log lines name the tenant from here on
                    // (a no-op outside the server's request span).
                    tracing::Span::current().record("tenant", tenant.id().as_str());
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
/// every cached admin token at the next request. Admin session tokens are
/// accepted too (see the module docs).
#[derive(Debug, Clone)]
pub struct AdminAuth {
    inner: Arc<AdminInner>,
}

/// Who passed the admin check: the admin credential itself, or an admin
/// session. The admin guard puts it into the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct AdminCaller {
    session: Option<SessionId>,
}

impl AdminCaller {
    /// The admin session of the request, when its credential is a session
    /// token (not the admin credential).
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }
}

/// What the admin check knows of a verified admin session.
#[derive(Debug, Clone)]
struct AdminSession {
    id: SessionId,
    generation: u64,
    expires_at: DateTime<Utc>,
}

struct AdminInner {
    registry: Arc<dyn TenantRegistry>,
    clock: Arc<dyn Clock>,
    /// Digest -> the admin credential generation it verified against.
    verified: TtlMap<Digest32, u64>,
    /// Digest -> the generation it failed against.
    failed: TtlMap<Digest32, u64>,
    /// Admin session tokens, trusted for the refresh interval.
    sessions: TtlMap<Digest32, AdminSession>,
    /// Admin session tokens refused for good (revoked, expired, rotated).
    refused: TtlMap<Digest32, Refusal>,
    /// Owned by each check's task until its bcrypt finishes.
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for AdminInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("ttl", &self.verified.ttl())
            .field("session_refresh", &self.sessions.ttl())
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Checks admin tokens against the registry's admin credential; a
    /// verified token is trusted for `ttl` (while the credential's
    /// generation stays) before bcrypt runs again. Admin sessions are
    /// checked again every 5 s, against the system clock.
    pub fn new(registry: Arc<dyn TenantRegistry>, ttl: Duration) -> Self {
        Self::with_sessions(
            registry,
            ttl,
            AuthConfig::default().refresh_interval,
            Arc::new(SystemClock),
        )
    }

    /// Like [`AdminAuth::new`], with the interval after which an admin
    /// session is checked again with the registry (the bound for a
    /// revocation made on another replica) and the clock its expiry is
    /// read from.
    pub fn with_sessions(
        registry: Arc<dyn TenantRegistry>,
        ttl: Duration,
        session_refresh: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AdminAuth {
            inner: Arc::new(AdminInner {
                registry,
                clock,
                verified: TtlMap::new(ttl, 1024),
                failed: TtlMap::new(ttl, 10_000),
                sessions: TtlMap::new(session_refresh, 10_000),
                refused: TtlMap::new(AuthConfig::default().negative_ttl, 10_000),
                permits: Arc::new(Semaphore::new(2)),
            }),
        }
    }

    /// Forgets every verified and failed token and every admin session
    /// (the credential changed).
    pub fn forget_all(&self) {
        self.inner.verified.clear();
        self.inner.failed.clear();
        self.inner.sessions.clear();
    }

    /// Tells the check that an admin session was revoked: its token is
    /// refused (401) from the next request on.
    pub fn session_revoked(&self, id: &SessionId) {
        for d in self.inner.sessions.remove_where(|_, s| &s.id == id) {
            self.inner
                .refused
                .insert(d, Refusal::NoSession(REVOKED.into()));
        }
    }

    /// Checks the `Authorization: Bearer` token of a request.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.authorize(headers).await.map(|_| ())
    }

    /// Checks the `Authorization: Bearer` token of a request and says
    /// whether it was the admin credential or an admin session.
    pub async fn authorize(&self, headers: &HeaderMap) -> Result<AdminCaller, ApiError> {
        let token = bearer_token(headers)?;
        match parse_session_token(token) {
            Some((SessionOwner::Admin, _)) => return self.check_session(token).await,
            Some(_) => {
                return Err(ApiError::forbidden(
                    "this is a tenant session: admin routes need the admin credential or an admin session (`tenancy admin login`)",
                ))
            }
            None => {}
        }
        // Outside 8..=72 bytes no admin credential can match: refused
        // without bcrypt, and never truncated to a matching prefix.
        if !ADMIN_PASSWORD_BYTES.contains(&token.len()) {
            return Err(ApiError::unauthorized("invalid admin credentials"));
        }
        let d = digest(token);
        let current = self.inner.registry.admin_generation().await?;
        if self.inner.verified.get(&d) == Some(current) {
            return Ok(AdminCaller::default());
        }
        if self.inner.failed.get(&d) == Some(current) {
            return Err(ApiError::unauthorized("invalid admin credentials"));
        }
        let this = self.clone();
        let secret = Secret::new(token);
        bounded(&self.inner.permits, async move {
            this.verify(secret, d, current).await
        })
        .await?;
        Ok(AdminCaller::default())
    }

    async fn check_session(&self, token: &str) -> Result<AdminCaller, ApiError> {
        let d = digest(token);
        if let Some(refusal) = self.inner.refused.get(&d) {
            return Err(refusal.error());
        }
        let current = self.inner.registry.admin_generation().await?;
        let now = self.inner.clock.now();
        if let Some(known) = self.inner.sessions.get(&d) {
            let refusal = if known.generation != current {
                Refusal::Rotated("admin".into())
            } else if now >= known.expires_at {
                Refusal::Expired(known.expires_at)
            } else {
                return Ok(AdminCaller {
                    session: Some(known.id),
                });
            };
            self.inner.sessions.remove_where(|k, _| k == &d);
            self.inner.refused.insert(d, refusal.clone());
            return Err(refusal.error());
        }
        match self
            .inner
            .registry
            .authenticate_session(&Secret::new(token))
            .await
        {
            Ok(auth) => match auth.session.session.kind {
                SessionKind::Admin { generation } => {
                    let id = auth.session.id;
                    self.inner.sessions.insert(
                        d,
                        AdminSession {
                            id: id.clone(),
                            generation,
                            expires_at: auth.session.session.expires_at,
                        },
                    );
                    Ok(AdminCaller { session: Some(id) })
                }
                SessionKind::Tenant { .. } => Err(ApiError::forbidden(
                    "this is a tenant session: admin routes need the admin credential or an admin session",
                )),
            },
            Err(e) => {
                if let Some(refusal) = Refusal::of_session(&e) {
                    self.inner.refused.insert(d, refusal);
                }
                Err(e.into())
            }
        }
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
