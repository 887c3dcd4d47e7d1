//! The records the registry stores, private to this crate: the manifest
//! (with the admin hash), tenant records (with the credential's hash and
//! lookup id), the tenant config, API-key index entries, and the YAML
//! codec. What callers see are core's domain types, built by
//! [`TenantRecord::to_tenant`]; nothing here leaves the crate.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tenancy_core::credentials::{MAX_BCRYPT_COST, MIN_BCRYPT_COST};
use tenancy_core::{
    layout, ApiKey, CredentialInfo, Error, KeyId, LimitOverrides, Plan, Result, Role, Session,
    SessionKind, StorageInfo, Tenant, TenantId, TenantStatus,
};

/// The admin credential kept in the manifest: a bcrypt hash, never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdminCredential {
    /// Hash algorithm, `bcrypt`.
    pub(crate) algorithm: String,
    /// The bcrypt hash.
    pub(crate) hash: String,
    /// The bcrypt cost of the hash.
    pub(crate) cost: u32,
    /// Bumped whenever the admin credential changes; admin sessions and
    /// cached verifications of an older generation stop working.
    pub(crate) generation: u64,
    /// When the credential was set.
    pub(crate) updated_at: DateTime<Utc>,
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
pub(crate) struct RegistryConfig {
    /// The state layout version new tenants get, e.g. `v1`.
    pub(crate) default_state_version: String,
    /// The admin credential.
    pub(crate) admin: AdminCredential,
    /// A bcrypt hash of a random secret nobody knows, at the cost of the
    /// tenant records, written at bootstrap: a login that names no tenant
    /// verifies against it, so it costs exactly what a wrong secret costs,
    /// even in a one-shot process. Manifests written before it existed lack
    /// it (the admin hash, of the same cost, stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dummy_hash: Option<String>,
}

/// `tenants.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The manifest format version ([`MANIFEST_FORMAT_VERSION`](super::MANIFEST_FORMAT_VERSION)).
    pub(crate) format_version: u32,
    /// The tenancy version that wrote the manifest first.
    pub(crate) tool_version: String,
    /// When the registry was bootstrapped.
    pub(crate) created_at: DateTime<Utc>,
    /// When the manifest was last changed.
    pub(crate) updated_at: DateTime<Utc>,
    /// The configuration.
    pub(crate) config: RegistryConfig,
}

/// `tenants/<id>/tenant.yaml`: configuration the tenant may read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct TenantConfig {
    /// The tenant.
    pub(crate) tenant: String,
    /// Display name at creation.
    pub(crate) display_name: String,
    /// The state layout version.
    pub(crate) state_version: String,
    /// Environments the tenant uses.
    #[serde(default)]
    pub(crate) environments: Vec<String>,
    /// Regions the tenant may use.
    #[serde(default)]
    pub(crate) regions: Vec<String>,
    /// Free-form policies.
    #[serde(default)]
    pub(crate) policies: std::collections::BTreeMap<String, String>,
}

/// `registry-keys/<lookup-id>.yaml`: which tenant a lookup id belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyIndexEntry {
    /// The tenant.
    pub(crate) tenant: TenantId,
    /// When the entry was written.
    pub(crate) created_at: DateTime<Utc>,
    /// The named key the lookup id belongs to (`None`: the tenant's primary
    /// secret; entries written before keys existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<KeyId>,
}

/// `registry-apikeys/<id>.yaml`: a tenant's named API keys, one record per
/// tenant (so the count of usable keys and name uniqueness are decided by
/// one compare-and-swap). Never a key, only bcrypt hashes and lookup ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeySetRecord {
    /// The keys, oldest first.
    #[serde(default)]
    pub(crate) keys: Vec<KeyRecord>,
}

/// One named key in a [`KeySetRecord`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) id: KeyId,
    pub(crate) name: String,
    pub(crate) role: Role,
    /// `bcrypt`.
    pub(crate) algorithm: String,
    pub(crate) hash: String,
    pub(crate) cost: u32,
    pub(crate) prefix: String,
    pub(crate) last_four: String,
    pub(crate) lookup_id: String,
    pub(crate) created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rotated_to: Option<KeyId>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("hash", &"<redacted>")
            .field("lookup_id", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// The public view (no hash, no lookup id).
    pub(crate) fn view(&self, tenant: &TenantId) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            tenant: tenant.clone(),
            name: self.name.clone(),
            role: self.role,
            prefix: self.prefix.clone(),
            last_four: self.last_four.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            rotated_to: self.rotated_to.clone(),
        }
    }
}

/// `registry-sessions/.../<id>.yaml`: a server-issued session. The token
/// itself is never stored, only its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// `admin` or `tenant`.
    pub(crate) kind: SessionRecordKind,
    /// The tenant of a tenant session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<TenantId>,
    /// The credential generation (the tenant's, or the admin credential's)
    /// at login; another generation ends the session.
    pub(crate) generation: u64,
    /// SHA-256 of the token, hex.
    pub(crate) token_sha256: String,
    /// When it was opened.
    pub(crate) created_at: DateTime<Utc>,
    /// When it ends.
    pub(crate) expires_at: DateTime<Utc>,
    /// When it was last used (written at most once per
    /// [`LAST_USED_GRANULARITY`](super::sessions::LAST_USED_GRANULARITY)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_used_at: Option<DateTime<Utc>>,
    /// The named key a tenant session was opened with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<KeyId>,
}

/// The kind of a stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionRecordKind {
    /// The administrator's.
    Admin,
    /// A tenant's.
    Tenant,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("kind", &self.kind)
            .field("tenant", &self.tenant)
            .field("generation", &self.generation)
            .field("token_sha256", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("key", &self.key)
            .finish()
    }
}

impl SessionRecord {
    /// The record of `session`, opened with a token whose SHA-256 is `token_sha256`.
    pub(crate) fn new(session: &Session, token_sha256: String) -> Self {
        let (kind, tenant, generation) = match &session.kind {
            SessionKind::Admin { generation } => (SessionRecordKind::Admin, None, *generation),
            SessionKind::Tenant { tenant, generation } => {
                (SessionRecordKind::Tenant, Some(tenant.clone()), *generation)
            }
        };
        SessionRecord {
            kind,
            tenant,
            generation,
            token_sha256,
            created_at: session.issued_at,
            expires_at: session.expires_at,
            last_used_at: None,
            key: session.key.clone(),
        }
    }

    /// The session it records; `Corrupt` for a tenant session without a tenant.
    pub(crate) fn session(&self, what: &str) -> Result<Session> {
        let kind = match (self.kind, &self.tenant) {
            (SessionRecordKind::Admin, _) => SessionKind::Admin {
                generation: self.generation,
            },
            (SessionRecordKind::Tenant, Some(t)) => SessionKind::Tenant {
                tenant: t.clone(),
                generation: self.generation,
            },
            (SessionRecordKind::Tenant, None) => {
                return Err(Error::Corrupt {
                    what: what.to_string(),
                    message: "a tenant session names no tenant".into(),
                })
            }
        };
        Ok(Session {
            kind,
            issued_at: self.created_at,
            expires_at: self.expires_at,
            key: self.key.clone(),
        })
    }
}

/// Encodes a value as YAML.
pub(crate) fn to_yaml<T: Serialize>(value: &T, what: &str) -> Result<Bytes> {
    serde_yaml_ng::to_string(value)
        .map(Bytes::from)
        .map_err(|e| Error::invalid(format!("cannot encode {what} as YAML: {e}")))
}

/// Decodes YAML; a failure is [`Error::Corrupt`] naming `what`.
pub(crate) fn from_yaml<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_yaml_ng::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn is_bcrypt_hash(hash: &str) -> Option<u32> {
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

/// A tenant's stored credential: never the secret itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CredentialRecord {
    /// Hash algorithm, `bcrypt`.
    pub(crate) algorithm: String,
    /// The bcrypt hash of the current secret.
    pub(crate) hash: String,
    /// The bcrypt cost used.
    pub(crate) cost: u32,
    /// The secret's prefix (the part before `_`).
    pub(crate) prefix: String,
    /// Non-secret lookup id derived from the secret (see `credentials::lookup_id`).
    pub(crate) lookup_id: String,
    /// Bumped by every rotation; sessions of an older generation stop working.
    pub(crate) generation: u64,
    /// How many times the secret was rotated.
    pub(crate) rotations: u64,
    /// When the secret was last rotated.
    pub(crate) last_rotated: Option<DateTime<Utc>>,
}

impl fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("algorithm", &self.algorithm)
            .field("hash", &"<redacted>")
            .field("cost", &self.cost)
            .field("prefix", &self.prefix)
            .field("generation", &self.generation)
            .field("rotations", &self.rotations)
            .field("last_rotated", &self.last_rotated)
            .finish()
    }
}

impl CredentialRecord {
    fn info(&self) -> CredentialInfo {
        CredentialInfo {
            prefix: self.prefix.clone(),
            generation: self.generation,
            rotations: self.rotations,
            last_rotated: self.last_rotated,
        }
    }
}

/// `registry/<id>.yaml`: a tenant as stored. Its shape is the format of
/// every store written so far; `storage.prefix` and `lock_prefix` are
/// written for older readers but never trusted on read (they are derived
/// from the id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TenantRecord {
    pub(crate) id: TenantId,
    pub(crate) display_name: String,
    pub(crate) email: Option<String>,
    pub(crate) status: TenantStatus,
    pub(crate) plan: Plan,
    #[serde(default)]
    pub(crate) limit_overrides: LimitOverrides,
    pub(crate) credential: CredentialRecord,
    pub(crate) storage: StorageInfo,
    pub(crate) lock_prefix: String,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) suspended_reason: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    pub(crate) revision: u64,
}

impl TenantRecord {
    /// The domain view of the record: no hash, no lookup id, prefixes
    /// derived from the id, status as stored (not adjusted for expiry).
    pub(crate) fn to_tenant(&self) -> Result<Tenant> {
        Ok(Tenant {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            status: self.status,
            plan: self.plan,
            limit_overrides: self.limit_overrides,
            credential: self.credential.info(),
            storage: storage_info(&self.id, &self.storage.version)?,
            lock_prefix: layout::lock_prefix(&self.id),
            metadata: self.metadata.clone(),
            suspended_reason: self.suspended_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            deleted_at: self.deleted_at,
            revision: self.revision,
        })
    }

    /// The status at `now`, accounting for expiry ([`TenantStatus::at`]).
    pub(crate) fn effective_status(&self, now: DateTime<Utc>) -> TenantStatus {
        self.status.at(self.expires_at, now)
    }
}

/// Where a tenant's state lives, derived from its id and state version.
pub(crate) fn storage_info(id: &TenantId, version: &str) -> Result<StorageInfo> {
    // Validates the version as one key segment.
    layout::state_root(id, version)?;
    Ok(StorageInfo {
        prefix: layout::tenant_root(id)?.to_string(),
        version: version.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_stored_credentials_redacts_the_hash() {
        let now = Utc::now();
        let hash = "$2b$04$abcdefghijklmnopqrstuu5Qd0Z7kk0SUT8ElNhk8eYN3ao6W/Ifq";
        let admin = AdminCredential {
            algorithm: "bcrypt".into(),
            hash: hash.into(),
            cost: 4,
            generation: 1,
            updated_at: now,
        };
        let tenant = CredentialRecord {
            algorithm: "bcrypt".into(),
            hash: hash.into(),
            cost: 4,
            prefix: "tnc".into(),
            lookup_id: "00ff".into(),
            generation: 1,
            rotations: 0,
            last_rotated: None,
        };
        for shown in [format!("{admin:?}"), format!("{tenant:?}")] {
            assert!(!shown.contains("$2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }
}
