//! `StoreRegistry`: the [`TenantRegistry`] stored as YAML objects on any [`StateBackend`].
//!
//! # Layout
//!
//! All keys are relative to the backend's root (see [`layout`]):
//!
//! ```text
//! tenants.yaml                         manifest: format version, created/updated,
//!                                      default state version, admin bcrypt hash + generation
//! registry/<id>.yaml                   one Tenant record per tenant (nothing else lives here,
//!                                      so `list` reads exactly one key per tenant)
//! registry-keys/<lookup-id>.yaml       API-key index: lookup id of the current secret -> tenant id
//! registry-usage/<id>.yaml             usage record (counters, pending reservations)
//! tenants/<id>/tenant.yaml             tenant-readable config (environments, regions, policies)
//! tenants/<id>/v1/layout.yaml          marker written on create: the state root exists
//! archive/<id>/<YYYYMMDDTHHMMSSZ>/...  state moved here by delete
//! ```
//!
//! # Writes
//!
//! Every write is a compare-and-swap: [`PutMode::Create`] for new objects,
//! [`PutMode::Update`] with the version just read otherwise. A lost race on
//! a read-modify-write that is safe to repeat (an update without an expected
//! revision, suspend, activate, rotate, a quota reservation) is retried after a
//! jittered exponential backoff slept through the registry's [`Clock`]; a race
//! that is not safe to repeat comes back as [`Error::AlreadyExists`] (two
//! creates of one id) or [`Error::Precondition`] (a stale `expected_revision`).
//!
//! # API-key lookup
//!
//! A presented secret alone resolves to its tenant with two reads and one
//! bcrypt verify, never a scan: `credentials::lookup_id(secret)` (the first
//! 128 bits of its SHA-256, hex) names the index object
//! `registry-keys/<lookup-id>.yaml`, which holds the tenant id; the tenant's
//! record is then read, its stored lookup id compared in constant time, and
//! the secret verified against the record's bcrypt hash. The index is written
//! (Create) before the record on create and rotate, and the old index object
//! is deleted after a rotation, so a crash leaves at worst a dangling index
//! object that no longer matches its record and is ignored. The lookup id is
//! not secret: the secret has about 190 random bits, so knowing the SHA-256
//! prefix does not help to guess it, and the bcrypt hash is still checked.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{chrono_duration, Clock, SystemClock};
use crate::credentials::{self, Secret, DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};
use crate::error::{Error, Result};
use crate::keys::{StateKey, TenantId};
use crate::quota::{UsageRecord, DEFAULT_RESERVATION_TTL};
use crate::registry::{
    validate_display_name, validate_email, validate_metadata, CreatedTenant, NewTenant,
    Reservation, TenantFilter, TenantRegistry, TenantUpdate, UsageEvent,
};
use crate::state::{DeleteMode, Object, PutMode, StateBackend, Version};
use crate::tenant::{
    CredentialRecord, Resource, StorageInfo, Tenant, TenantStatus, Usage, DEFAULT_STATE_VERSION,
};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// The shortest admin password `bootstrap` accepts.
pub const MIN_ADMIN_PASSWORD_LEN: usize = 8;
/// bcrypt uses at most this many bytes of a password; longer ones are refused.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// How many records `list` reads at once.
pub const LIST_CONCURRENCY: usize = 64;
/// How many times a lost compare-and-swap is retried before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 200;

const BACKOFF_BASE: Duration = Duration::from_millis(1);
const BACKOFF_CAP: Duration = Duration::from_millis(50);
const ARCHIVE_TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const UNAUTHORIZED: &str = "invalid tenant credentials";

/// Key names of the registry layout (see the [module docs](self)).
pub mod layout {
    use crate::error::Result;
    use crate::keys::{StateKey, TenantId};

    /// The manifest.
    pub const MANIFEST: &str = "tenants.yaml";
    /// The prefix of tenant records.
    pub const RECORDS: &str = "registry";
    /// The prefix of the API-key index.
    pub const KEY_INDEX: &str = "registry-keys";
    /// The prefix of usage records.
    pub const USAGE: &str = "registry-usage";
    /// The prefix of tenants' own state.
    pub const TENANTS: &str = "tenants";
    /// The prefix of archived state.
    pub const ARCHIVE: &str = "archive";

    fn key(s: String) -> Result<StateKey> {
        StateKey::new(s)
    }

    /// `tenants.yaml`.
    pub fn manifest() -> Result<StateKey> {
        key(MANIFEST.into())
    }
    /// `registry`.
    pub fn records() -> Result<StateKey> {
        key(RECORDS.into())
    }
    /// `registry/<id>.yaml`.
    pub fn record(id: &TenantId) -> Result<StateKey> {
        key(format!("{RECORDS}/{id}.yaml"))
    }
    /// The tenant id of a key below `registry/`, if it names a record.
    pub fn record_id(k: &StateKey) -> Option<TenantId> {
        let rest = k.as_str().strip_prefix(RECORDS)?.strip_prefix('/')?;
        let id = rest.strip_suffix(".yaml")?;
        TenantId::new(id).ok()
    }
    /// `registry-keys/<lookup-id>.yaml`.
    pub fn key_index(lookup_id: &str) -> Result<StateKey> {
        key(format!("{KEY_INDEX}/{lookup_id}.yaml"))
    }
    /// `registry-usage/<id>.yaml`.
    pub fn usage(id: &TenantId) -> Result<StateKey> {
        key(format!("{USAGE}/{id}.yaml"))
    }
    /// `tenants/<id>`.
    pub fn tenant_root(id: &TenantId) -> Result<StateKey> {
        key(format!("{TENANTS}/{id}"))
    }
    /// `tenants/<id>/tenant.yaml`.
    pub fn tenant_config(id: &TenantId) -> Result<StateKey> {
        key(format!("{TENANTS}/{id}/tenant.yaml"))
    }
    /// `tenants/<id>/<version>/layout.yaml`.
    pub fn state_marker(id: &TenantId, version: &str) -> Result<StateKey> {
        key(format!("{TENANTS}/{id}/{version}/layout.yaml"))
    }
    /// `archive/<id>`.
    pub fn archive_root(id: &TenantId) -> Result<StateKey> {
        key(format!("{ARCHIVE}/{id}"))
    }
}

/// The admin credential kept in the manifest: a bcrypt hash, never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredential {
    /// Hash algorithm, `bcrypt`.
    pub algorithm: String,
    /// The bcrypt hash.
    pub hash: String,
    /// The bcrypt cost of the hash.
    pub cost: u32,
    /// Bumped whenever the admin credential changes; admin sessions and
    /// cached verifications of an older generation stop working.
    pub generation: u64,
    /// When the credential was set.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminCredential")
            .field("algorithm", &self.algorithm)
            .field("hash", &"<redacted>")
            .field("cost", &self.cost)
            .field("generation", &self.generation)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The registry configuration kept in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// The state layout version new tenants get, e.g. `v1`.
    pub default_state_version: String,
    /// The admin credential.
    pub admin: AdminCredential,
}

/// `tenants.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format version ([`MANIFEST_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The tenancy version that wrote the manifest first.
    pub tool_version: String,
    /// When the registry was bootstrapped.
    pub created_at: DateTime<Utc>,
    /// When the manifest was last changed.
    pub updated_at: DateTime<Utc>,
    /// The configuration.
    pub config: RegistryConfig,
}

/// `tenants/<id>/tenant.yaml`: configuration the tenant may read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantConfig {
    /// The tenant.
    pub tenant: String,
    /// Display name at creation.
    pub display_name: String,
    /// The state layout version.
    pub state_version: String,
    /// Environments the tenant uses.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Regions the tenant may use.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Free-form policies.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, String>,
}

/// `registry-keys/<lookup-id>.yaml`: which tenant a lookup id belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyIndexEntry {
    /// The tenant.
    pub tenant: TenantId,
    /// When the entry was written.
    pub created_at: DateTime<Utc>,
}

/// Encodes a value as YAML.
pub fn to_yaml<T: Serialize>(value: &T, what: &str) -> Result<Bytes> {
    serde_yaml_ng::to_string(value)
        .map(Bytes::from)
        .map_err(|e| Error::invalid(format!("cannot encode {what} as YAML: {e}")))
}

/// Decodes YAML; a failure is [`Error::Corrupt`] naming `what`.
pub fn from_yaml<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_yaml_ng::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

fn is_bcrypt_hash(hash: &str) -> Option<u32> {
    let rest = hash
        .strip_prefix("$2b$")
        .or_else(|| hash.strip_prefix("$2a$"))
        .or_else(|| hash.strip_prefix("$2y$"))?;
    let (cost, tail) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok()?;
    let ok = (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost)
        && tail.len() == 53
        && tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    ok.then_some(cost)
}

/// Runs CPU-heavy work (bcrypt hashing and verifying) off the async executor.
///
/// tenancy-core has no runtime of its own, so by default the registry hashes
/// inline, blocking the calling task for one bcrypt (about 73 ms at cost 10).
/// A server hands in a runner built on its runtime (for tokio:
/// `spawn_blocking`) with [`StoreRegistry::with_blocking`].
pub trait BlockingRunner: Send + Sync + fmt::Debug {
    /// Runs `job` to completion on a thread where blocking is fine; the
    /// future resolves once it has run.
    fn run(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()>;
}

/// The tenant registry on a [`StateBackend`].
///
/// Cheap to share behind an `Arc`; holds no cache, so several processes and
/// server replicas on one store always see each other's writes.
pub struct StoreRegistry {
    backend: Arc<dyn StateBackend>,
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

    async fn backoff(&self, attempt: u32) {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(16))
            .min(BACKOFF_CAP);
        let nanos = exp.as_nanos().max(2) as u64;
        let d = Duration::from_nanos(rand::thread_rng().gen_range(nanos / 2..=nanos));
        self.clock.sleep(d).await;
    }

    fn dummy_hash(&self) -> &str {
        self.dummy_hash.get_or_init(|| {
            // A fixed, well-formed cost-4 hash only if hashing itself fails,
            // which cannot happen for a cost inside the accepted range.
            credentials::dummy_hash(self.cost).unwrap_or_else(|_| {
                "$2b$04$abcdefghijklmnopqrstuu5Qd0Z7kk0SUT8ElNhk8eYN3ao6W/Ifq".to_string()
            })
        })
    }

    async fn get_yaml<T: DeserializeOwned>(
        &self,
        key: &StateKey,
        what: &str,
    ) -> Result<Option<(T, Version)>> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(Object { bytes, version }) => Ok(Some((from_yaml(&bytes, what)?, version))),
        }
    }

    // ---- manifest and admin ----

    /// Reads the manifest; [`Error::NotFound`] when the registry is not bootstrapped.
    pub async fn manifest(&self) -> Result<(Manifest, Version)> {
        let (m, v): (Manifest, Version) = self
            .get_yaml(&layout::manifest()?, "registry manifest tenants.yaml")
            .await?
            .ok_or_else(|| {
                Error::not_found("registry manifest tenants.yaml: the registry is not initialised (run `tenancy init`)")
            })?;
        if m.format_version > MANIFEST_FORMAT_VERSION {
            return Err(Error::Corrupt {
                what: "registry manifest tenants.yaml".into(),
                message: format!(
                    "format version {} is newer than this tenancy understands ({MANIFEST_FORMAT_VERSION}); upgrade tenancy",
                    m.format_version
                ),
            });
        }
        Ok((m, v))
    }

    /// The generation of the admin credential (bumped by [`StoreRegistry::set_admin_hash`]).
    pub async fn admin_generation(&self) -> Result<u64> {
        Ok(self.manifest().await?.0.config.admin.generation)
    }

    /// Bootstraps with an already computed bcrypt hash of the admin credential
    /// (a server that generated its admin token stores only the hash).
    /// [`Error::AlreadyExists`] if a registry exists.
    pub async fn bootstrap_with_hash(&self, admin_hash: &str) -> Result<()> {
        let cost = is_bcrypt_hash(admin_hash)
            .ok_or_else(|| Error::invalid("the admin credential hash is not a bcrypt hash"))?;
        self.ensure_cas()?;
        let now = self.now();
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            tool_version: crate::TOOL_VERSION.to_string(),
            created_at: now,
            updated_at: now,
            config: RegistryConfig {
                default_state_version: DEFAULT_STATE_VERSION.to_string(),
                admin: AdminCredential {
                    algorithm: "bcrypt".into(),
                    hash: admin_hash.to_string(),
                    cost,
                    generation: 1,
                    updated_at: now,
                },
            },
        };
        let bytes = to_yaml(&manifest, "the registry manifest")?;
        match self
            .backend
            .put(&layout::manifest()?, bytes, PutMode::Create)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::AlreadyExists { .. }) => Err(Error::already_exists(
                "a tenant registry (tenants.yaml) already exists on this store",
            )),
            Err(e) => Err(e),
        }
    }

    /// Replaces the admin credential with `admin_hash` (a bcrypt hash) and
    /// bumps the admin generation. Returns the new generation.
    pub async fn set_admin_hash(&self, admin_hash: &str) -> Result<u64> {
        let cost = is_bcrypt_hash(admin_hash)
            .ok_or_else(|| Error::invalid("the admin credential hash is not a bcrypt hash"))?;
        self.ensure_cas()?;
        let key = layout::manifest()?;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (mut m, version) = self.manifest().await?;
            let now = self.now();
            m.updated_at = now;
            m.config.admin = AdminCredential {
                algorithm: "bcrypt".into(),
                hash: admin_hash.to_string(),
                cost,
                generation: m.config.admin.generation + 1,
                updated_at: now,
            };
            let bytes = to_yaml(&m, "the registry manifest")?;
            match self
                .backend
                .put(&key, bytes, PutMode::Update(version))
                .await
            {
                Ok(_) => return Ok(m.config.admin.generation),
                Err(e) if e.is_conflict() => self.backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(too_contended("the registry manifest"))
    }

    // ---- tenant records ----

    /// Reads a tenant record as stored (status not adjusted for expiry) with
    /// its object version. One read. [`Error::NotFound`] if there is none,
    /// [`Error::Corrupt`] naming the tenant if it cannot be decoded.
    pub async fn get_raw(&self, id: &TenantId) -> Result<(Tenant, Version)> {
        self.read_record(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("tenant {id}")))
    }

    async fn read_record(&self, id: &TenantId) -> Result<Option<(Tenant, Version)>> {
        let what = format!("tenant {id} (registry/{id}.yaml)");
        let Some((t, v)) = self.get_yaml::<Tenant>(&layout::record(id)?, &what).await? else {
            return Ok(None);
        };
        if &t.id != id {
            return Err(Error::Corrupt {
                what,
                message: format!("the record holds tenant {}", t.id),
            });
        }
        Ok(Some((t, v)))
    }

    fn effective(&self, mut t: Tenant) -> Tenant {
        t.status = t.effective_status(self.now());
        t
    }

    /// Read-modify-write of a tenant record with compare-and-swap, retried
    /// on a lost race. `f` sees the stored record and the current time; its
    /// errors are returned as they are. Revision and `updated_at` are bumped here.
    async fn modify<F>(&self, id: &TenantId, mut f: F) -> Result<Tenant>
    where
        F: FnMut(&mut Tenant, DateTime<Utc>) -> Result<()> + Send,
    {
        self.ensure_cas()?;
        let key = layout::record(id)?;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (mut t, version) = self.get_raw(id).await?;
            let now = self.now();
            f(&mut t, now)?;
            t.revision += 1;
            t.updated_at = now;
            let bytes = to_yaml(&t, &format!("tenant {id}"))?;
            match self
                .backend
                .put(&key, bytes, PutMode::Update(version))
                .await
            {
                Ok(_) => return Ok(self.effective(t)),
                Err(e) if e.is_conflict() => self.backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(too_contended(&format!("tenant {id}")))
    }

    async fn new_credential(&self, prefix: &str) -> Result<(Secret, CredentialRecord)> {
        let secret = credentials::generate_secret(prefix)?;
        let hash = self.hash(&secret).await?;
        let lookup_id = credentials::lookup_id(secret.expose());
        Ok((
            secret,
            CredentialRecord {
                algorithm: "bcrypt".into(),
                hash,
                cost: self.cost,
                prefix: prefix.to_string(),
                lookup_id,
                generation: 1,
                rotations: 0,
                last_rotated: None,
            },
        ))
    }

    async fn write_index(&self, lookup_id: &str, id: &TenantId) -> Result<StateKey> {
        let key = layout::key_index(lookup_id)?;
        let entry = KeyIndexEntry {
            tenant: id.clone(),
            created_at: self.now(),
        };
        self.backend
            .put(
                &key,
                to_yaml(&entry, "an API-key index entry")?,
                PutMode::Create,
            )
            .await?;
        Ok(key)
    }

    async fn create_if_absent(&self, key: &StateKey, bytes: Bytes) -> Result<()> {
        match self.backend.put(key, bytes, PutMode::Create).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` through the blocking runner if there is one, else inline.
    async fn cpu<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let Some(runner) = &self.blocking else {
            return Ok(f());
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        runner
            .run(Box::new(move || {
                let _ = tx.send(f());
            }))
            .await;
        rx.await
            .map_err(|_| Error::backend("blocking", "the blocking runner dropped a bcrypt job"))
    }

    /// bcrypt verify; a job the runner dropped counts as a mismatch.
    async fn verify(&self, presented: &Secret, hash: &str) -> bool {
        let (presented, hash) = (presented.clone(), hash.to_string());
        self.cpu(move || credentials::verify_secret(presented.expose(), &hash))
            .await
            .unwrap_or(false)
    }

    async fn hash(&self, secret: &Secret) -> Result<String> {
        let (secret, cost) = (secret.clone(), self.cost);
        self.cpu(move || credentials::hash_secret(&secret, cost))
            .await?
    }

    /// Checks the secret of a record already read: `Unauthorized` on a
    /// mismatch, `Forbidden` when the tenant may not work.
    async fn check_secret(&self, t: Tenant, secret: &Secret) -> Result<Tenant> {
        if !self.verify(secret, &t.credential.hash).await {
            return Err(Error::unauthorized(UNAUTHORIZED));
        }
        let t = self.effective(t);
        t.ensure_active(self.now())?;
        Ok(t)
    }

    async fn refuse_after_dummy_verify(&self, secret: &Secret) -> Error {
        // Same work as a wrong secret for a known tenant.
        let dummy = self.dummy_hash().to_string();
        let _ = self.verify(secret, &dummy).await;
        Error::unauthorized(UNAUTHORIZED)
    }

    // ---- state archive ----

    /// Moves everything below `tenants/<id>/` to `archive/<id>/<ts>/`, copy
    /// then delete, so an interrupted move is resumed by running it again.
    /// Returns the number of objects moved.
    async fn archive_state(&self, t: &Tenant) -> Result<u64> {
        let deleted_at = t.deleted_at.unwrap_or_else(|| self.now());
        let src_root = layout::tenant_root(&t.id)?;
        let dst_root = layout::archive_root(&t.id)?
            .child(&deleted_at.format(ARCHIVE_TS_FORMAT).to_string())?;
        let conditional_delete = self.backend.capabilities().conditional_delete;
        let mut keys = Vec::new();
        {
            let mut listing = self.backend.list(Some(&src_root));
            while let Some(e) = listing.next().await {
                keys.push(e?.key);
            }
        }
        let mut moved = 0u64;
        for src in keys {
            let Some(rest) = src.strip_prefix(&src_root) else {
                continue;
            };
            let dst = dst_root.join(&rest)?;
            let mut done = false;
            for _ in 0..3 {
                let Some(obj) = self.backend.get(&src).await? else {
                    done = true;
                    break;
                };
                self.copy_to(&dst, obj.bytes).await?;
                let mode = if conditional_delete {
                    DeleteMode::IfVersion(obj.version)
                } else {
                    DeleteMode::Any
                };
                match self.backend.delete(&src, mode).await {
                    Ok(()) => {
                        moved += 1;
                        done = true;
                        break;
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
            if !done {
                return Err(Error::precondition(format!(
                    "{src} kept changing while tenant {} was being archived; run delete again",
                    t.id
                )));
            }
        }
        Ok(moved)
    }

    /// Writes `bytes` at `dst` with a compare-and-swap: Create, or Update of
    /// the version found if a different object is there (a resumed move).
    async fn copy_to(&self, dst: &StateKey, bytes: Bytes) -> Result<()> {
        for attempt in 0..MAX_CAS_ATTEMPTS {
            match self.backend.put(dst, bytes.clone(), PutMode::Create).await {
                Ok(_) => return Ok(()),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some(existing) = self.backend.get(dst).await? else {
                continue;
            };
            if existing.bytes == bytes {
                return Ok(());
            }
            match self
                .backend
                .put(dst, bytes.clone(), PutMode::Update(existing.version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => self.backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(too_contended(dst.as_str()))
    }

    // ---- usage ----

    async fn read_usage(&self, id: &TenantId) -> Result<Option<(UsageRecord, Version)>> {
        let what = format!("usage of tenant {id} (registry-usage/{id}.yaml)");
        self.get_yaml(&layout::usage(id)?, &what).await
    }

    /// Read-modify-write of a usage record with compare-and-swap, retried
    /// with backoff on a lost race. A missing record is created.
    async fn modify_usage<T, F>(&self, id: &TenantId, mut f: F) -> Result<(T, Usage)>
    where
        F: FnMut(&mut UsageRecord, DateTime<Utc>) -> Result<T> + Send,
        T: Send,
    {
        self.ensure_cas()?;
        let key = layout::usage(id)?;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (mut rec, mode) = match self.read_usage(id).await? {
                Some((r, v)) => (r, PutMode::Update(v)),
                None => {
                    // Never create a usage record for a tenant that does not exist.
                    self.get_raw(id).await?;
                    (UsageRecord::new(id.clone()), PutMode::Create)
                }
            };
            let now = self.now();
            rec.roll(now);
            let out = f(&mut rec, now)?;
            rec.updated_at = Some(now);
            let bytes = to_yaml(&rec, &format!("usage of tenant {id}"))?;
            match self.backend.put(&key, bytes, mode).await {
                Ok(_) => return Ok((out, rec.usage)),
                Err(e) if e.is_conflict() => self.backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(too_contended(&format!("usage of tenant {id}")))
    }

    /// An active tenant's record, for quota operations: `NotFound` or `Forbidden` otherwise.
    async fn active_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let (t, _) = self.get_raw(id).await?;
        t.ensure_active(self.now())?;
        Ok(t)
    }
}

fn too_contended(what: &str) -> Error {
    Error::precondition(format!(
        "{what} kept changing under concurrent writers ({MAX_CAS_ATTEMPTS} attempts); try again"
    ))
}

fn validate_expiry(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()> {
    match expires_at {
        Some(t) if t <= now => Err(Error::invalid(format!(
            "expires_at {} is not in the future; suspend or delete a tenant to stop it now",
            t.to_rfc3339()
        ))),
        _ => Ok(()),
    }
}

fn check_password(p: &Secret, min_len: usize) -> Result<()> {
    let n = p.expose().len();
    if n < min_len || n > MAX_PASSWORD_BYTES || p.expose().chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "the admin password must be {min_len} to {MAX_PASSWORD_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

#[async_trait]
impl TenantRegistry for StoreRegistry {
    async fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self.backend.get(&layout::manifest()?).await?.is_some())
    }

    async fn bootstrap(&self, admin_password: &Secret) -> Result<()> {
        check_password(admin_password, MIN_ADMIN_PASSWORD_LEN)?;
        let hash = self.hash(admin_password).await?;
        self.bootstrap_with_hash(&hash).await
    }

    async fn verify_admin(&self, password: &Secret) -> Result<()> {
        let (m, _) = self.manifest().await?;
        if password.expose().len() <= MAX_PASSWORD_BYTES
            && self.verify(password, &m.config.admin.hash).await
        {
            Ok(())
        } else {
            Err(Error::unauthorized("invalid admin credential"))
        }
    }

    async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
        // Validate everything before the first write.
        let id = match (&new.id, &new.display_name) {
            (Some(id), _) => id.clone(),
            (None, Some(name)) => crate::registry::tenant_id_from_name(name)?,
            (None, None) => return Err(Error::invalid("a tenant needs an id or a name")),
        };
        let display_name = new.display_name.clone().unwrap_or_else(|| id.to_string());
        validate_display_name(&display_name)?;
        if let Some(e) = &new.email {
            validate_email(e)?;
        }
        let prefix = new
            .secret_prefix
            .clone()
            .unwrap_or_else(|| credentials::DEFAULT_SECRET_PREFIX.to_string());
        credentials::validate_prefix(&prefix)?;
        new.limits.validate()?;
        validate_metadata(&new.metadata)?;
        let now = self.now();
        validate_expiry(new.expires_at, now)?;
        self.ensure_cas()?;

        let (manifest, _) = self.manifest().await?;
        let state_version = manifest.config.default_state_version;
        let (secret, credential) = self.new_credential(&prefix).await?;
        let tenant = Tenant {
            id: id.clone(),
            display_name: display_name.clone(),
            email: new.email.clone(),
            status: TenantStatus::Active,
            plan: new.plan,
            limit_overrides: new.limits,
            storage: StorageInfo {
                prefix: layout::tenant_root(&id)?.to_string(),
                version: state_version.clone(),
            },
            lock_prefix: format!("tenant:{id}"),
            metadata: new.metadata.clone(),
            suspended_reason: None,
            created_at: now,
            updated_at: now,
            expires_at: new.expires_at,
            deleted_at: None,
            revision: 1,
            credential,
        };
        let record_bytes = to_yaml(&tenant, &format!("tenant {id}"))?;

        // Index first: a crash after it leaves an index entry that matches no
        // record, which authenticate_key ignores.
        let index_key = self.write_index(&tenant.credential.lookup_id, &id).await?;
        match self
            .backend
            .put(&layout::record(&id)?, record_bytes, PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let _ = self.backend.delete(&index_key, DeleteMode::Any).await;
                return Err(match e {
                    Error::AlreadyExists { .. } => Error::already_exists(format!("tenant {id}")),
                    e => e,
                });
            }
        }
        let config = TenantConfig {
            tenant: id.to_string(),
            display_name,
            state_version: state_version.clone(),
            ..Default::default()
        };
        self.create_if_absent(
            &layout::tenant_config(&id)?,
            to_yaml(&config, "tenant config")?,
        )
        .await?;
        #[derive(Serialize)]
        struct Marker<'a> {
            layout: &'a str,
            tenant: &'a str,
            created_at: DateTime<Utc>,
        }
        let marker = Marker {
            layout: &state_version,
            tenant: id.as_str(),
            created_at: now,
        };
        self.create_if_absent(
            &layout::state_marker(&id, &state_version)?,
            to_yaml(&marker, "state layout marker")?,
        )
        .await?;
        self.create_if_absent(
            &layout::usage(&id)?,
            to_yaml(&UsageRecord::new(id.clone()), "usage record")?,
        )
        .await?;
        Ok(CreatedTenant {
            tenant: self.effective(tenant),
            secret,
        })
    }

    async fn get(&self, id: &TenantId) -> Result<Tenant> {
        Ok(self.effective(self.get_raw(id).await?.0))
    }

    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
        let prefix = match layout::records() {
            Ok(p) => p,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        let now = self.now();
        self.backend
            .list(Some(&prefix))
            .filter_map(|entry| async move {
                match entry {
                    Err(e) => Some(Err(e)),
                    Ok(e) => layout::record_id(&e.key).map(Ok),
                }
            })
            .map(move |id| async move {
                let id = id?;
                Ok(self.read_record(&id).await?.map(|(t, _)| t))
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .filter_map(move |r: Result<Option<Tenant>>| async move {
                match r {
                    Err(e) => Some(Err(e)),
                    Ok(None) => None,
                    Ok(Some(mut t)) => {
                        let status = t.effective_status(now);
                        t.status = status;
                        filter.matches(&t, status).then_some(Ok(t))
                    }
                }
            })
            .boxed()
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<Tenant> {
        if let Some(n) = &update.display_name {
            validate_display_name(n)?;
        }
        if let Some(e) = &update.email {
            validate_email(e)?;
        }
        if let Some(l) = &update.limits {
            l.validate()?;
        }
        if let Some(m) = &update.metadata {
            validate_metadata(m)?;
        }
        validate_expiry(update.expires_at, self.now())?;
        self.modify(id, |t, _now| {
            if t.status == TenantStatus::Deleted {
                return Err(Error::precondition(format!(
                    "tenant {id} is deleted and cannot be updated"
                )));
            }
            if let Some(want) = update.expected_revision {
                if t.revision != want {
                    return Err(Error::precondition(format!(
                        "tenant {id} is at revision {}, not {want}: it was changed since you read it",
                        t.revision
                    )));
                }
            }
            if let Some(n) = &update.display_name {
                t.display_name = n.clone();
            }
            if let Some(e) = &update.email {
                t.email = Some(e.clone());
            }
            if let Some(p) = update.plan {
                t.plan = p;
            }
            if let Some(l) = &update.limits {
                t.limit_overrides = t.limit_overrides.merged(l);
            }
            if let Some(m) = &update.metadata {
                let mut merged = t.metadata.clone();
                merged.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                validate_metadata(&merged)?;
                t.metadata = merged;
            }
            if let Some(x) = update.expires_at {
                t.expires_at = Some(x);
            }
            Ok(())
        })
        .await
    }

    async fn suspend(&self, id: &TenantId, reason: Option<String>) -> Result<Tenant> {
        if let Some(r) = &reason {
            validate_display_name(r).map_err(|_| {
                Error::invalid(
                    "a suspension reason must be 1 to 200 characters without control characters",
                )
            })?;
        }
        self.modify(id, |t, now| {
            let from = t.effective_status(now);
            from.transition(TenantStatus::Suspended)
                .map_err(|e| name_tenant(e, id))?;
            if from == TenantStatus::Expired {
                // An explicit suspend ends the expiry; `update` sets a new one.
                t.expires_at = None;
            }
            t.status = TenantStatus::Suspended;
            t.suspended_reason = reason.clone();
            Ok(())
        })
        .await
    }

    async fn activate(&self, id: &TenantId) -> Result<Tenant> {
        self.modify(id, |t, now| {
            let from = t.effective_status(now);
            from.transition(TenantStatus::Active)
                .map_err(|e| name_tenant(e, id))?;
            if from == TenantStatus::Expired {
                // Activating an expired tenant ends the expiry; `update` sets a new one.
                t.expires_at = None;
            }
            t.status = TenantStatus::Active;
            t.suspended_reason = None;
            Ok(())
        })
        .await
    }

    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
        self.ensure_cas()?;
        let (current, _) = self.get_raw(id).await?;
        if current.status == TenantStatus::Deleted {
            return Err(Error::precondition(format!(
                "tenant {id} is deleted; its secret cannot be rotated"
            )));
        }
        let (secret, fresh) = self.new_credential(&current.credential.prefix).await?;
        let new_index = self.write_index(&fresh.lookup_id, id).await?;
        let mut old_lookup = None;
        let result = self
            .modify(id, |t, now| {
                if t.status == TenantStatus::Deleted {
                    return Err(Error::precondition(format!(
                        "tenant {id} is deleted; its secret cannot be rotated"
                    )));
                }
                old_lookup = Some(t.credential.lookup_id.clone());
                t.credential = CredentialRecord {
                    generation: t.credential.generation + 1,
                    rotations: t.credential.rotations + 1,
                    last_rotated: Some(now),
                    prefix: t.credential.prefix.clone(),
                    ..fresh.clone()
                };
                Ok(())
            })
            .await;
        match result {
            Ok(tenant) => {
                if let Some(old) = old_lookup.filter(|o| o != &fresh.lookup_id) {
                    // The old index entry no longer matches the record; removing
                    // it is tidying, so a failure here is not the caller's problem.
                    if let Ok(k) = layout::key_index(&old) {
                        let _ = self.backend.delete(&k, DeleteMode::Any).await;
                    }
                }
                Ok(CreatedTenant { tenant, secret })
            }
            Err(e) => {
                let _ = self.backend.delete(&new_index, DeleteMode::Any).await;
                Err(e)
            }
        }
    }

    async fn delete(&self, id: &TenantId) -> Result<Tenant> {
        let (current, _) = self.get_raw(id).await?;
        if current.status == TenantStatus::Deleted {
            // Resume an interrupted archive move, or refuse a second delete.
            let moved = self.archive_state(&current).await?;
            if moved == 0 {
                return Err(Error::precondition(format!(
                    "tenant {id} is already deleted"
                )));
            }
            return Ok(self.effective(current));
        }
        let t = self
            .modify(id, |t, now| {
                t.effective_status(now)
                    .transition(TenantStatus::Deleted)
                    .map_err(|e| name_tenant(e, id))?;
                t.status = TenantStatus::Deleted;
                t.deleted_at = Some(now);
                Ok(())
            })
            .await?;
        self.archive_state(&t).await?;
        Ok(t)
    }

    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
        let (t, _) = self.get_raw(id).await?;
        if t.status != TenantStatus::Deleted {
            return Err(Error::precondition(format!(
                "tenant {id} is {}, not deleted; only a deleted tenant's archive can be purged",
                t.effective_status(self.now())
            )));
        }
        let root = layout::archive_root(id)?;
        let cutoff = self.now() - chrono_duration(grace);
        let mut doomed = Vec::new();
        {
            let mut listing = self.backend.list(Some(&root));
            while let Some(e) = listing.next().await {
                let key = e?.key;
                let Some(rest) = key.strip_prefix(&root) else {
                    continue;
                };
                let ts = rest.segments().next().unwrap_or_default();
                // Only objects under a timestamp this registry wrote are touched.
                if let Ok(at) = NaiveDateTime::parse_from_str(ts, ARCHIVE_TS_FORMAT) {
                    if at.and_utc() <= cutoff {
                        doomed.push(key);
                    }
                }
            }
        }
        let mut removed = 0;
        for key in doomed {
            self.backend.delete(&key, DeleteMode::Any).await?;
            removed += 1;
        }
        Ok(removed)
    }

    async fn authenticate(&self, id: &TenantId, secret: &Secret) -> Result<Tenant> {
        match self.read_record(id).await? {
            None => Err(self.refuse_after_dummy_verify(secret).await),
            Some((t, _)) => self.check_secret(t, secret).await,
        }
    }

    async fn authenticate_key(&self, secret: &Secret) -> Result<Tenant> {
        if credentials::parse_secret(secret.expose()).is_none() {
            return Err(self.refuse_after_dummy_verify(secret).await);
        }
        let lookup = credentials::lookup_id(secret.expose());
        let index: Option<(KeyIndexEntry, Version)> = self
            .get_yaml(&layout::key_index(&lookup)?, "an API-key index entry")
            .await?;
        let Some((entry, _)) = index else {
            return Err(self.refuse_after_dummy_verify(secret).await);
        };
        match self.read_record(&entry.tenant).await? {
            Some((t, _))
                if credentials::constant_time_eq(
                    t.credential.lookup_id.as_bytes(),
                    lookup.as_bytes(),
                ) =>
            {
                self.check_secret(t, secret).await
            }
            _ => Err(self.refuse_after_dummy_verify(secret).await),
        }
    }

    async fn usage(&self, id: &TenantId) -> Result<Usage> {
        match self.read_usage(id).await? {
            Some((mut rec, _)) => {
                rec.roll(self.now());
                Ok(rec.usage)
            }
            None => {
                // No record yet: the tenant must exist.
                self.get_raw(id).await?;
                let mut rec = UsageRecord::new(id.clone());
                rec.roll(self.now());
                Ok(rec.usage)
            }
        }
    }

    async fn reserve(&self, id: &TenantId, resource: Resource, amount: u64) -> Result<Reservation> {
        let t = self.active_tenant(id).await?;
        let limits = t.limits();
        let ttl = self.reservation_ttl;
        let (r, _) = self
            .modify_usage(id, |rec, now| {
                rec.reserve(&limits, resource, amount, ttl, now)
            })
            .await?;
        Ok(r)
    }

    async fn commit(&self, reservation: &Reservation) -> Result<()> {
        self.modify_usage(&reservation.tenant, |rec, now| rec.commit(reservation, now))
            .await?;
        Ok(())
    }

    async fn release(&self, reservation: &Reservation) -> Result<()> {
        self.modify_usage(&reservation.tenant, |rec, now| {
            rec.release(reservation, now)
        })
        .await?;
        Ok(())
    }

    async fn record_usage(&self, id: &TenantId, event: UsageEvent) -> Result<Usage> {
        self.get_raw(id).await?;
        let ((), usage) = self.modify_usage(id, |rec, _| rec.record(event)).await?;
        Ok(usage)
    }
}

fn name_tenant(e: Error, id: &TenantId) -> Error {
    match e {
        Error::Precondition { what } => Error::precondition(format!("tenant {id}: {what}")),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_are_recognised() {
        let h = credentials::hash_secret(&Secret::new("password1"), 4).unwrap();
        assert_eq!(is_bcrypt_hash(&h), Some(4));
        assert_eq!(is_bcrypt_hash("plain"), None);
        assert_eq!(is_bcrypt_hash("$2b$99$abc"), None);
        assert_eq!(
            is_bcrypt_hash("$2b$04$abcdefghijklmnopqrstuu5Qd0Z7kk0SUT8ElNhk8eYN3ao6W/Ifq"),
            Some(4)
        );
    }

    #[test]
    fn layout_keys() {
        let id = TenantId::new("acme").unwrap();
        assert_eq!(layout::record(&id).unwrap().as_str(), "registry/acme.yaml");
        assert_eq!(
            layout::record_id(&layout::record(&id).unwrap()),
            Some(id.clone())
        );
        assert_eq!(
            layout::record_id(&StateKey::new("registry/acme.json").unwrap()),
            None
        );
        assert_eq!(
            layout::record_id(&StateKey::new("registry/x/acme.yaml").unwrap()),
            None
        );
        assert_eq!(
            layout::usage(&id).unwrap().as_str(),
            "registry-usage/acme.yaml"
        );
        assert_eq!(
            layout::state_marker(&id, "v1").unwrap().as_str(),
            "tenants/acme/v1/layout.yaml"
        );
    }

    #[test]
    fn ids_from_names() {
        use crate::registry::tenant_id_from_name as f;
        assert_eq!(f("Acme Corp.").unwrap().as_str(), "acme-corp");
        assert_eq!(f("  42 Team  Blue ").unwrap().as_str(), "team-blue");
        assert!(f("!!").is_err());
        assert!(f("Default").is_err(), "reserved");
        assert_eq!(f(&"a".repeat(100)).unwrap().as_str().len(), 63);
    }
}
