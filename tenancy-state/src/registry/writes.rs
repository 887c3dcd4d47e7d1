//! Reading and writing tenant records and the manifest: create, get, list,
//! update, suspend, activate. Every change is a compare-and-swap through
//! [`StateBackendExt::update_with`]; revision and `updated_at` are bumped in
//! one place ([`StoreRegistry::modify`]).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use tenancy_core::registry::{
    tenant_id_from_name, validate_display_name, validate_email, validate_metadata,
};
use tenancy_core::{
    credentials, CreatedTenant, DeleteMode, Error, NewTenant, Object, PutMode, Result,
    StateBackendExt, StateKey, Step, Tenant, TenantFilter, TenantId, TenantStatus, TenantUpdate,
    Version,
};

use super::records::{from_yaml, storage_info, to_yaml, Manifest, TenantConfig, TenantRecord};
use super::usage::UsageRecord;
use super::{
    layout, StoreRegistry, HALF_CREATED_GRACE, LIST_BATCH, LIST_BATCHES_IN_FLIGHT,
    MANIFEST_FORMAT_VERSION,
};

impl StoreRegistry {
    /// Reads the manifest; [`Error::NotFound`] when the registry is not bootstrapped.
    pub(super) async fn manifest(&self) -> Result<(Manifest, Version)> {
        let obj = self.backend.get(&layout::manifest()?).await?;
        let obj = obj.ok_or_else(|| {
            Error::not_found(
                "registry manifest tenants.yaml: the registry is not initialised (run `tenancy init`)",
            )
        })?;
        let m = decode_manifest(&obj.bytes)?;
        Ok((m, obj.version))
    }

    /// Reads a tenant record as stored (status not adjusted for expiry) with
    /// its object version. One read. [`Error::NotFound`] if there is none,
    /// [`Error::Corrupt`] naming the tenant if it cannot be decoded.
    pub(super) async fn get_record(&self, id: &TenantId) -> Result<(TenantRecord, Version)> {
        self.read_record(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("tenant {id}")))
    }

    pub(crate) async fn read_record(
        &self,
        id: &TenantId,
    ) -> Result<Option<(TenantRecord, Version)>> {
        match self.backend.get(&layout::record(id)?).await? {
            None => Ok(None),
            Some(o) => Ok(Some((decode_record(id, &o.bytes)?, o.version))),
        }
    }

    /// The domain view of a record, with the status adjusted for expiry.
    pub(super) fn view(&self, rec: &TenantRecord) -> Result<Tenant> {
        let mut t = rec.to_tenant()?;
        t.status = rec.effective_status(self.now());
        Ok(t)
    }

    /// An active tenant's record, for quota operations: `NotFound` or `Forbidden` otherwise.
    pub(super) async fn active_record(&self, id: &TenantId) -> Result<TenantRecord> {
        let (t, _) = self.get_record(id).await?;
        t.to_tenant()?.ensure_active(self.now())?;
        Ok(t)
    }

    /// Read-modify-write of a tenant record with compare-and-swap, retried
    /// on a lost race. `f` sees the stored record and the current time; its
    /// errors are returned as they are. Revision and `updated_at` are bumped here.
    pub(super) async fn modify<F>(&self, id: &TenantId, mut f: F) -> Result<Tenant>
    where
        F: FnMut(&mut TenantRecord, DateTime<Utc>) -> Result<()> + Send,
    {
        self.ensure_cas()?;
        let what = format!("tenant {id}");
        let step = |current: Option<&Object>| {
            let obj = current.ok_or_else(|| Error::not_found(format!("tenant {id}")))?;
            let mut t = decode_record(id, &obj.bytes)?;
            let now = self.now();
            f(&mut t, now)?;
            t.revision += 1;
            t.updated_at = now;
            Ok(Step::Write(to_yaml(&t, &what)?, t))
        };
        let done = self
            .backend
            .update_with(&layout::record(id)?, self.retry(&what), step)
            .await?;
        self.view(&done.value)
    }

    pub(crate) async fn create_if_absent(&self, key: &StateKey, bytes: Bytes) -> Result<()> {
        match self.backend.put(key, bytes, PutMode::Create).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn create_tenant(&self, new: NewTenant) -> Result<CreatedTenant> {
        // Validate everything before the first write.
        let id = match (&new.id, &new.display_name) {
            (Some(id), _) => id.clone(),
            (None, Some(name)) => tenant_id_from_name(name)?,
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
        let record = TenantRecord {
            id: id.clone(),
            display_name: display_name.clone(),
            email: new.email.clone(),
            status: TenantStatus::Active,
            plan: new.plan,
            limit_overrides: new.limits,
            storage: storage_info(&id, &state_version)?,
            lock_prefix: tenancy_core::layout::lock_prefix(&id),
            metadata: new.metadata.clone(),
            suspended_reason: None,
            created_at: now,
            updated_at: now,
            expires_at: new.expires_at,
            deleted_at: None,
            revision: 1,
            credential,
        };
        let record_bytes = to_yaml(&record, &format!("tenant {id}"))?;

        // Index first: a crash after it leaves an index entry that matches no
        // record, which authenticate_key ignores.
        let index_key = self
            .write_index(&record.credential.lookup_id, &id, None)
            .await?;
        let record_key = layout::record(&id)?;
        let took_over = match self
            .backend
            .put(&record_key, record_bytes.clone(), PutMode::Create)
            .await
        {
            Ok(_) => false,
            Err(Error::AlreadyExists { .. }) => {
                match self.take_over_half_created(&id, record_bytes).await {
                    Ok(true) => true,
                    Ok(false) => {
                        let _ = self.backend.delete(&index_key, DeleteMode::Any).await;
                        return Err(Error::already_exists(format!("tenant {id}")));
                    }
                    Err(e) => {
                        let _ = self.backend.delete(&index_key, DeleteMode::Any).await;
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                let _ = self.backend.delete(&index_key, DeleteMode::Any).await;
                return Err(e);
            }
        };
        let config = TenantConfig {
            tenant: id.to_string(),
            display_name,
            state_version: state_version.clone(),
            ..Default::default()
        };
        let config_bytes = to_yaml(&config, "tenant config")?;
        if took_over {
            // The half-created tenant's config, if any, belongs to a create
            // whose caller never got the tenant: this one replaces it.
            self.backend
                .put(
                    &layout::tenant_config(&id)?,
                    config_bytes,
                    PutMode::Overwrite,
                )
                .await?;
        } else {
            self.create_if_absent(&layout::tenant_config(&id)?, config_bytes)
                .await?;
        }
        self.create_if_absent(
            &layout::state_marker(&id, &state_version)?,
            marker_bytes(&id, &state_version, now)?,
        )
        .await?;
        self.create_if_absent(
            &layout::usage(&id)?,
            super::usage::encode(&UsageRecord::new(id.clone()), "usage record")?,
        )
        .await?;
        Ok(CreatedTenant {
            tenant: self.view(&record)?,
            secret,
        })
    }

    /// Replaces the record of a half-created tenant ([`Self::is_half_created`])
    /// with `record_bytes`, by a compare-and-swap on the version just read,
    /// so of two creates of the id exactly one takes it over; then deletes
    /// the old record's index entry, which matches no record any more.
    /// False when the stored tenant is not half-created (or another create
    /// took it over first).
    async fn take_over_half_created(&self, id: &TenantId, record_bytes: Bytes) -> Result<bool> {
        let Some((old, version)) = self.read_record(id).await? else {
            // deleted meanwhile (a doctor's rollback): the id is free, but
            // another create may be taking it; one more Create decides
            return match self
                .backend
                .put(&layout::record(id)?, record_bytes, PutMode::Create)
                .await
            {
                Ok(_) => Ok(true),
                Err(Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        };
        if !self.is_half_created(&old).await? {
            return Ok(false);
        }
        match self
            .backend
            .put(&layout::record(id)?, record_bytes, PutMode::Update(version))
            .await
        {
            Ok(_) => {}
            Err(Error::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let old_index = layout::key_index(&old.credential.lookup_id)?;
        let _ = self.backend.delete(&old_index, DeleteMode::Any).await;
        Ok(true)
    }

    /// True when `rec` is a tenant whose `create` stopped halfway (see the
    /// module docs, "Half-created tenants"): never changed since (revision
    /// 1, stored status active), created more than [`HALF_CREATED_GRACE`]
    /// ago, no usage record, its config or its state marker missing, and
    /// nothing else below `tenants/<id>/`.
    pub(crate) async fn is_half_created(&self, rec: &TenantRecord) -> Result<bool> {
        let grace = chrono::Duration::from_std(HALF_CREATED_GRACE)
            .map_err(|e| Error::invalid(format!("half-created grace: {e}")))?;
        if rec.revision != 1
            || rec.status != TenantStatus::Active
            || self.now() - rec.created_at <= grace
        {
            return Ok(false);
        }
        let id = &rec.id;
        if self.backend.get(&layout::usage(id)?).await?.is_some() {
            return Ok(false);
        }
        let config = layout::tenant_config(id)?;
        let marker = layout::state_marker(id, &rec.storage.version)?;
        let mut below = self.backend.list(Some(&layout::tenant_root(id)?));
        let (mut has_config, mut has_marker) = (false, false);
        while let Some(entry) = below.next().await {
            let key = entry?.key;
            if key == config {
                has_config = true;
            } else if key == marker {
                has_marker = true;
            } else {
                return Ok(false);
            }
        }
        Ok(!(has_config && has_marker))
    }

    pub(super) fn list_tenants(&self, filter: TenantFilter) -> BoxStream<'_, Result<Tenant>> {
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
                    Ok(e) => layout::record_id(&e.key).map(|id| Ok((id, e.key))),
                }
            })
            .chunks(LIST_BATCH)
            .map(move |batch| async move {
                // A listing error stays one error; the entries around it are read.
                let mut out = Vec::with_capacity(batch.len());
                let (mut ids, mut keys) = (Vec::new(), Vec::new());
                for entry in batch {
                    match entry {
                        Ok((id, key)) => {
                            ids.push(id);
                            keys.push(key);
                        }
                        Err(e) => out.push(Err(e)),
                    }
                }
                match self.backend.get_many(&keys).await {
                    Err(e) => out.push(Err(e)),
                    // A record deleted between the listing and the read is skipped.
                    Ok(objects) => {
                        out.extend(ids.iter().zip(objects).filter_map(|(id, o)| {
                            o.map(|o| decode_record(id, &o.bytes)?.to_tenant())
                        }))
                    }
                }
                out
            })
            .buffered(LIST_BATCHES_IN_FLIGHT)
            .flat_map(stream::iter)
            .filter_map(move |t| async move {
                match t {
                    Err(e) => Some(Err(e)),
                    Ok(mut t) => {
                        let status = t.effective_status(now);
                        t.status = status;
                        filter.matches(&t, status).then_some(Ok(t))
                    }
                }
            })
            .boxed()
    }

    pub(super) async fn update_tenant(
        &self,
        id: &TenantId,
        update: TenantUpdate,
    ) -> Result<Tenant> {
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

    pub(super) async fn suspend_tenant(
        &self,
        id: &TenantId,
        reason: Option<String>,
    ) -> Result<Tenant> {
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

    pub(super) async fn activate_tenant(&self, id: &TenantId) -> Result<Tenant> {
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
}

/// The state layout marker `tenants/<id>/<version>/layout.yaml`.
pub(crate) fn marker_bytes(
    id: &TenantId,
    version: &str,
    created_at: DateTime<Utc>,
) -> Result<Bytes> {
    #[derive(Serialize)]
    struct Marker<'a> {
        layout: &'a str,
        tenant: &'a str,
        created_at: DateTime<Utc>,
    }
    let marker = Marker {
        layout: version,
        tenant: id.as_str(),
        created_at,
    };
    to_yaml(&marker, "state layout marker")
}

impl StoreRegistry {
    /// Writes whichever of a tenant's config, state marker and usage record
    /// is missing (`tenancy doctor --repair` of an incomplete tenant); what
    /// exists is left alone. Returns the keys written.
    pub(crate) async fn finish_tenant(&self, rec: &TenantRecord) -> Result<Vec<StateKey>> {
        let id = &rec.id;
        let version = &rec.storage.version;
        let config = TenantConfig {
            tenant: id.to_string(),
            display_name: rec.display_name.clone(),
            state_version: version.clone(),
            ..Default::default()
        };
        let objects = [
            (
                layout::tenant_config(id)?,
                to_yaml(&config, "tenant config")?,
            ),
            (
                layout::state_marker(id, version)?,
                marker_bytes(id, version, rec.created_at)?,
            ),
            (
                layout::usage(id)?,
                super::usage::encode(&UsageRecord::new(id.clone()), "usage record")?,
            ),
        ];
        let mut written = Vec::new();
        for (key, bytes) in objects {
            match self.backend.put(&key, bytes, PutMode::Create).await {
                Ok(_) => written.push(key),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Rolls back a half-created tenant ([`Self::is_half_created`], checked
    /// again here): deletes its record by version (so a create that took it
    /// over meanwhile wins), then its index entry, config and marker.
    /// False when it is no longer half-created. Needs conditional delete.
    pub(crate) async fn roll_back_half_created(&self, id: &TenantId) -> Result<bool> {
        if !self.backend.capabilities().conditional_delete {
            return Err(Error::not_implemented(format!(
                "rolling back a half-created tenant needs conditional delete, which the {}                  backend lacks",
                self.backend.name()
            )));
        }
        let Some((rec, version)) = self.read_record(id).await? else {
            return Ok(false);
        };
        if !self.is_half_created(&rec).await? {
            return Ok(false);
        }
        match self
            .backend
            .delete(&layout::record(id)?, DeleteMode::IfVersion(version))
            .await
        {
            Ok(()) => {}
            Err(Error::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        for key in [
            layout::key_index(&rec.credential.lookup_id)?,
            layout::tenant_config(id)?,
            layout::state_marker(id, &rec.storage.version)?,
        ] {
            self.backend.delete(&key, DeleteMode::Any).await?;
        }
        Ok(true)
    }
}

/// Decodes a tenant record; one that does not decode or names another
/// tenant is [`Error::Corrupt`] for that tenant only.
pub(crate) fn decode_record(id: &TenantId, bytes: &[u8]) -> Result<TenantRecord> {
    let what = format!("tenant {id} (registry/{id}.yaml)");
    let t: TenantRecord = from_yaml(bytes, &what)?;
    if &t.id != id {
        return Err(Error::Corrupt {
            what,
            message: format!("the record holds tenant {}", t.id),
        });
    }
    Ok(t)
}

pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = from_yaml(bytes, "registry manifest tenants.yaml")?;
    if m.format_version > MANIFEST_FORMAT_VERSION {
        return Err(Error::Corrupt {
            what: "registry manifest tenants.yaml".into(),
            message: format!(
                "format version {} is newer than this tenancy understands ({MANIFEST_FORMAT_VERSION}); upgrade tenancy",
                m.format_version
            ),
        });
    }
    Ok(m)
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

pub(super) fn name_tenant(e: Error, id: &TenantId) -> Error {
    match e {
        Error::Precondition { what } => Error::precondition(format!("tenant {id}: {what}")),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_from_names() {
        use tenancy_core::registry::tenant_id_from_name as f;
        assert_eq!(f("Acme Corp.").unwrap().as_str(), "acme-corp");
        assert_eq!(f("  42 Team  Blue ").unwrap().as_str(), "team-blue");
        assert!(f("!!").is_err());
        assert!(f("Default").is_err(), "reserved");
        assert_eq!(f(&"a".repeat(100)).unwrap().as_str().len(), 63);
    }
}
