//! Secrets: the admin credential in the manifest, tenant secrets (create,
//! rotate), authentication by id or by key alone through the lookup-id
//! index, and every bcrypt hash and verify, which run through the
//! [`BlockingRunner`](super::BlockingRunner) when one is set.

use tenancy_core::tenant::DEFAULT_STATE_VERSION;
use tenancy_core::{
    credentials, CreatedTenant, DeleteMode, Error, Object, PutMode, Result, Secret,
    StateBackendExt, StateKey, Step, Tenant, TenantId, TenantStatus, TOOL_VERSION,
};

use super::records::{
    from_yaml, is_bcrypt_hash, to_yaml, AdminCredential, CredentialRecord, KeyIndexEntry, Manifest,
    RegistryConfig, TenantRecord,
};
use super::writes::decode_manifest;
use super::{
    layout, StoreRegistry, MANIFEST_FORMAT_VERSION, MAX_PASSWORD_BYTES, MIN_ADMIN_PASSWORD_LEN,
};

const UNAUTHORIZED: &str = "invalid tenant credentials";

impl StoreRegistry {
    /// Runs `f` through the blocking runner if there is one, else inline.
    async fn cpu<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let Some(runner) = &self.blocking else {
            return Ok(f());
        };
        super::run_blocking(runner.as_ref(), f)
            .await
            .ok_or_else(|| Error::backend("blocking", "the blocking runner dropped a bcrypt job"))
    }

    /// bcrypt verify; a job the runner dropped counts as a mismatch.
    pub(super) async fn verify(&self, presented: &Secret, hash: &str) -> bool {
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

    /// The hash a login that names no tenant verifies against: the
    /// manifest's dummy hash (read once per process), which has the cost of
    /// the stored records whatever this process's configured cost is.
    async fn login_dummy(&self) -> String {
        if let Some(h) = self.dummy_hash.get() {
            return h.clone();
        }
        let stored = match self.manifest().await {
            Ok((m, _)) => Some(m.config.dummy_hash.unwrap_or(m.config.admin.hash)),
            Err(_) => None,
        };
        let hash = match stored {
            Some(h) if is_bcrypt_hash(&h).is_some() => h,
            // No readable manifest: the record read failed or found nothing
            // either way; hash at the configured cost (a fixed, well-formed
            // cost-4 hash only if hashing itself fails, which cannot happen
            // for a cost inside the accepted range).
            _ => credentials::dummy_hash(self.cost).unwrap_or_else(|_| {
                "$2b$04$abcdefghijklmnopqrstuu5Qd0Z7kk0SUT8ElNhk8eYN3ao6W/Ifq".to_string()
            }),
        };
        let _ = self.dummy_hash.set(hash.clone());
        hash
    }

    /// Checks the secret of a record already read: `Unauthorized` on a
    /// mismatch, `Forbidden` when the tenant may not work.
    async fn check_secret(&self, t: TenantRecord, secret: &Secret) -> Result<Tenant> {
        if !self.verify(secret, &t.credential.hash).await {
            return Err(Error::unauthorized(UNAUTHORIZED));
        }
        let t = self.view(&t)?;
        t.ensure_active(self.now())?;
        Ok(t)
    }

    pub(super) async fn new_credential(&self, prefix: &str) -> Result<(Secret, CredentialRecord)> {
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

    pub(super) async fn write_index(
        &self,
        lookup_id: &str,
        id: &TenantId,
        key_id: Option<&tenancy_core::KeyId>,
    ) -> Result<StateKey> {
        let key = layout::key_index(lookup_id)?;
        let entry = KeyIndexEntry {
            tenant: id.clone(),
            created_at: self.now(),
            key: key_id.cloned(),
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

    // ---- the admin credential ----

    pub(super) async fn stored_admin_generation(&self) -> Result<u64> {
        Ok(self.manifest().await?.0.config.admin.generation)
    }

    pub(super) async fn change_admin_password(&self, new: &Secret) -> Result<u64> {
        check_password(new, MIN_ADMIN_PASSWORD_LEN)?;
        let hash = self.hash(new).await?;
        self.set_admin_hash(&hash).await
    }

    pub(super) async fn bootstrap_with_password(&self, admin_password: &Secret) -> Result<()> {
        check_password(admin_password, MIN_ADMIN_PASSWORD_LEN)?;
        let hash = self.hash(admin_password).await?;
        self.bootstrap_with_hash(&hash).await
    }

    /// Bootstraps with an already computed bcrypt hash of the admin credential
    /// (a server that generated its admin token stores only the hash).
    /// [`Error::AlreadyExists`] if a registry exists.
    pub async fn bootstrap_with_hash(&self, admin_hash: &str) -> Result<()> {
        let cost = is_bcrypt_hash(admin_hash)
            .ok_or_else(|| Error::invalid("the admin credential hash is not a bcrypt hash"))?;
        self.ensure_cas()?;
        let unknown = credentials::generate_secret(credentials::DEFAULT_SECRET_PREFIX)?;
        let dummy = self.hash(&unknown).await?;
        let dummy_kept = dummy.clone();
        let now = self.now();
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            tool_version: TOOL_VERSION.to_string(),
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
                dummy_hash: Some(dummy.clone()),
            },
        };
        let bytes = to_yaml(&manifest, "the registry manifest")?;
        match self
            .backend
            .put(&layout::manifest()?, bytes, PutMode::Create)
            .await
        {
            Ok(_) => {
                let _ = self.dummy_hash.set(dummy_kept);
                Ok(())
            }
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
        let step = |current: Option<&Object>| {
            let obj = current.ok_or_else(|| {
                Error::not_found("registry manifest tenants.yaml: the registry is not initialised (run `tenancy init`)")
            })?;
            let mut m = decode_manifest(&obj.bytes)?;
            let now = self.now();
            m.updated_at = now;
            m.config.admin = AdminCredential {
                algorithm: "bcrypt".into(),
                hash: admin_hash.to_string(),
                cost,
                generation: m.config.admin.generation + 1,
                updated_at: now,
            };
            let generation = m.config.admin.generation;
            Ok(Step::Write(
                to_yaml(&m, "the registry manifest")?,
                generation,
            ))
        };
        let done = self
            .backend
            .update_with(
                &layout::manifest()?,
                self.retry("the registry manifest"),
                step,
            )
            .await?;
        Ok(done.value)
    }

    pub(super) async fn verify_admin_password(&self, password: &Secret) -> Result<()> {
        self.verify_admin_generation(password).await.map(|_| ())
    }

    /// Checks the admin credential and returns the generation of the
    /// credential it matched (read with the hash, in one read).
    pub(super) async fn verify_admin_generation(&self, password: &Secret) -> Result<u64> {
        let (m, _) = self.manifest().await?;
        if password.expose().len() <= MAX_PASSWORD_BYTES
            && self.verify(password, &m.config.admin.hash).await
        {
            Ok(m.config.admin.generation)
        } else {
            Err(Error::unauthorized("invalid admin credential"))
        }
    }

    // ---- tenant secrets ----

    pub(super) async fn authenticate_tenant(
        &self,
        id: &TenantId,
        secret: &Secret,
    ) -> Result<Tenant> {
        // The record and the dummy hash are read side by side on every
        // login, so a known and an unknown id cost the same reads and one
        // bcrypt verify each, at the same cost.
        let (record, dummy) = futures::join!(self.read_record(id), self.login_dummy());
        match record? {
            None => {
                let _ = self.verify(secret, &dummy).await;
                Err(Error::unauthorized(UNAUTHORIZED))
            }
            Some((t, _)) => self.check_secret(t, secret).await,
        }
    }

    /// A key alone: refused with no bcrypt at all when it is malformed or
    /// its lookup id names no tenant (the lookup id comes from the key
    /// itself, so refusing early tells an attacker nothing it did not send).
    pub(super) async fn authenticate_by_key(&self, secret: &Secret) -> Result<Tenant> {
        if credentials::parse_secret(secret.expose()).is_none() {
            return Err(Error::unauthorized(UNAUTHORIZED));
        }
        let lookup = credentials::lookup_id(secret.expose());
        let index = match self.backend.get(&layout::key_index(&lookup)?).await? {
            None => None,
            Some(o) => Some(from_yaml::<KeyIndexEntry>(
                &o.bytes,
                "an API-key index entry",
            )?),
        };
        // A named key's entry: not the primary secret (`authenticate_caller` takes keys).
        let Some(entry) = index.filter(|e| e.key.is_none()) else {
            return Err(Error::unauthorized(UNAUTHORIZED));
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
            // An index entry left by a rotation or a crash: no such key.
            _ => Err(Error::unauthorized(UNAUTHORIZED)),
        }
    }

    pub(super) async fn rotate_secret(&self, id: &TenantId) -> Result<CreatedTenant> {
        self.ensure_cas()?;
        let (current, _) = self.get_record(id).await?;
        if current.status == TenantStatus::Deleted {
            return Err(Error::precondition(format!(
                "tenant {id} is deleted; its secret cannot be rotated"
            )));
        }
        let (secret, fresh) = self.new_credential(&current.credential.prefix).await?;
        let new_index = self.write_index(&fresh.lookup_id, id, None).await?;
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
}
