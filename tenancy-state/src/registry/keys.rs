//! Named API keys: create, list, revoke, rotate with a grace period, the
//! last-use mark, and authentication of a credential that may be a key or
//! the primary secret.
//!
//! # Layout and writes
//!
//! ```text
//! registry-apikeys/<id>.yaml         the tenant's keys (one record: `KeySetRecord`)
//! registry-keys/<lookup-id>.yaml     the index, shared with primary secrets; an
//!                                    entry of a named key also names the key id
//! ```
//!
//! Outside `tenants/<id>/`, like every registry record, so a tenant that
//! can write its own prefix can neither add a key nor raise a role. A key
//! is a secret of the primary secret's shape and prefix (so secret scanners
//! recognize both and a mistyped one is refused by its checksum before any
//! read); the record keeps its bcrypt hash, lookup id, prefix and last four
//! characters, never the key.
//!
//! - **create**: the index entry first (`Create`), then the key set
//!   (`update_with`: one compare-and-swap decides the count of usable keys
//!   against [`MAX_KEYS_PER_TENANT`] and the name's uniqueness, so two
//!   racing creates can never both take the last slot or one name). A
//!   crash or a refusal between the two leaves an index entry naming a key
//!   the set does not hold: ignored by authentication (and deleted on a
//!   refusal).
//! - **revoke**: sets `revoked_at` in the set (the next authentication on
//!   any replica reads the set and refuses), then deletes the index entry
//!   (tidying).
//! - **rotate**: a new key (index entry first), then one write of the set
//!   that adds it and sets the old key's `expires_at` to now + grace (never
//!   later than it already was) and `rotated_to`.
//! - **last use**: [`touch_key`](tenancy_core::TenantRegistry::touch_key)
//!   writes only when the recorded use is older than
//!   [`LAST_USED_GRANULARITY`]; the server calls it at most once per key per
//!   granularity, so a key in constant use costs one write a minute.
//! - Revoked and expired keys stay listed for [`KEY_RECORD_RETENTION`], then
//!   the next write of the set drops them (their index entries are deleted
//!   at revocation, or go with the dropped record as tidying).
//!
//! # Authentication
//!
//! [`authenticate_caller`](tenancy_core::TenantRegistry::authenticate_caller)
//! reads the index entry of the presented credential's lookup id. An entry
//! that names a key reads the tenant record and the key set side by side,
//! finds the key by id with the lookup id compared in constant time,
//! verifies bcrypt against its hash, then checks the key (revoked, expired)
//! and the tenant's status: three reads, one bcrypt. Any other credential
//! is the primary secret's path (`secrets.rs`). A credential whose lookup
//! id names no key and no tenant is refused with no bcrypt at all when no
//! id is given, and after a dummy verify when one is (so an unknown id
//! costs what a wrong secret costs).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tenancy_core::apikey::{
    validate_key_name, KEY_RECORD_RETENTION, LAST_USED_GRANULARITY, MAX_KEYS_PER_TENANT,
};
use tenancy_core::clock::chrono_duration;
use tenancy_core::{
    credentials, ApiKey, Caller, CreatedApiKey, DeleteMode, Error, KeyId, NewApiKey, Object,
    Result, RotatedApiKey, Secret, StateBackendExt, Step, TenantId, TenantStatus,
};

use super::layout;
use super::records::{from_yaml, to_yaml, KeyIndexEntry, KeyRecord, KeySetRecord};
use super::StoreRegistry;

const UNAUTHORIZED: &str = "invalid tenant credentials";

fn decode_set(obj: Option<&Object>, id: &TenantId) -> Result<KeySetRecord> {
    match obj {
        None => Ok(KeySetRecord::default()),
        Some(o) => from_yaml(&o.bytes, &format!("the API keys of tenant {id}")),
    }
}

fn usable(k: &KeyRecord, now: DateTime<Utc>) -> bool {
    k.revoked_at.is_none() && k.expires_at.is_none_or(|at| now < at)
}

/// Drops keys revoked or expired longer than the retention ago.
fn prune(set: &mut KeySetRecord, now: DateTime<Utc>) {
    let cutoff = now - chrono_duration(KEY_RECORD_RETENTION);
    set.keys.retain(|k| {
        let ended = k.revoked_at.or(k.expires_at.filter(|at| *at <= now));
        ended.is_none_or(|at| at > cutoff)
    });
}

impl StoreRegistry {
    /// The tenant's key set as stored, or an empty one.
    async fn key_set(&self, tenant: &TenantId) -> Result<KeySetRecord> {
        let obj = self.backend.get(&layout::api_keys(tenant)?).await?;
        decode_set(obj.as_ref(), tenant)
    }

    /// A new key's secret and record (hashed on the blocking runner).
    async fn new_key_record(
        &self,
        tenant: &TenantId,
        name: String,
        role: tenancy_core::Role,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(Secret, KeyRecord)> {
        let (record, _) = self.get_record(tenant).await?;
        if record.status == TenantStatus::Deleted {
            return Err(Error::precondition(format!(
                "tenant {tenant} is deleted; it cannot get new API keys"
            )));
        }
        let (secret, credential) = self.new_credential(&record.credential.prefix).await?;
        let exposed = secret.expose();
        let last_four = exposed[exposed.len().saturating_sub(4)..].to_string();
        Ok((
            secret,
            KeyRecord {
                id: KeyId::generate(),
                name,
                role,
                algorithm: credential.algorithm,
                hash: credential.hash,
                cost: credential.cost,
                prefix: credential.prefix,
                last_four,
                lookup_id: credential.lookup_id,
                created_at: self.now(),
                expires_at,
                last_used_at: None,
                revoked_at: None,
                rotated_to: None,
            },
        ))
    }

    /// Runs `f` on the tenant's key set in one compare-and-swap (retried on
    /// a lost race); expired records past retention are dropped on the way.
    async fn modify_keys<T, F>(&self, tenant: &TenantId, mut f: F) -> Result<T>
    where
        T: Send,
        F: FnMut(&mut KeySetRecord, DateTime<Utc>) -> Result<T> + Send,
    {
        self.ensure_cas()?;
        let what = format!("the API keys of tenant {tenant}");
        let step = |current: Option<&Object>| {
            let mut set = decode_set(current, tenant)?;
            let now = self.now();
            prune(&mut set, now);
            let value = f(&mut set, now)?;
            Ok(Step::Write(to_yaml(&set, &what)?, value))
        };
        let done = self
            .backend
            .update_with(&layout::api_keys(tenant)?, self.retry(&what), step)
            .await?;
        Ok(done.value)
    }

    async fn drop_index(&self, lookup_id: &str) {
        // Tidying: an index entry that names no usable key authenticates nothing.
        if let Ok(k) = layout::key_index(lookup_id) {
            let _ = self.backend.delete(&k, DeleteMode::Any).await;
        }
    }

    pub(super) async fn create_api_key(
        &self,
        tenant: &TenantId,
        new: NewApiKey,
    ) -> Result<CreatedApiKey> {
        validate_key_name(&new.name)?;
        if new.expires_at.is_some_and(|at| at <= self.now()) {
            return Err(Error::invalid("a key's expiry must lie in the future"));
        }
        let (secret, record) = self
            .new_key_record(tenant, new.name.clone(), new.role, new.expires_at)
            .await?;
        self.write_index(&record.lookup_id, tenant, Some(&record.id))
            .await?;
        let added = record.clone();
        let result = self
            .modify_keys(tenant, |set, now| {
                let live: Vec<&KeyRecord> = set.keys.iter().filter(|k| usable(k, now)).collect();
                if live.iter().any(|k| k.name == added.name) {
                    return Err(Error::already_exists(format!(
                        "tenant {tenant} already has a usable API key named {}; revoke it or pick another name",
                        added.name
                    )));
                }
                if live.len() >= MAX_KEYS_PER_TENANT {
                    return Err(Error::QuotaExceeded {
                        tenant: tenant.to_string(),
                        resource: "api_keys".into(),
                        limit: MAX_KEYS_PER_TENANT as u64,
                        requested: live.len() as u64 + 1,
                        retry_after: None,
                    });
                }
                set.keys.push(added.clone());
                Ok(())
            })
            .await;
        match result {
            Ok(()) => Ok(CreatedApiKey {
                key: record.view(tenant),
                secret,
            }),
            Err(e) => {
                self.drop_index(&record.lookup_id).await;
                Err(e)
            }
        }
    }

    pub(super) async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>> {
        // NotFound for an unknown tenant.
        self.get_record(tenant).await?;
        let mut set = self.key_set(tenant).await?;
        prune(&mut set, self.now());
        Ok(set.keys.iter().map(|k| k.view(tenant)).collect())
    }

    pub(super) async fn revoke_api_key(&self, tenant: &TenantId, id: &KeyId) -> Result<ApiKey> {
        self.get_record(tenant).await?;
        let (key, lookup) = self
            .modify_keys(tenant, |set, now| {
                let k = set.keys.iter_mut().find(|k| &k.id == id).ok_or_else(|| {
                    Error::not_found(format!("tenant {tenant} has no API key {id}"))
                })?;
                if k.revoked_at.is_none() {
                    k.revoked_at = Some(now);
                }
                Ok((k.view(tenant), k.lookup_id.clone()))
            })
            .await?;
        self.drop_index(&lookup).await;
        Ok(key)
    }

    pub(super) async fn rotate_api_key(
        &self,
        tenant: &TenantId,
        id: &KeyId,
        grace: Duration,
    ) -> Result<RotatedApiKey> {
        let current = self
            .key_set(tenant)
            .await?
            .keys
            .into_iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::not_found(format!("tenant {tenant} has no API key {id}")))?;
        let now = self.now();
        if !usable(&current, now) {
            return Err(Error::precondition(format!(
                "API key {} ({id}) is {}; only a usable key can be rotated (create a new one)",
                current.name,
                current.view(tenant).status_at(now)
            )));
        }
        let (secret, fresh) = self
            .new_key_record(
                tenant,
                current.name.clone(),
                current.role,
                current.expires_at,
            )
            .await?;
        self.write_index(&fresh.lookup_id, tenant, Some(&fresh.id))
            .await?;
        let added = fresh.clone();
        let result = self
            .modify_keys(tenant, |set, now| {
                let old = set
                    .keys
                    .iter_mut()
                    .find(|k| &k.id == id)
                    .ok_or_else(|| Error::not_found(format!("tenant {tenant} has no API key {id}")))?;
                if !usable(old, now) || old.rotated_to.is_some() {
                    return Err(Error::precondition(format!(
                        "API key {id} was revoked, expired or rotated meanwhile; read it again with `tenancy key list`"
                    )));
                }
                let end = now
                    .checked_add_signed(chrono_duration(grace))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                old.expires_at = Some(old.expires_at.map_or(end, |at| at.min(end)));
                old.rotated_to = Some(added.id.clone());
                let previous = old.view(tenant);
                set.keys.push(added.clone());
                Ok(previous)
            })
            .await;
        match result {
            Ok(previous) => Ok(RotatedApiKey {
                created: CreatedApiKey {
                    key: fresh.view(tenant),
                    secret,
                },
                previous,
            }),
            Err(e) => {
                self.drop_index(&fresh.lookup_id).await;
                Err(e)
            }
        }
    }

    pub(super) async fn touch_api_key(
        &self,
        tenant: &TenantId,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let granularity = chrono_duration(LAST_USED_GRANULARITY);
        let due = |k: &KeyRecord| k.last_used_at.is_none_or(|last| at - last >= granularity);
        // A read first: a use within the granularity writes nothing.
        let set = self.key_set(tenant).await?;
        if !set.keys.iter().any(|k| &k.id == id && due(k)) {
            return Ok(());
        }
        let what = format!("the API keys of tenant {tenant}");
        self.backend
            .update_with(&layout::api_keys(tenant)?, self.retry(&what), |current| {
                // Never creates the set: a missing one has no key to touch.
                let Some(obj) = current else {
                    return Ok(Step::Keep(()));
                };
                let mut set = decode_set(Some(obj), tenant)?;
                match set.keys.iter_mut().find(|k| &k.id == id) {
                    Some(k) if due(k) => {
                        k.last_used_at = Some(at);
                        Ok(Step::Write(to_yaml(&set, &what)?, ()))
                    }
                    _ => Ok(Step::Keep(())),
                }
            })
            .await?;
        Ok(())
    }

    /// The index entry of a presented credential, if it is shaped like a
    /// secret and its lookup id has one.
    pub(super) async fn index_entry(&self, secret: &Secret) -> Result<Option<KeyIndexEntry>> {
        if credentials::parse_secret(secret.expose()).is_none() {
            return Ok(None);
        }
        let lookup = credentials::lookup_id(secret.expose());
        match self.backend.get(&layout::key_index(&lookup)?).await? {
            None => Ok(None),
            Some(o) => Ok(Some(from_yaml(&o.bytes, "an API-key index entry")?)),
        }
    }

    pub(super) async fn authenticate_any(
        &self,
        id: Option<&TenantId>,
        secret: &Secret,
    ) -> Result<Caller> {
        let entry = self.index_entry(secret).await?;
        let Some((entry, key_id)) = entry.and_then(|e| e.key.clone().map(|k| (e, k))) else {
            let tenant = match id {
                Some(id) => self.authenticate_tenant(id, secret).await?,
                None => self.authenticate_by_key(secret).await?,
            };
            return Ok(Caller::primary(tenant));
        };
        if id.is_some_and(|id| id != &entry.tenant) {
            // Another tenant's key: the sender holds it, so refusing without
            // bcrypt tells it nothing new.
            return Err(Error::unauthorized(UNAUTHORIZED));
        }
        let tenant = &entry.tenant;
        let (record, set) = futures::join!(self.read_record(tenant), self.key_set(tenant));
        let Some((record, _)) = record? else {
            return Err(Error::unauthorized(UNAUTHORIZED));
        };
        let lookup = credentials::lookup_id(secret.expose());
        let Some(key) = set?.keys.into_iter().find(|k| {
            k.id == key_id
                && credentials::constant_time_eq(k.lookup_id.as_bytes(), lookup.as_bytes())
        }) else {
            // An entry left by a crash or a refused create: no such key.
            return Err(Error::unauthorized(UNAUTHORIZED));
        };
        if !self.verify(secret, &key.hash).await {
            return Err(Error::unauthorized(UNAUTHORIZED));
        }
        let view = key.view(tenant);
        let now = self.now();
        view.ensure_usable(now)?;
        let tenant = self.view(&record)?;
        tenant.ensure_active(now)?;
        Ok(Caller {
            tenant,
            key: Some(view),
        })
    }

    /// The current record of the key a session was opened with (`None` if
    /// the set no longer holds it).
    pub(super) async fn session_key(
        &self,
        tenant: &TenantId,
        id: &KeyId,
    ) -> Result<Option<ApiKey>> {
        Ok(self
            .key_set(tenant)
            .await?
            .keys
            .iter()
            .find(|k| &k.id == id)
            .map(|k| k.view(tenant)))
    }
}
