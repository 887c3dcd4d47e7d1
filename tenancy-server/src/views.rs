//! The JSON shapes the API returns and accepts (never a stored record as is:
//! a tenant's credential hash and lookup id never leave the server). Built
//! with both features: the server writes them and the `client` reads them,
//! so the two cannot drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenancy_core::{
    ApiKey, CredentialInfo, KeyId, KeyStatus, LimitOverrides, Limits, ListedReservation, LockId,
    LockInfo, LockKey, Plan, Reservation, Resource, Role, ServerSession, Session, SessionId,
    SessionKind, StorageInfo, Tenant, TenantId, TenantStatus, Usage, UsageEvent,
};
use utoipa::ToSchema;

/// An ETag for a backend version: `"v<version>"` when the version is made of
/// safe characters, else `"x<hex>"`; both decode back exactly.
pub fn etag(v: &tenancy_core::Version) -> String {
    let raw = v.as_str();
    if !raw.is_empty()
        && raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+' | b'=')
        })
    {
        format!("\"v{raw}\"")
    } else {
        let mut s = String::with_capacity(raw.len() * 2 + 3);
        s.push_str("\"x");
        for b in raw.bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('"');
        s
    }
}

/// Decodes an ETag made by [`etag`] (weak tags accepted).
pub fn parse_etag(tag: &str) -> Option<tenancy_core::Version> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    if let Some(raw) = inner.strip_prefix('v') {
        (!raw.is_empty()).then(|| tenancy_core::Version(raw.to_string()))
    } else if let Some(hex) = inner.strip_prefix('x') {
        if hex.len() % 2 != 0 || hex.is_empty() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok().map(tenancy_core::Version)
    } else {
        None
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// The tenant id.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Contact e-mail.
    pub email: Option<String>,
    /// The effective status (`active`, `suspended`, `expired`, `deleted`).
    #[schema(value_type = String)]
    pub status: TenantStatus,
    /// The plan (`free`, `basic`, `pro`, `enterprise`).
    #[schema(value_type = String)]
    pub plan: Plan,
    /// The effective limits (plan defaults with overrides).
    #[schema(value_type = Object)]
    pub limits: Limits,
    /// The per-tenant overrides of the plan's limits.
    #[schema(value_type = Object)]
    pub limit_overrides: LimitOverrides,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Why the tenant is suspended.
    pub suspended_reason: Option<String>,
    /// The credential's generation (bumped by every rotation).
    pub credential_generation: u64,
    /// How many times the secret was rotated.
    pub credential_rotations: u64,
    /// When the secret was last rotated.
    pub credential_last_rotated: Option<DateTime<Utc>>,
    /// The secret's prefix.
    pub secret_prefix: String,
    /// The tenant's state layout version: its state lives under
    /// `tenants/<id>/<state_version>/`.
    #[serde(default = "default_state_version")]
    pub state_version: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
    /// Expiry time, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Deletion time, if deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The record's revision, for optimistic updates (`expected_revision`).
    pub revision: u64,
    /// Its usage counters, when asked for with `?include=usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Usage>,
}

impl TenantView {
    /// The view of `t` at `now` (the status accounts for expiry).
    pub fn new(t: &Tenant, now: DateTime<Utc>) -> Self {
        TenantView {
            id: t.id.to_string(),
            display_name: t.display_name.clone(),
            email: t.email.clone(),
            status: t.effective_status(now),
            plan: t.plan,
            limits: t.limits(),
            limit_overrides: t.limit_overrides,
            metadata: t.metadata.clone(),
            suspended_reason: t.suspended_reason.clone(),
            credential_generation: t.credential.generation,
            credential_rotations: t.credential.rotations,
            credential_last_rotated: t.credential.last_rotated,
            secret_prefix: t.credential.prefix.clone(),
            state_version: t.storage.version.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            expires_at: t.expires_at,
            deleted_at: t.deleted_at,
            revision: t.revision,
            usage: None,
        }
    }

    /// The view with the tenant's usage counters.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }
}

fn default_state_version() -> String {
    tenancy_core::tenant::DEFAULT_STATE_VERSION.to_string()
}

impl TenantView {
    /// The domain view back from the wire: what `TenantRegistry::get`
    /// returns (the status is the effective one; prefixes are derived from
    /// the id, as the registry derives them). `Corrupt` when the server
    /// sent something no tenant can be.
    pub fn to_tenant(&self) -> tenancy_core::Result<Tenant> {
        let bad = |e: tenancy_core::Error| tenancy_core::Error::Corrupt {
            what: format!("the server's view of tenant {}", self.id),
            message: e.to_string(),
        };
        let id = TenantId::new(self.id.clone()).map_err(bad)?;
        tenancy_core::layout::state_root(&id, &self.state_version).map_err(bad)?;
        Ok(Tenant {
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            status: self.status,
            plan: self.plan,
            limit_overrides: self.limit_overrides,
            credential: CredentialInfo {
                prefix: self.secret_prefix.clone(),
                generation: self.credential_generation,
                rotations: self.credential_rotations,
                last_rotated: self.credential_last_rotated,
            },
            storage: StorageInfo {
                prefix: tenancy_core::layout::tenant_root(&id)
                    .map_err(bad)?
                    .to_string(),
                version: self.state_version.clone(),
            },
            lock_prefix: tenancy_core::layout::lock_prefix(&id),
            metadata: self.metadata.clone(),
            suspended_reason: self.suspended_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            deleted_at: self.deleted_at,
            revision: self.revision,
            id,
        })
    }
}

/// A tenant with its secret, shown once (create and rotate).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantWithSecret {
    /// The tenant.
    pub tenant: TenantView,
    /// The secret: shown here once, never stored.
    pub secret: String,
}

/// A tenant's named API key, as every key route and `tenancy key list -o
/// json` show it: never the key, its hash or its lookup id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Its id (`key_` and 16 letters or digits).
    #[schema(value_type = String)]
    pub id: KeyId,
    /// The tenant.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// Its name.
    pub name: String,
    /// `viewer`, `operator` or `owner`.
    #[schema(value_type = String)]
    pub role: Role,
    /// `active`, `expired` or `revoked`, when the answer was made.
    #[schema(value_type = String)]
    pub status: KeyStatus,
    /// The key's prefix (before its `_`).
    pub prefix: String,
    /// Its last four characters.
    pub last_four: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used (to within a minute), if it was.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key a rotation replaced it with.
    #[schema(value_type = Option<String>)]
    pub rotated_to: Option<KeyId>,
}

impl KeyView {
    /// The view of `k` at `now` (which decides its `status`).
    pub fn new(k: &ApiKey, now: DateTime<Utc>) -> Self {
        KeyView {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            name: k.name.clone(),
            role: k.role,
            status: k.status_at(now),
            prefix: k.prefix.clone(),
            last_four: k.last_four.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            rotated_to: k.rotated_to.clone(),
        }
    }

    /// The key back from the wire.
    pub fn to_key(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
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

/// A tenant's keys, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// The keys (usable ones, and revoked or expired ones for 30 days).
    pub keys: Vec<KeyView>,
}

/// `POST /v1/keys` and `POST /v1/tenants/{id}/keys`: a key to create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// Its name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`, starting
    /// with a letter or digit; unique among the tenant's usable keys.
    pub name: String,
    /// `viewer`, `operator` or `owner`.
    #[schema(value_type = String)]
    pub role: Role,
    /// How long it works, in seconds (absent: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

/// A key just created: the key is shown here once, never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKeyView {
    /// The key's record.
    pub key: KeyView,
    /// The key itself.
    pub secret: String,
}

/// `POST /v1/keys/{key_id}/rotate`: how long the old key keeps working.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyBody {
    /// Seconds the old key keeps working (absent or 0: it stops at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// A rotation: the new key (shown once) and the old key's record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotatedKeyView {
    /// The new key's record.
    pub key: KeyView,
    /// The new key itself.
    pub secret: String,
    /// The old key, working until its `expires_at`.
    pub previous: KeyView,
}

/// The longest key lifetime and rotation grace accepted: 10 years.
pub const MAX_KEY_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A list of tenants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// The tenants, sorted by id.
    pub tenants: Vec<TenantView>,
}

/// Usage of one resource against its limit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    /// The resource, e.g. `concurrent_jobs`.
    pub resource: String,
    /// Current usage.
    pub used: u64,
    /// The limit in force.
    pub limit: u64,
    /// What is left (`limit - used`, at least 0).
    pub remaining: u64,
}

/// Usage counters and quotas of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// The tenant id.
    pub tenant: String,
    /// The effective status.
    #[schema(value_type = String)]
    pub status: TenantStatus,
    /// The raw usage counters.
    #[schema(value_type = Object)]
    pub usage: Usage,
    /// Each quota-limited resource: used, limit, remaining.
    pub quotas: Vec<QuotaView>,
}

impl StatsView {
    /// Usage of `t` against its limits.
    pub fn new(t: &Tenant, usage: Usage, now: DateTime<Utc>) -> Self {
        StatsView::from_limits(t.id.as_str(), t.effective_status(now), usage, &t.limits())
    }
}

impl StatsView {
    /// Usage of tenant `id` (at `status`) against `limits`: the same view
    /// as [`StatsView::new`] where only the limits are at hand (a client).
    pub fn from_limits(id: &str, status: TenantStatus, usage: Usage, limits: &Limits) -> Self {
        let quotas = Resource::ALL
            .iter()
            .map(|&r| {
                let used = usage.get(r);
                let limit = r.limit(limits);
                QuotaView {
                    resource: r.as_str().to_string(),
                    used,
                    limit,
                    remaining: limit.saturating_sub(used),
                }
            })
            .collect();
        StatsView {
            tenant: id.to_string(),
            status,
            usage,
            quotas,
        }
    }
}

/// The calling tenant's own profile and usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwnTenantView {
    /// The tenant id.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// The effective status.
    #[schema(value_type = String)]
    pub status: TenantStatus,
    /// The plan.
    #[schema(value_type = String)]
    pub plan: Plan,
    /// The effective limits.
    #[schema(value_type = Object)]
    pub limits: Limits,
    /// Expiry time, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Usage counters (the admin's `/v1/tenants/{id}/stats` adds the
    /// remaining quota of each resource).
    #[schema(value_type = Object)]
    pub usage: Usage,
    /// The whole profile, as the admin sees it (no secret or hash is in it).
    pub profile: TenantView,
}

/// A lock as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LockView {
    /// The lock key, relative to the tenant.
    pub key: String,
    /// The holder's lock id (needed to renew or release).
    pub lock_id: String,
    /// The tenant.
    pub tenant: Option<String>,
    /// Who holds it.
    pub owner: String,
    /// What the holder is doing.
    pub operation: String,
    /// Free-form information.
    pub info: String,
    /// When it was acquired.
    pub created: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires: DateTime<Utc>,
    /// The last renew (or the acquire).
    pub last_heartbeat: DateTime<Utc>,
    /// Strictly increases for a key across every acquire and takeover.
    pub fencing_token: u64,
    /// The version of the tool that took the lock.
    pub version: String,
    /// The client's path for what it locked (empty when it gave none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl From<LockInfo> for LockView {
    fn from(l: LockInfo) -> Self {
        LockView {
            key: l.key.to_string(),
            lock_id: l.lock_id.to_string(),
            tenant: l.tenant.map(|t| t.to_string()),
            owner: l.who,
            operation: l.operation,
            info: l.info,
            created: l.created,
            expires: l.expires,
            last_heartbeat: l.last_heartbeat,
            fencing_token: l.fencing_token,
            version: l.version,
            path: l.path,
        }
    }
}

impl TryFrom<LockView> for LockInfo {
    type Error = tenancy_core::Error;

    /// The lock back from the wire; `Corrupt` when the server sent a key,
    /// id or tenant no lock can have.
    fn try_from(v: LockView) -> tenancy_core::Result<LockInfo> {
        let bad = |e: tenancy_core::Error| tenancy_core::Error::Corrupt {
            what: format!("the server's view of lock {}", v.key),
            message: e.to_string(),
        };
        Ok(LockInfo {
            key: LockKey::new(v.key.clone()).map_err(bad)?,
            lock_id: LockId::parse(&v.lock_id).map_err(bad)?,
            tenant: v
                .tenant
                .clone()
                .map(TenantId::new)
                .transpose()
                .map_err(bad)?,
            who: v.owner,
            operation: v.operation,
            created: v.created,
            expires: v.expires,
            last_heartbeat: v.last_heartbeat,
            fencing_token: v.fencing_token,
            version: v.version,
            info: v.info,
            path: v.path,
        })
    }
}

/// A list of locks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LockList {
    /// The tenant's held locks, sorted by key.
    pub locks: Vec<LockView>,
}

/// One key of a state listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateEntryView {
    /// The key, relative to the tenant.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, where the backend knows it.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A state listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateList {
    /// The keys, sorted.
    pub keys: Vec<StateEntryView>,
    /// True when more keys exist than `limit` allowed.
    pub truncated: bool,
}

/// The answer to a state write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StateWritten {
    /// The key.
    pub key: String,
    /// The new entity tag (also in the `ETag` header).
    pub etag: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// A server-issued session as the API lists it (never its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// The session id (32 hex characters; not a secret): revoke it with
    /// `DELETE /v1/sessions/{id}`.
    pub id: String,
    /// `tenant` or `admin`.
    pub kind: String,
    /// The tenant of a tenant session.
    pub tenant: Option<String>,
    /// The credential generation it was opened with (the tenant's, or the
    /// admin credential's): a rotation or credential change ends it.
    pub generation: u64,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// When it was last used (to within 10 minutes), if it was.
    pub last_used_at: Option<DateTime<Utc>>,
    /// True for the session the listing request was made with.
    #[serde(default)]
    pub current: bool,
    /// The named API key a tenant session was opened with (absent: the
    /// tenant's primary secret); the session has that key's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key: Option<KeyId>,
}

impl SessionView {
    /// The view of `s`; `current` when it is the caller's own.
    pub fn new(s: &ServerSession, current: Option<&SessionId>) -> Self {
        let (kind, tenant, generation) = match &s.session.kind {
            SessionKind::Admin { generation } => ("admin", None, *generation),
            SessionKind::Tenant { tenant, generation } => {
                ("tenant", Some(tenant.to_string()), *generation)
            }
        };
        SessionView {
            id: s.id.to_string(),
            kind: kind.to_string(),
            tenant,
            generation,
            created_at: s.session.issued_at,
            expires_at: s.session.expires_at,
            last_used_at: s.last_used_at,
            current: current == Some(&s.id),
            key: s.session.key.clone(),
        }
    }
}

impl SessionView {
    /// The session back from the wire; `Corrupt` when the server sent
    /// something no session can be.
    pub fn to_session(&self) -> tenancy_core::Result<ServerSession> {
        let bad = |m: String| tenancy_core::Error::Corrupt {
            what: format!("the server's view of session {}", self.id),
            message: m,
        };
        let kind = match (self.kind.as_str(), &self.tenant) {
            ("admin", None) => SessionKind::Admin {
                generation: self.generation,
            },
            ("tenant", Some(t)) => SessionKind::Tenant {
                tenant: TenantId::new(t.clone()).map_err(|e| bad(e.to_string()))?,
                generation: self.generation,
            },
            (k, _) => return Err(bad(format!("kind {k:?} with tenant {:?}", self.tenant))),
        };
        Ok(ServerSession {
            id: SessionId::parse(&self.id).map_err(|e| bad(e.to_string()))?,
            session: Session {
                kind,
                issued_at: self.created_at,
                expires_at: self.expires_at,
                key: self.key.clone(),
            },
            last_used_at: self.last_used_at,
        })
    }
}

/// A list of sessions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// The unexpired sessions.
    pub sessions: Vec<SessionView>,
}

/// A session just opened (`POST /v1/sessions`, `POST /v1/admin/sessions`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedSessionView {
    /// The session token, shown here once (only its SHA-256 is kept): send
    /// it as `Authorization: Bearer <token>`.
    pub token: String,
    /// The session.
    pub session: SessionView,
}

/// The JSON body of every error response: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `unauthorized`, `quota_exceeded`.
    pub code: String,
    /// A human-readable message, safe to show.
    pub message: String,
    /// For `lock_held`: the current holder of the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub holder: Option<Value>,
    /// For `quota_exceeded`: the resource, its limit and the usage the request would reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub quota: Option<Value>,
    /// For `session_expired`: when the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /v1/admin/credential`: the admin credential's generation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminCredentialInfo {
    /// Bumped by every change of the credential; admin sessions of an
    /// older generation are refused.
    pub generation: u64,
}

/// The answer of `POST /v1/tenants/{id}/purge`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    /// How many archived objects were removed.
    pub removed: u64,
}

/// The reservations a tenant's usage record lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationList {
    /// Pending (not yet expired) and committed reservations.
    #[schema(value_type = Vec<Object>)]
    pub reservations: Vec<ListedReservation>,
}

/// The answer of `POST /v1/tenants/{id}/reservations/{reservation}/release`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Released {
    /// With an `event`: true when this call released the reservation and
    /// counted the event (false when it was already given back). Without
    /// one: true (a release is idempotent).
    pub released: bool,
}

// ---- request bodies ----

mod object {
    //! Fields that hold a struct take it only as a JSON object: serde would
    //! also read a struct from an array of its fields in order (`[null,
    //! null]`), which the API does not offer.

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn from_object<T: DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
        if !v.is_object() {
            return Err(E::custom("expected a JSON object"));
        }
        serde_json::from_value(v).map_err(E::custom)
    }

    pub(super) fn required<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<T, D::Error> {
        from_object(Value::deserialize(d)?)
    }

    pub(super) fn optional<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => from_object::<T, D::Error>(v).map(Some),
        }
    }
}

/// The body of `POST /v1/tenants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The tenant id: a lowercase DNS label, 3 to 63 characters (default:
    /// derived from `display_name`, e.g. `Acme Corp` gives `acme-corp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Contact e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Plan: `free` (default), `basic`, `pro`, `enterprise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Plan>,
    /// Overrides of the plan's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    #[serde(deserialize_with = "object::optional")]
    pub limits: Option<LimitOverrides>,
    /// The secret's prefix, 2 to 8 lowercase letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_prefix: Option<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// When the tenant expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The body of `PATCH /v1/tenants/{id}`: fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// New e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Plan>,
    /// Limit overrides, merged over the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    #[serde(deserialize_with = "object::optional")]
    pub limits: Option<LimitOverrides>,
    /// Metadata entries to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// New expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Refuse with 412 unless the tenant is still at this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

/// The optional body of `POST /v1/tenants/{id}/suspend`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Suspend {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of `PUT /v1/admin/credential`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdminCredential {
    /// The new admin token, 8 to 72 bytes.
    pub token: String,
}

/// The answer of `PUT /v1/admin/credential`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminCredentialChanged {
    /// The admin credential's new generation.
    pub generation: u64,
}

/// The body of `POST /v1/locks/{key}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireLock {
    /// The lease, in seconds (1 to 86400).
    pub ttl_seconds: u64,
    /// What the holder is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Who holds it (default: the tenant id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// The lock id to hold it under (a UUID; default: a random one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_id: Option<String>,
    /// The holder's tool version (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The client's path for what it locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The optional body of a renew.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLock {
    /// The new lease in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The body of `POST /v1/tenants/{id}/purge`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeTenant {
    /// Archived state younger than this many seconds is kept.
    pub grace_seconds: u64,
}

/// The body of `POST /v1/tenants/{id}/reservations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveQuota {
    /// The resource, e.g. `concurrent_jobs`, `cpu_cores`, `stacks`.
    #[schema(value_type = String)]
    pub resource: Resource,
    /// How much.
    pub amount: u64,
}

/// The body of `POST /v1/tenants/{id}/reservations/{reservation}/commit`:
/// the reservation as `reserve` returned it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitReservation {
    /// The reservation.
    #[schema(value_type = Object)]
    #[serde(deserialize_with = "object::required")]
    pub reservation: Reservation,
}

/// The body of `POST /v1/tenants/{id}/reservations/{reservation}/release`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReservation {
    /// The reservation, as `reserve` returned it.
    #[schema(value_type = Object)]
    #[serde(deserialize_with = "object::required")]
    pub reservation: Reservation,
    /// An outcome to count in the same write, once (`job_completed`,
    /// `job_failed`, `{"cost": n}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<UsageEvent>,
}

/// The body of `POST /v1/tenants/{id}/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsage {
    /// The event (`job_completed`, `job_failed`, `{"cost": n}`).
    #[schema(value_type = Object)]
    pub event: UsageEvent,
}

/// The optional body of `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLogin {
    /// The tenant the secret must belong to: another tenant's secret is
    /// refused with 401, as a wrong one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A lock as Terraform's and OpenTofu's `http` backend send and read it,
/// with the server's lease and fencing token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TerraformLock {
    /// The lock id (a UUID, chosen by the client).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// What the holder is doing (`OperationTypeApply`, ...).
    #[serde(default)]
    pub operation: String,
    /// Free-form information.
    #[serde(default)]
    pub info: String,
    /// Who holds it (`user@host`).
    #[serde(default)]
    pub who: String,
    /// The holder's tool version.
    #[serde(default)]
    pub version: String,
    /// When the lock was taken.
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    /// The client's path for the state.
    #[serde(default)]
    pub path: String,
    /// When the lease ends unless a save under the lock extends it (set by
    /// the server; a client's value is ignored).
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    /// The fencing token of the lease (set by the server; a client's value
    /// is ignored).
    #[serde(default)]
    pub fencing_token: Option<u64>,
}

impl From<&LockInfo> for TerraformLock {
    fn from(l: &LockInfo) -> Self {
        TerraformLock {
            id: l.lock_id.to_string(),
            operation: l.operation.clone(),
            info: l.info.clone(),
            who: l.who.clone(),
            version: l.version.clone(),
            created: Some(l.created),
            path: l.path.clone(),
            expires: Some(l.expires),
            fencing_token: Some(l.fencing_token),
        }
    }
}

impl TerraformLock {
    /// The lock back as core's [`LockInfo`] on `key` of `tenant` (the
    /// server's answers always carry the lease; a missing time reads as
    /// `now`). `Corrupt` for an id that is no lock id.
    pub fn to_lock_info(
        &self,
        key: LockKey,
        tenant: Option<TenantId>,
        now: DateTime<Utc>,
    ) -> tenancy_core::Result<LockInfo> {
        let lock_id = LockId::parse(&self.id).map_err(|e| tenancy_core::Error::Corrupt {
            what: format!("the server's lock on {key}"),
            message: e.to_string(),
        })?;
        let created = self.created.unwrap_or(now);
        Ok(LockInfo {
            key,
            lock_id,
            tenant,
            who: self.who.clone(),
            operation: self.operation.clone(),
            created,
            expires: self.expires.unwrap_or(now),
            last_heartbeat: created,
            fencing_token: self.fencing_token.unwrap_or_default(),
            version: self.version.clone(),
            info: self.info.clone(),
            path: self.path.clone(),
        })
    }
}

/// What a save, delete or rollback of a stack environment produced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackWritten {
    /// The stack.
    pub stack: String,
    /// The environment.
    pub env: String,
    /// The new serial.
    pub serial: u64,
    /// When it was written.
    pub saved_at: DateTime<Utc>,
}

/// One stack environment in `GET /v1/stacks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackEnvView {
    /// The stack.
    pub stack: String,
    /// The environment.
    pub env: String,
    /// The current serial (`None` when its state is damaged).
    pub serial: Option<u64>,
    /// When the current version was saved.
    pub saved_at: Option<DateTime<Utc>>,
    /// The lock holder, if it is locked.
    pub locked_by: Option<TerraformLock>,
    /// Why its state cannot be read, if it is damaged.
    pub damaged: Option<String>,
}

impl StackEnvView {
    /// One listed stack environment: its current serial and save time, or
    /// why its state cannot be read, and its lock holder.
    pub fn new(
        stack: String,
        env: String,
        current: std::result::Result<(u64, Option<DateTime<Utc>>), String>,
        locked_by: Option<&LockInfo>,
    ) -> Self {
        let (serial, saved_at, damaged) = match current {
            Ok((serial, saved_at)) => (Some(serial), saved_at, None),
            Err(message) => (None, None, Some(message)),
        };
        StackEnvView {
            stack,
            env,
            serial,
            saved_at,
            locked_by: locked_by.map(TerraformLock::from),
            damaged,
        }
    }
}

/// The tenant's stack environments.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackList {
    /// Every stack environment with state, sorted.
    pub stacks: Vec<StackEnvView>,
    /// How many stacks the tenant may keep (its `max_stacks`).
    pub max_stacks: u64,
}

/// One version in a stack environment's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackVersionView {
    /// Its serial.
    pub serial: u64,
    /// When it was saved.
    pub saved_at: Option<DateTime<Utc>>,
    /// The stored size in bytes.
    pub size: u64,
    /// The serial it restored, for a rollback.
    pub rolled_back_from: Option<u64>,
    /// True for plain JSON another tool wrote (not saved through tenancy yet).
    #[serde(default)]
    pub plain: bool,
    /// True for the version that deleted the stack environment.
    pub deleted: bool,
    /// The fencing token of the lock it was saved under.
    pub fencing_token: Option<u64>,
}

/// A stored object of a stack environment that cannot be read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DamagedVersionView {
    /// Its serial (`None` for the current state object).
    pub serial: Option<u64>,
    /// Its key below the tenant's state root.
    pub key: String,
    /// Why it cannot be read.
    pub message: String,
}

/// A stack environment's history, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackHistory {
    /// The versions.
    pub versions: Vec<StackVersionView>,
    /// Objects that cannot be read.
    pub damaged: Vec<DamagedVersionView>,
}

/// The body of a rollback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The serial to roll back to.
    pub to: u64,
}

/// Who acted, in an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditActorView {
    /// `admin`, `tenant`, `key`, `anonymous` (a refused login), `store`
    /// (whoever holds the store, without a session) or `system` (the server).
    pub kind: String,
    /// The tenant or key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server-issued session the action was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// One entry of an audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Its number in its log (1 for the first ever).
    pub seq: u64,
    /// When it was appended.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: AuditActorView,
    /// What: `tenant.create`, `key.revoke`, `session.login`, ...
    pub action: String,
    /// On what: `tenant acme`, `key key_...`, `stack web/prod`.
    pub target: String,
    /// From where: `cli` (a CLI on the store itself) or `server`.
    pub via: String,
    /// The server's request id (`x-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// A few more facts (never a secret, hash or token); refused logins and
    /// quota refusals count their `failures` since the last entry.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// The SHA-256 (hex) of the previous entry's stored bytes.
    pub prev: String,
    /// The SHA-256 (hex) of this entry's stored bytes.
    pub hash: String,
}

impl From<&tenancy_core::audit::Entry> for AuditEntryView {
    fn from(e: &tenancy_core::audit::Entry) -> Self {
        AuditEntryView {
            seq: e.seq,
            at: e.at,
            actor: AuditActorView {
                kind: e.actor.kind.clone(),
                id: e.actor.id.clone(),
                name: e.actor.name.clone(),
                session: e.actor.session.clone(),
            },
            action: e.action.clone(),
            target: e.target.clone(),
            via: e.via.clone(),
            request_id: e.request_id.clone(),
            outcome: e.outcome.as_str().to_string(),
            detail: match &e.detail {
                Value::Object(_) => e.detail.clone(),
                Value::Null => Value::Object(serde_json::Map::new()),
                other => serde_json::json!({ "value": other }),
            },
            prev: e.prev.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// The tenant of a log: `None` for the admin log.
fn log_tenant(scope: &tenancy_core::audit::Scope) -> Option<TenantId> {
    match scope {
        tenancy_core::audit::Scope::Admin => None,
        tenancy_core::audit::Scope::Tenant(t) => Some(t.clone()),
    }
}

/// Entries of one audit log, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The tenant whose log this is (`null`: the admin log).
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    /// The entries.
    pub entries: Vec<AuditEntryView>,
    /// True when older entries that passed the filters were left out (the limit).
    pub truncated: bool,
}

impl AuditList {
    /// The newest `limit` of `entries` (oldest first) of `scope`'s log.
    pub fn new(
        scope: &tenancy_core::audit::Scope,
        entries: &[tenancy_core::audit::Entry],
        limit: usize,
    ) -> Self {
        let skip = entries.len().saturating_sub(limit);
        AuditList {
            tenant: log_tenant(scope),
            entries: entries[skip..].iter().map(AuditEntryView::from).collect(),
            truncated: skip > 0,
        }
    }
}

/// The head of an audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditHeadView {
    /// The tenant whose log this is (`null`: the admin log).
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    /// `<seq>:<sha256 hex>` of its last entry, to keep outside the store
    /// (`null` while the log is empty).
    pub head: Option<String>,
}

impl AuditHeadView {
    /// `scope`'s head.
    pub fn new(
        scope: &tenancy_core::audit::Scope,
        head: Option<&tenancy_core::audit::Head>,
    ) -> Self {
        AuditHeadView {
            tenant: log_tenant(scope),
            head: head.map(ToString::to_string),
        }
    }
}

/// One problem an audit verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditProblemView {
    /// The entry it is about.
    pub seq: u64,
    /// `modified`, `missing`, `moved` or `rewritten`.
    pub kind: String,
    /// In words.
    pub message: String,
}

/// What a verification of an audit log found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerificationView {
    /// The tenant whose log this is (`null`: the admin log).
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    /// True when nothing is wrong.
    pub intact: bool,
    /// Entries read.
    pub entries: u64,
    /// The first number kept (after a prune), else 1.
    pub first: u64,
    /// The head now (`<seq>:<sha256 hex>`).
    pub head: Option<String>,
    /// Everything wrong, in chain order.
    pub problems: Vec<AuditProblemView>,
}

impl AuditVerificationView {
    /// `v`, the verification of `scope`'s log.
    pub fn new(scope: &tenancy_core::audit::Scope, v: &tenancy_core::audit::Verification) -> Self {
        AuditVerificationView {
            tenant: log_tenant(scope),
            intact: v.is_intact(),
            entries: v.entries,
            first: v.first,
            head: v.head.as_ref().map(ToString::to_string),
            problems: v
                .problems
                .iter()
                .map(|p| AuditProblemView {
                    seq: p.seq,
                    kind: p.kind.to_string(),
                    message: p.message.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_fields_are_read_only_from_objects() {
        let ok: CreateTenant =
            serde_json::from_str(r#"{"id": "acme", "limits": {"max_locks": 3}}"#).unwrap();
        assert_eq!(ok.limits.and_then(|l| l.max_locks), Some(3));
        let none: PatchTenant = serde_json::from_str(r#"{"limits": null}"#).unwrap();
        assert!(none.limits.is_none());
        for bad in [
            r#"{"limits": [null, null]}"#,
            r#"{"limits": [1]}"#,
            r#"{"limits": 5}"#,
        ] {
            assert!(serde_json::from_str::<CreateTenant>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<PatchTenant>(bad).is_err(), "{bad}");
        }
        let r = r#"{"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "tenant": "acme",
            "resource": "workers", "amount": 1, "created_at": "2026-01-01T00:00:00Z"}"#;
        let body = format!(r#"{{"reservation": {r}}}"#);
        assert!(serde_json::from_str::<CommitReservation>(&body).is_ok());
        let array = r#"{"reservation": ["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "acme", "workers", 1, "2026-01-01T00:00:00Z"]}"#;
        assert!(serde_json::from_str::<CommitReservation>(array).is_err());
        assert!(serde_json::from_str::<ReleaseReservation>(array).is_err());
    }
}
