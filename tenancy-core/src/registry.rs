//! The `TenantRegistry` trait and its request types.
//!
//! The implementation stored on any `StateBackend` is
//! `tenancy_state::StoreRegistry`; see its module docs for the layout.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apikey::{ApiKey, Caller, CreatedApiKey, KeyId, NewApiKey, RotatedApiKey};
use crate::credentials::Secret;
use crate::error::{Error, Result};
use crate::keys::TenantId;
use crate::session::{AuthenticatedSession, IssuedSession, ServerSession, SessionId, SessionOwner};
use crate::tenant::{LimitOverrides, Plan, Resource, Tenant, TenantStatus, Usage};

/// The longest display name.
pub const MAX_DISPLAY_NAME: usize = 200;

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// The id (from the `--name`).
    pub id: Option<TenantId>,
    /// Display name; defaults to the id.
    pub display_name: Option<String>,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Plan; defaults to free.
    pub plan: Plan,
    /// Secret prefix; defaults to [`crate::credentials::DEFAULT_SECRET_PREFIX`].
    pub secret_prefix: Option<String>,
    /// Limit overrides.
    pub limits: LimitOverrides,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Expiry time.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewTenant {
    /// A request for tenant `id` with defaults.
    pub fn new(id: TenantId) -> Self {
        NewTenant {
            id: Some(id),
            ..Default::default()
        }
    }
}

/// A partial update; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// New e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// New plan.
    #[serde(default)]
    pub plan: Option<Plan>,
    /// Limit overrides, merged over the current ones.
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
    /// Metadata entries to set.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// New expiry time.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Refuse with `Precondition` unless the tenant is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

/// A filter for `list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantFilter {
    /// Only tenants with this (effective) status.
    pub status: Option<TenantStatus>,
    /// Only tenants on this plan.
    pub plan: Option<Plan>,
}

impl TenantFilter {
    /// True when `t` (with effective status `status`) passes.
    pub fn matches(&self, t: &Tenant, status: TenantStatus) -> bool {
        self.status.is_none_or(|s| s == status) && self.plan.is_none_or(|p| p == t.plan)
    }
}

/// A new tenant or a rotated secret: the secret is shown here once.
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// The secret; never stored.
    pub secret: Secret,
}

/// Capacity taken by `reserve`, to be committed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation id.
    pub id: Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// The resource.
    pub resource: Resource,
    /// How much.
    pub amount: u64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A reservation the tenant's usage record still lists: pending (it expires
/// unless committed or released) or committed (held until released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedReservation {
    /// The reservation (for a committed one made before the record kept
    /// creation times, `created_at` is the Unix epoch).
    pub reservation: Reservation,
    /// True once committed.
    pub committed: bool,
}

/// A usage event that is not a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageEvent {
    /// A job completed.
    JobCompleted,
    /// A job failed.
    JobFailed,
    /// Cost incurred, in whole currency units.
    Cost(u64),
}

/// Checks an e-mail address: one `@`, non-empty local part, a dotted domain, no spaces.
pub fn validate_email(email: &str) -> Result<()> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "email \"{}\" is not a valid address",
            email.escape_debug()
        )))
    }
}

/// Checks a display name: 1 to [`MAX_DISPLAY_NAME`] characters, no control characters.
pub fn validate_display_name(name: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_DISPLAY_NAME
        || name.chars().any(char::is_control)
    {
        Err(Error::invalid(format!(
            "display name must be 1 to {MAX_DISPLAY_NAME} characters without control characters"
        )))
    } else {
        Ok(())
    }
}

/// The most metadata entries a tenant may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata key, in characters.
pub const MAX_METADATA_KEY: usize = 128;
/// The longest metadata value, in characters.
pub const MAX_METADATA_VALUE: usize = 1024;

/// Checks tenant metadata: at most [`MAX_METADATA_ENTRIES`] entries, keys of 1 to
/// [`MAX_METADATA_KEY`] characters of `A-Z a-z 0-9 . _ - /`, values up to
/// [`MAX_METADATA_VALUE`] characters without control characters.
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(format!(
            "{} metadata entries; at most {MAX_METADATA_ENTRIES} are allowed",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        let key_ok = !k.is_empty()
            && k.chars().count() <= MAX_METADATA_KEY
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return Err(Error::invalid(format!(
                "metadata key \"{}\" must be 1 to {MAX_METADATA_KEY} characters of A-Z a-z 0-9 . _ - /",
                k.chars().take(64).collect::<String>().escape_debug()
            )));
        }
        if v.chars().count() > MAX_METADATA_VALUE || v.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "metadata value of \"{}\" must be at most {MAX_METADATA_VALUE} characters without control characters",
                k.escape_debug()
            )));
        }
    }
    Ok(())
}

/// Derives a tenant id from a display name: lowercase ASCII letters and
/// digits kept, every other run of characters becomes one `-`, leading
/// non-letters and trailing `-` dropped. `"Acme Corp."` becomes `acme-corp`.
/// The result is validated like any [`TenantId`].
pub fn tenant_id_from_name(name: &str) -> Result<TenantId> {
    let mut id = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || (c.is_ascii_digit() && !id.is_empty()) {
            id.push(c);
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    while id.ends_with('-') {
        id.pop();
    }
    if id.len() > 63 {
        id.truncate(63);
        while id.ends_with('-') {
            id.pop();
        }
    }
    TenantId::new(id).map_err(|e| {
        Error::invalid(format!(
            "cannot derive a tenant id from the name \"{}\" ({e}); give an id",
            name.chars().take(64).collect::<String>().escape_debug()
        ))
    })
}

/// The tenant registry: lifecycle, credentials and quotas.
#[async_trait]
pub trait TenantRegistry: Send + Sync + Debug {
    /// True once `bootstrap` has written the manifest.
    async fn is_bootstrapped(&self) -> Result<bool>;

    /// Writes the manifest with the admin credential's hash. Refuses
    /// (`AlreadyExists`) if a registry already exists.
    async fn bootstrap(&self, admin_password: &Secret) -> Result<()>;

    /// The generation of the one admin credential (1 at bootstrap, +1 per
    /// change); admin sessions and cached admin tokens of another
    /// generation are no longer valid.
    async fn admin_generation(&self) -> Result<u64>;

    /// Replaces the admin credential (8 to 72 bytes, never truncated) and
    /// bumps its generation; returns the new generation. The caller has
    /// checked that it may (an admin, or whoever holds the store).
    async fn set_admin_password(&self, new: &Secret) -> Result<u64>;

    /// Checks the admin credential; `Unauthorized` if wrong.
    async fn verify_admin(&self, password: &Secret) -> Result<()>;

    /// Creates a tenant and returns its secret, once.
    async fn create(&self, new: NewTenant) -> Result<CreatedTenant>;

    /// Reads a tenant; its status reads as `expired` once `expires_at` has passed.
    async fn get(&self, id: &TenantId) -> Result<Tenant>;

    /// Streams the tenants that pass `filter`, in no particular order.
    ///
    /// A record that cannot be read (for example [`Error::Corrupt`], naming
    /// the tenant) comes as an `Err` item and the stream goes on with the
    /// others; see [`TenantRegistryExt::list_partial`].
    fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>>;

    /// Applies an update (optimistic on `expected_revision` when given).
    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<Tenant>;

    /// Suspends a tenant.
    async fn suspend(&self, id: &TenantId, reason: Option<String>) -> Result<Tenant>;

    /// Activates a suspended or expired tenant.
    async fn activate(&self, id: &TenantId) -> Result<Tenant>;

    /// Issues a new secret; the old one and every session of the old generation stop working.
    async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant>;

    /// Soft-deletes a tenant and moves its state to `archive/<id>/<timestamp>/`.
    async fn delete(&self, id: &TenantId) -> Result<Tenant>;

    /// Removes archived state of a deleted tenant older than `grace`; returns
    /// the number of objects removed.
    async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64>;

    /// Checks a tenant's secret. `Unauthorized` for an unknown id or a wrong
    /// secret (indistinguishable, same cost), `Forbidden` for a suspended,
    /// expired or deleted tenant.
    async fn authenticate(&self, id: &TenantId, secret: &Secret) -> Result<Tenant>;

    /// Finds the tenant of a presented secret without an id, without scanning
    /// tenants, and authenticates it.
    async fn authenticate_key(&self, secret: &Secret) -> Result<Tenant>;

    /// The tenant's usage counters.
    async fn usage(&self, id: &TenantId) -> Result<Usage>;

    /// Atomically takes `amount` of `resource`, or `QuotaExceeded` without taking anything.
    async fn reserve(&self, id: &TenantId, resource: Resource, amount: u64) -> Result<Reservation>;

    /// Confirms a reservation: the capacity stays in use until released.
    async fn commit(&self, reservation: &Reservation) -> Result<()>;

    /// Gives a reservation's capacity back (windowed resources keep their
    /// count). Idempotent: a reservation gives its capacity back at most
    /// once, and releasing an expired or already released one does nothing.
    async fn release(&self, reservation: &Reservation) -> Result<()>;

    /// Records a usage event (job outcome, cost).
    async fn record_usage(&self, id: &TenantId, event: UsageEvent) -> Result<Usage>;

    /// Releases `reservation` and records `event` in the same write, exactly
    /// once: only the call that finds the reservation still listed (pending
    /// or committed) releases it and counts the event, and returns true;
    /// every other call changes nothing and returns false. This is how an
    /// outcome is counted once however often a crashed operation is redone.
    async fn release_recording(&self, reservation: &Reservation, event: UsageEvent)
        -> Result<bool>;

    /// The reservations the tenant's usage record lists (pending ones that
    /// have not expired, and committed ones), for reconciling them with
    /// their owners after a crash.
    async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>>;

    // ---- server-issued sessions (see `crate::session`) ----
    //
    // Registries that keep no sessions leave these at their defaults, which
    // refuse with `NotImplemented`.

    /// Checks a tenant's secret like [`TenantRegistry::authenticate`] and
    /// opens a tenant session (7 days, bound to the tenant's credential
    /// generation); the token is in the answer, once.
    async fn login_tenant(&self, id: &TenantId, secret: &Secret) -> Result<IssuedSession> {
        let _ = (id, secret);
        Err(Error::not_implemented(
            "server-issued sessions are not kept by this registry",
        ))
    }

    /// Checks the admin credential like [`TenantRegistry::verify_admin`] and
    /// opens an admin session (8 hours, bound to the admin credential's
    /// generation); the token is in the answer, once.
    async fn login_admin(&self, password: &Secret) -> Result<IssuedSession> {
        let _ = password;
        Err(Error::not_implemented(
            "server-issued sessions are not kept by this registry",
        ))
    }

    /// Checks a session token: `Unauthorized` when it opens no session (never
    /// issued, revoked, or not shaped like a token), `SessionExpired`,
    /// `CredentialsRotated` (the tenant's secret or the admin credential
    /// changed since login), `Forbidden` (the tenant is suspended, expired
    /// or deleted).
    async fn authenticate_session(&self, token: &Secret) -> Result<AuthenticatedSession> {
        let _ = token;
        Err(Error::not_implemented(
            "server-issued sessions are not kept by this registry",
        ))
    }

    /// The unexpired sessions of `owner`, oldest first (`NotFound` for an
    /// unknown tenant).
    async fn sessions(&self, owner: &SessionOwner) -> Result<Vec<ServerSession>> {
        let _ = owner;
        Err(Error::not_implemented(
            "server-issued sessions are not kept by this registry",
        ))
    }

    /// Ends one session of `owner` at once (`NotFound` when it has none by
    /// that id).
    async fn revoke_session(&self, owner: &SessionOwner, id: &SessionId) -> Result<()> {
        let _ = (owner, id);
        Err(Error::not_implemented(
            "server-issued sessions are not kept by this registry",
        ))
    }

    // ---- named API keys (see `crate::apikey`) ----
    //
    // Registries that keep no keys leave these at their defaults: the key
    // methods refuse with `NotImplemented`, and `authenticate_caller` takes
    // only the primary secret.

    /// Checks a credential that may be the tenant's primary secret or one of
    /// its named keys, with the tenant's id (`Some`, e.g. HTTP Basic auth or
    /// a login) or without it (found through the key's lookup id). The same
    /// refusals as [`TenantRegistry::authenticate`]; a revoked or expired
    /// key is `Unauthorized` saying so. [`TenantRegistry::authenticate`] and
    /// [`TenantRegistry::authenticate_key`] take only the primary secret.
    async fn authenticate_caller(&self, id: Option<&TenantId>, secret: &Secret) -> Result<Caller> {
        let tenant = match id {
            Some(id) => self.authenticate(id, secret).await?,
            None => self.authenticate_key(secret).await?,
        };
        Ok(Caller::primary(tenant))
    }

    /// Creates a named key (shown once in the answer). `InvalidInput` for a
    /// bad name or an expiry in the past, `AlreadyExists` when a usable key
    /// has the name, `QuotaExceeded` beyond
    /// [`crate::apikey::MAX_KEYS_PER_TENANT`] usable keys, `Precondition`
    /// for a deleted tenant.
    async fn create_key(&self, tenant: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
        let _ = (tenant, new);
        Err(Error::not_implemented(
            "API keys are not kept by this registry",
        ))
    }

    /// The tenant's keys (usable, and revoked or expired ones for
    /// [`crate::apikey::KEY_RECORD_RETENTION`]), oldest first.
    async fn keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>> {
        let _ = tenant;
        Err(Error::not_implemented(
            "API keys are not kept by this registry",
        ))
    }

    /// One key (`NotFound` when the tenant has none by that id).
    async fn key(&self, tenant: &TenantId, id: &KeyId) -> Result<ApiKey> {
        self.keys(tenant)
            .await?
            .into_iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::not_found(format!("tenant {tenant} has no API key {id}")))
    }

    /// Revokes a key at once (revoking a revoked key is a no-op that
    /// returns it); the sessions opened with it end too.
    async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<ApiKey> {
        let _ = (tenant, id);
        Err(Error::not_implemented(
            "API keys are not kept by this registry",
        ))
    }

    /// Replaces a usable key with a new one of the same name, role and
    /// expiry; the old key keeps working for `grace` (zero: it stops now).
    async fn rotate_key(
        &self,
        tenant: &TenantId,
        id: &KeyId,
        grace: Duration,
    ) -> Result<RotatedApiKey> {
        let _ = (tenant, id, grace);
        Err(Error::not_implemented(
            "API keys are not kept by this registry",
        ))
    }

    /// Records that a key was used at `at`: at most one write per key per
    /// [`crate::apikey::LAST_USED_GRANULARITY`] (a use within it of the last
    /// recorded one writes nothing).
    async fn touch_key(&self, tenant: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        let _ = (tenant, id, at);
        Err(Error::not_implemented(
            "API keys are not kept by this registry",
        ))
    }
}

macro_rules! forward_registry {
    ($ty:ty) => {
        #[async_trait]
        impl<T: TenantRegistry + ?Sized> TenantRegistry for $ty {
            async fn is_bootstrapped(&self) -> Result<bool> {
                (**self).is_bootstrapped().await
            }
            async fn bootstrap(&self, p: &Secret) -> Result<()> {
                (**self).bootstrap(p).await
            }
            async fn admin_generation(&self) -> Result<u64> {
                (**self).admin_generation().await
            }
            async fn set_admin_password(&self, p: &Secret) -> Result<u64> {
                (**self).set_admin_password(p).await
            }
            async fn verify_admin(&self, p: &Secret) -> Result<()> {
                (**self).verify_admin(p).await
            }
            async fn create(&self, new: NewTenant) -> Result<CreatedTenant> {
                (**self).create(new).await
            }
            async fn get(&self, id: &TenantId) -> Result<Tenant> {
                (**self).get(id).await
            }
            fn list(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
                (**self).list(filter)
            }
            async fn update(&self, id: &TenantId, u: TenantUpdate) -> Result<Tenant> {
                (**self).update(id, u).await
            }
            async fn suspend(&self, id: &TenantId, r: Option<String>) -> Result<Tenant> {
                (**self).suspend(id, r).await
            }
            async fn activate(&self, id: &TenantId) -> Result<Tenant> {
                (**self).activate(id).await
            }
            async fn rotate(&self, id: &TenantId) -> Result<CreatedTenant> {
                (**self).rotate(id).await
            }
            async fn delete(&self, id: &TenantId) -> Result<Tenant> {
                (**self).delete(id).await
            }
            async fn purge(&self, id: &TenantId, grace: Duration) -> Result<u64> {
                (**self).purge(id, grace).await
            }
            async fn authenticate(&self, id: &TenantId, s: &Secret) -> Result<Tenant> {
                (**self).authenticate(id, s).await
            }
            async fn authenticate_key(&self, s: &Secret) -> Result<Tenant> {
                (**self).authenticate_key(s).await
            }
            async fn usage(&self, id: &TenantId) -> Result<Usage> {
                (**self).usage(id).await
            }
            async fn reserve(&self, id: &TenantId, r: Resource, n: u64) -> Result<Reservation> {
                (**self).reserve(id, r, n).await
            }
            async fn commit(&self, r: &Reservation) -> Result<()> {
                (**self).commit(r).await
            }
            async fn release(&self, r: &Reservation) -> Result<()> {
                (**self).release(r).await
            }
            async fn record_usage(&self, id: &TenantId, e: UsageEvent) -> Result<Usage> {
                (**self).record_usage(id, e).await
            }
            async fn release_recording(&self, r: &Reservation, e: UsageEvent) -> Result<bool> {
                (**self).release_recording(r, e).await
            }
            async fn reservations(&self, id: &TenantId) -> Result<Vec<ListedReservation>> {
                (**self).reservations(id).await
            }
            async fn login_tenant(&self, id: &TenantId, s: &Secret) -> Result<IssuedSession> {
                (**self).login_tenant(id, s).await
            }
            async fn login_admin(&self, p: &Secret) -> Result<IssuedSession> {
                (**self).login_admin(p).await
            }
            async fn authenticate_session(&self, t: &Secret) -> Result<AuthenticatedSession> {
                (**self).authenticate_session(t).await
            }
            async fn sessions(&self, o: &SessionOwner) -> Result<Vec<ServerSession>> {
                (**self).sessions(o).await
            }
            async fn revoke_session(&self, o: &SessionOwner, id: &SessionId) -> Result<()> {
                (**self).revoke_session(o, id).await
            }
            async fn authenticate_caller(
                &self,
                id: Option<&TenantId>,
                s: &Secret,
            ) -> Result<Caller> {
                (**self).authenticate_caller(id, s).await
            }
            async fn create_key(&self, t: &TenantId, new: NewApiKey) -> Result<CreatedApiKey> {
                (**self).create_key(t, new).await
            }
            async fn keys(&self, t: &TenantId) -> Result<Vec<ApiKey>> {
                (**self).keys(t).await
            }
            async fn key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
                (**self).key(t, id).await
            }
            async fn revoke_key(&self, t: &TenantId, id: &KeyId) -> Result<ApiKey> {
                (**self).revoke_key(t, id).await
            }
            async fn rotate_key(
                &self,
                t: &TenantId,
                id: &KeyId,
                g: Duration,
            ) -> Result<RotatedApiKey> {
                (**self).rotate_key(t, id, g).await
            }
            async fn touch_key(&self, t: &TenantId, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
                (**self).touch_key(t, id, at).await
            }
        }
    };
}

forward_registry!(Arc<T>);
forward_registry!(Box<T>);

/// Convenience methods for every [`TenantRegistry`].
#[async_trait]
pub trait TenantRegistryExt: TenantRegistry {
    /// Collects `list(filter)` into a vector sorted by id.
    async fn list_all(&self, filter: TenantFilter) -> Result<Vec<Tenant>> {
        use futures::TryStreamExt;
        let mut all: Vec<Tenant> = self.list(filter).try_collect().await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// Collects `list(filter)` without stopping at a record that cannot be
    /// read: the readable tenants sorted by id, and the errors (for example
    /// [`Error::Corrupt`] naming a tenant) in the order they came.
    async fn list_partial(&self, filter: TenantFilter) -> (Vec<Tenant>, Vec<Error>) {
        use futures::StreamExt;
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        let mut stream = self.list(filter);
        while let Some(item) = stream.next().await {
            match item {
                Ok(t) => ok.push(t),
                Err(e) => errors.push(e),
            }
        }
        ok.sort_by(|a: &Tenant, b: &Tenant| a.id.cmp(&b.id));
        (ok, errors)
    }

    /// Reserves and commits in one step.
    async fn reserve_committed(
        &self,
        id: &TenantId,
        resource: Resource,
        amount: u64,
    ) -> Result<Reservation> {
        let r = self.reserve(id, resource, amount).await?;
        self.commit(&r).await?;
        Ok(r)
    }
}

impl<R: TenantRegistry + ?Sized> TenantRegistryExt for R {}

/// The quota reservations of one write: taken one by one, then all
/// committed (the write happened) or all released (it did not); and
/// amounts held by earlier committed writes given back. The state API's
/// and the stacks' byte and object accounting share it.
#[derive(Debug)]
pub struct Account<'a> {
    registry: &'a dyn TenantRegistry,
    tenant: &'a TenantId,
    taken: Vec<Reservation>,
}

impl<'a> Account<'a> {
    /// An empty account of `tenant`'s reservations.
    pub fn new(registry: &'a dyn TenantRegistry, tenant: &'a TenantId) -> Self {
        Account {
            registry,
            tenant,
            taken: Vec::new(),
        }
    }

    /// Reserves `amount` of `resource` (nothing for 0); over a limit:
    /// [`Error::QuotaExceeded`](crate::Error::QuotaExceeded).
    pub async fn reserve(&mut self, resource: Resource, amount: u64) -> Result<()> {
        if amount > 0 {
            let r = self.registry.reserve(self.tenant, resource, amount).await?;
            self.taken.push(r);
        }
        Ok(())
    }

    /// Commits every reservation taken.
    pub async fn commit_all(&mut self) -> Result<()> {
        for r in std::mem::take(&mut self.taken) {
            self.registry.commit(&r).await?;
        }
        Ok(())
    }

    /// Releases every reservation taken.
    pub async fn release_all(&mut self) -> Result<()> {
        for r in std::mem::take(&mut self.taken) {
            self.registry.release(&r).await?;
        }
        Ok(())
    }

    /// Gives back `amount` of `resource` held by earlier committed writes
    /// (a release of a fresh reservation id, never more than the counter
    /// holds beyond listed reservations).
    pub async fn give_back(&self, resource: Resource, amount: u64) -> Result<()> {
        if amount == 0 {
            return Ok(());
        }
        let r = Reservation {
            id: Uuid::new_v4(),
            tenant: self.tenant.clone(),
            resource,
            amount,
            created_at: Utc::now(),
        };
        self.registry.release(&r).await
    }
}
