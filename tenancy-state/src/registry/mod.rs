//! `StoreRegistry`: the [`TenantRegistry`] stored as YAML objects on any
//! [`StateBackend`].
//!
//! # Layout
//!
//! All keys are relative to the backend's root (see `layout.rs`):
//!
//! ```text
//! tenants.yaml                         manifest: format version, created/updated,
//!                                      default state version, admin bcrypt hash + generation
//! registry/<id>.yaml                   one tenant record per tenant (nothing else lives here,
//!                                      so `list` reads exactly one key per tenant)
//! registry-keys/<lookup-id>.yaml       API-key index: lookup id of a secret or named key -> tenant id (+ key id)
//! registry-apikeys/<id>.yaml           the tenant's named API keys (roles, expiry, bcrypt hashes; `keys.rs`)
//! registry-usage/<id>.yaml             usage record (counters, pending and committed reservations)
//! registry-sessions/admin/<sid>.yaml   server-issued admin sessions (token SHA-256, generation, expiry)
//! registry-sessions/tenants/<id>/<sid>.yaml   a tenant's server-issued sessions (`sessions.rs`)
//! tenants/<id>/tenant.yaml             tenant-readable config (environments, regions, policies)
//! tenants/<id>/v1/layout.yaml          marker written on create: the state root exists
//! archive/<id>/<YYYYMMDDTHHMMSSZ>/...  state moved here by delete
//! ```
//!
//! Records, index, usage and sessions sit outside `tenants/<id>/`, so a
//! tenant that can write its own prefix can change neither its limits, its
//! usage, its key nor a session.
//! The stored records (`records.rs`) are private to this crate: callers get
//! core's [`Tenant`], which carries no hash and no lookup id.
//!
//! # Stored format and caching
//!
//! Records are YAML through `serde_yaml_ng` (the maintained fork of the
//! deprecated `serde_yaml`); usage records, rewritten by every reservation,
//! are JSON (`usage.rs`). The registry answers nothing from memory: every
//! call reads the store, so CLI users and server replicas sharing one store
//! see each other's writes at once. The one thing it remembers is the usage
//! record it wrote last per tenant, where its next quota write starts
//! instead of reading the record; that write is conditional on the
//! remembered version, so a record someone else changed is read and
//! decided on afresh (`last_written.rs`).
//!
//! # Writes (`writes.rs`)
//!
//! Every write is a compare-and-swap: [`PutMode::Create`] for new objects
//! (manifest, record, index entry, usage record, tenant config, marker),
//! [`PutMode::Update`] with the version just read otherwise. Read-modify-writes
//! that are safe to repeat (an update without an expected revision, suspend,
//! activate, rotate, delete's status change, a quota reservation, the admin
//! hash, an archive copy) go through core's
//! [`StateBackendExt::update_with`], which retries a lost race after a
//! jittered backoff (`Backoff::cas`: 1 ms doubling to 50 ms, at most 200
//! attempts) slept through the registry's [`Clock`]. A race that is not safe
//! to repeat comes back as [`Error::AlreadyExists`] (two creates of one id:
//! exactly one wins) or [`Error::Precondition`] (a stale
//! `expected_revision`). Every record write bumps `revision`.
//!
//! # Half-created tenants
//!
//! `create` writes the index entry, the record, `tenants/<id>/tenant.yaml`,
//! the state marker and, last, the usage record; the secret is shown only
//! after all of them. A create killed after the record leaves a tenant
//! whose secret nobody ever saw: it cannot be used, and it would block its
//! id for good. Such a tenant is **rolled back, not finished**: finishing
//! it would keep a tenant nobody holds a secret for (the admin would have
//! to find it and rotate it), while the admin who saw `init` fail simply
//! runs it again. So the next `create` of that id takes the record over
//! (a compare-and-swap on the version it read: of two creates exactly one
//! wins), rewrites the config, deletes the old index entry and goes on as
//! a fresh create; the caller gets a new secret. A record counts as
//! half-created only when nothing can have used it: revision 1 and status
//! active as written, created more than [`HALF_CREATED_GRACE`] ago (a
//! create in flight is never taken over), no usage record, its config or
//! marker missing, and no other object below `tenants/<id>/` (a tenant
//! with state is never half-created). A create killed after the marker
//! leaves only the usage record missing, which every usage read treats as
//! empty; `tenancy doctor` reports that tenant as incomplete and `--repair`
//! writes what is missing. `tenancy doctor --repair` also rolls back a
//! half-created tenant nobody re-creates (the record deleted by version, so
//! only on backends with conditional delete; see `doctor.rs`).
//!
//! # Secrets and API-key lookup (`secrets.rs`)
//!
//! Secrets (`<prefix>_<32 base62>`) are returned once; the record keeps the
//! bcrypt hash (cost from `with_bcrypt_cost`, default 10), the prefix, the
//! generation (1 on create, +1 per rotation), the rotation count and time,
//! and the lookup id.
//!
//! - `authenticate(id, secret)`: the record and the manifest's dummy hash
//!   are read side by side (the dummy once per process), then one bcrypt
//!   verify: against the record's hash, or against the dummy when the id
//!   names no tenant. The dummy hash is written at bootstrap at the cost of
//!   the records (older manifests use the admin hash, of the same cost), so
//!   an unknown id costs what a wrong secret costs, even in a one-shot
//!   process configured with another cost, and gets the same
//!   [`Error::Unauthorized`]. The status is checked only after the secret
//!   verified: [`Error::Forbidden`] for a suspended, expired or deleted
//!   tenant.
//! - `authenticate_key(secret)`: a presented secret alone resolves to its
//!   tenant with two reads and one bcrypt verify, never a scan:
//!   `credentials::lookup_id(secret)` (the first 128 bits of its SHA-256,
//!   hex) names the index object `registry-keys/<lookup-id>.yaml`, which
//!   holds the tenant id; the tenant's record is then read, its stored
//!   lookup id compared in constant time, and the secret verified against
//!   the record's bcrypt hash. The lookup id is not secret: the secret has
//!   about 190 random bits, so knowing the SHA-256 prefix does not help to
//!   guess it, and the bcrypt hash is still checked. A key that is
//!   malformed, whose lookup id has no index entry, or whose entry no
//!   longer matches its record is refused with **no bcrypt at all**: the
//!   lookup id comes from the key, so the early answer tells the sender
//!   nothing it did not already know, and junk keys cannot buy CPU.
//! - The index is written (Create) before the record on create and rotate,
//!   and the old index object is deleted after a rotation, so a crash
//!   leaves at worst a dangling index object that no longer matches its
//!   record and is ignored.
//! - bcrypt runs inline by default (core has no runtime); a server passes a
//!   [`BlockingRunner`] with [`StoreRegistry::with_blocking`] so a verify
//!   never stalls its executor. A runner that drops a job makes the verify
//!   fail, never pass.
//!
//! # Lifecycle
//!
//! Transitions follow `TenantStatus::can_transition_to` on the *effective*
//! status (`Tenant::effective_status`: active or suspended past `expires_at`
//! reads `expired` in get, list and authenticate). Activating or suspending
//! an expired tenant clears `expires_at`; `create` and `update` refuse an
//! `expires_at` that is not in the future.
//!
//! # Delete and purge (`archive.rs`), quotas (`usage.rs`)
//!
//! Delete is soft: the record says `deleted`, then every object under
//! `tenants/<id>/` is copied to `archive/<id>/<deleted_at>/` and the source
//! deleted; running delete again resumes an interrupted move, and with
//! nothing left to move it is [`Error::Precondition`]. Purge keeps the
//! record (ids are never reused). Quotas are reservations on
//! `registry-usage/<id>.yaml`, see `usage.rs`.
//!
//! # Damaged records
//!
//! A record that does not decode (or names another tenant) gives
//! [`Error::Corrupt`] for that tenant only: `list` yields it as an `Err`
//! item and goes on with the others; `TenantRegistryExt::list_all` stops at
//! the first error, `list_partial` returns the readable tenants and the
//! errors.

mod archive;
mod keys;
mod last_written;
pub(crate) mod layout;
pub(crate) mod records;
mod secrets;
pub mod sessions;
mod usage;
mod writes;

pub(crate) use writes::decode_manifest as writes_decode_manifest;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tenancy_core::credentials::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};
use tenancy_core::quota::DEFAULT_RESERVATION_TTL;
use tenancy_core::{
    ApiKey, AuthenticatedSession, Caller, Clock, CreatedApiKey, CreatedTenant, Error,
    IssuedSession, KeyId, ListedReservation, NewApiKey, NewTenant, Reservation, Resource, Result,
    Retry, RotatedApiKey, Secret, ServerSession, SessionId, SessionOwner, StateBackend,
    SystemClock, Tenant, TenantFilter, TenantId, TenantRegistry, TenantUpdate, Usage, UsageEvent,
};

#[cfg(doc)]
use tenancy_core::{PutMode, StateBackendExt};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// The shortest admin password `bootstrap` accepts.
pub const MIN_ADMIN_PASSWORD_LEN: usize = 8;
/// bcrypt uses at most this many bytes of a password; longer ones are refused.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// The lengths, in bytes, an admin password or token may have, everywhere
/// (bootstrap, change, login, the server's admin token).
pub const ADMIN_PASSWORD_BYTES: std::ops::RangeInclusive<usize> =
    MIN_ADMIN_PASSWORD_LEN..=MAX_PASSWORD_BYTES;
/// How many records `list` reads in one batch ([`StateBackend::get_many`]).
///
/// [`StateBackend::get_many`]: tenancy_core::StateBackend::get_many
pub const LIST_BATCH: usize = 256;
/// How many of those batches `list` has in flight (one is read while the
/// next keys are listed).
pub const LIST_BATCHES_IN_FLIGHT: usize = 2;
/// How long a tenant whose `create` stopped halfway is left to that create
/// before another create of its id takes it over (see the module docs): 10 min.
pub const HALF_CREATED_GRACE: Duration = Duration::from_secs(600);

/// Runs CPU-heavy work (bcrypt hashing and verifying) off the async executor.
///
/// The registry has no runtime of its own, so by default it hashes inline,
/// blocking the calling task for one bcrypt (about 73 ms at cost 10). A
/// server hands in a runner built on its runtime (for tokio:
/// `spawn_blocking`) with [`StoreRegistry::with_blocking`].
pub trait BlockingRunner: Send + Sync + fmt::Debug {
    /// Runs `job` to completion on a thread where blocking is fine; the
    /// future resolves once it has run.
    fn run(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()>;
}

/// Runs `f` on `runner` and hands back its result; `None` when the runner
/// dropped the job (a panic, a shut-down pool). The one way the registry
/// and its callers (the server's admin token) send bcrypt off the caller.
pub async fn run_blocking<T, F>(runner: &dyn BlockingRunner, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    runner
        .run(Box::new(move || {
            let _ = tx.send(f());
        }))
        .await;
    rx.await.ok()
}

/// The tenant registry on a [`StateBackend`].
///
/// Cheap to share behind an `Arc`; answers nothing from memory, so several
/// processes and server replicas on one store always see each other's
/// writes (the usage records it wrote last only spare the read before its
/// next conditional write: `last_written.rs`).
pub struct StoreRegistry {
    backend: Arc<dyn StateBackend>,
    last_written: last_written::LastWritten,
    clock: Arc<dyn Clock>,
    cost: u32,
    reservation_ttl: Duration,
    dummy_hash: OnceLock<String>,
    blocking: Option<Arc<dyn BlockingRunner>>,
}

impl fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreRegistry")
            .field("backend", &self.backend.name())
            .field("clock", &self.clock)
            .field("bcrypt_cost", &self.cost)
            .field("reservation_ttl", &self.reservation_ttl)
            .field("blocking", &self.blocking)
            .finish()
    }
}

impl StoreRegistry {
    /// A registry on `backend`, with the system clock and bcrypt cost
    /// [`DEFAULT_BCRYPT_COST`].
    pub fn new(backend: Arc<dyn StateBackend>) -> Self {
        StoreRegistry {
            backend,
            last_written: last_written::LastWritten::default(),
            clock: Arc::new(SystemClock),
            cost: DEFAULT_BCRYPT_COST,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            dummy_hash: OnceLock::new(),
            blocking: None,
        }
    }

    /// Reads time (expiry, quota windows, timestamps) and sleeps (retry
    /// backoff) through `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The bcrypt cost for new hashes, clamped to 4..=31. Tests use 4.
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Self {
        self.cost = cost.clamp(MIN_BCRYPT_COST, MAX_BCRYPT_COST);
        self.dummy_hash = OnceLock::new();
        self
    }

    /// How long an uncommitted reservation holds capacity (default
    /// [`DEFAULT_RESERVATION_TTL`]).
    pub fn with_reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    /// Hashes and verifies secrets through `runner` instead of inline.
    pub fn with_blocking(mut self, runner: Arc<dyn BlockingRunner>) -> Self {
        self.blocking = Some(runner);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn StateBackend> {
        &self.backend
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The bcrypt cost used for new hashes.
    pub fn bcrypt_cost(&self) -> u32 {
        self.cost
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn retry<'a>(&'a self, what: &'a str) -> Retry<'a> {
        Retry::new(self.clock.as_ref(), what)
    }

    fn ensure_cas(&self) -> Result<()> {
        if self.backend.capabilities().supports_cas() {
            Ok(())
        } else {
            Err(Error::not_implemented(format!(
                "the tenant registry needs conditional writes, which the {} backend lacks",
                self.backend.name()
            )))
        }
    }
}

#[async_trait]
impl TenantRegistry for StoreRegistry {
    async fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self.backend.get(&layout::manifest()?).await?.is_some())
    }

    async fn bootstrap(&self, admin_password: &Secret) -> Result<()> {
        self.bootstrap_with_password(admin_password).await
    }

    async fn verify_admin(&self, password: &Secret) -> Result<()> {
        self.verify_admin_password(password).await
    }

    async fn admin_generation(&self) -> Result<u64> {
        self.stored_admin_generation().await
    }

    async fn set_admin_password(&self, new: &Secret) -> Result<u64> {
        self.change_admin_password(new).await
    }

    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        self.create_tenant(new).await
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        let rec = self.get_record(id).await?.0;
        self.view(&rec)
    }

    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        self.list_tenants(filter)
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<Tenant> {
        self.update_tenant(id, update).await
    }

    async fn suspend(&self, id: &TenantId, reason: Option<String>) -> Result<Tenant> {
        self.suspend_tenant(id, reason).await
    }

    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        self.activate_tenant(id).await
    }

    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        self.rotate_secret(id).await
    }

    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        self.delete_tenant(id).await
    }

    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        self.purge_archive(id, grace).await
    }

    async fn authenticate(&self, id: &TenantId, secret: &Secret) -> Result<Tenant> {
        self.authenticate_tenant(id, secret).await
    }

    async fn authenticate_key(&self, secret: &Secret) -> Result<Tenant> {
        self.authenticate_by_key(secret).await
    }

    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        self.current_usage(id).await
    }

    async fn reserve(&self, id: &TenantId, resource: Resource, amount: u64) -> Result<Reservation> {
        self.reserve_quota(id, resource, amount).await
    }

    async fn commit(&self, reservation: &Reservation) -> Result<()> {
        self.commit_reservation(reservation).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<()> {
        self.release_reservation(reservation).await
    }

    async fn release_recording(
        &self,
        reservation: &Reservation,
        event: UsageEvent,
    ) -> Result<bool> {
        self.release_reservation_recording(reservation, event).await
    }

    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
        self.listed_reservations(id).await
    }

    async fn record_usage(&self, id: &TenantId, event: UsageEvent) -> Result<Usage> {
        self.record_event(id, event).await
    }

    async fn login_tenant(&self, id: &TenantId, secret: &Secret) -> Result<IssuedSession> {
        self.login_tenant_session(id, secret).await
    }

    async fn login_admin(&self, password: &Secret) -> Result<IssuedSession> {
        self.login_admin_session(password).await
    }

    async fn authenticate_session(&self, token: &Secret) -> Result<AuthenticatedSession> {
        self.authenticate_by_session(token).await
    }

    async fn sessions(&self, owner: &SessionOwner) -> Result<Vec<ServerSession>> {
        self.list_sessions(owner).await
    }

    async fn revoke_session(&self, owner: &SessionOwner, id: &SessionId) -> Result<()> {
        self.revoke(owner, id).await
    }

    async fn authenticate_caller(&self, id: Option<&TenantId>, secret: &Secret) -> Result<Caller> {
        self.authenticate_any(id, secret).await
    }

    async fn create_key(&self, tenant: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
        self.create_api_key(tenant, new).await
    }

    async fn keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>> {
        self.list_api_keys(tenant).await
    }

    async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<ApiKey> {
        self.revoke_api_key(tenant, id).await
    }

    async fn rotate_key(
        &self,
        tenant: &TenantId,
        id: &KeyId,
        grace: Duration,
    ) -> Result<RotatedApiKey> {
        self.rotate_api_key(tenant, id, grace).await
    }

    async fn touch_key(&self, tenant: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        self.touch_api_key(tenant, id, at).await
    }
}
