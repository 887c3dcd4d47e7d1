//! The JSON shapes the API returns and accepts (never a stored record as is:
//! a tenant's credential hash and lookup id never leave the server).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenancy_core::{
    LimitOverrides, Limits, LockInfo, Plan, Resource, ServerSession, SessionId, SessionKind,
    Tenant, TenantStatus, Usage,
};
use utoipa::ToSchema;

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantView {
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
}

impl TenantView {
    /// The view of `t` at `now` (the status accounts for expiry).
    pub(crate) fn new(t: &Tenant, now: DateTime<Utc>) -> Self {
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
            created_at: t.created_at,
            updated_at: t.updated_at,
            expires_at: t.expires_at,
            deleted_at: t.deleted_at,
            revision: t.revision,
        }
    }
}

/// A tenant with its secret, shown once (create and rotate).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantWithSecret {
    /// The tenant.
    pub tenant: TenantView,
    /// The secret: shown here once, never stored.
    pub secret: String,
}

/// A list of tenants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct TenantList {
    /// The tenants, sorted by id.
    pub tenants: Vec<TenantView>,
}

/// Usage of one resource against its limit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct QuotaView {
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
pub(crate) struct StatsView {
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
    pub(crate) fn new(t: &Tenant, usage: Usage, now: DateTime<Utc>) -> Self {
        let limits = t.limits();
        let quotas = Resource::ALL
            .iter()
            .map(|&r| {
                let used = usage.get(r);
                let limit = r.limit(&limits);
                QuotaView {
                    resource: r.as_str().to_string(),
                    used,
                    limit,
                    remaining: limit.saturating_sub(used),
                }
            })
            .collect();
        StatsView {
            tenant: t.id.to_string(),
            status: t.effective_status(now),
            usage,
            quotas,
        }
    }
}

/// The calling tenant's own profile and usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct OwnTenantView {
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
}

/// A lock as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct LockView {
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
        }
    }
}

/// A list of locks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct LockList {
    /// The tenant's held locks, sorted by key.
    pub locks: Vec<LockView>,
}

/// One key of a state listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct StateEntryView {
    /// The key, relative to the tenant.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, where the backend knows it.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A state listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct StateList {
    /// The keys, sorted.
    pub keys: Vec<StateEntryView>,
    /// True when more keys exist than `limit` allowed.
    pub truncated: bool,
}

/// The answer to a state write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct StateWritten {
    /// The key.
    pub key: String,
    /// The new entity tag (also in the `ETag` header).
    pub etag: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    pub status: String,
}

/// A server-issued session as the API lists it (never its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionView {
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
}

impl SessionView {
    /// The view of `s`; `current` when it is the caller's own.
    pub(crate) fn new(s: &ServerSession, current: Option<&SessionId>) -> Self {
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
        }
    }
}

/// A list of sessions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionList {
    /// The unexpired sessions.
    pub sessions: Vec<SessionView>,
}

/// A session just opened (`POST /v1/sessions`, `POST /v1/admin/sessions`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct IssuedSessionView {
    /// The session token, shown here once (only its SHA-256 is kept): send
    /// it as `Authorization: Bearer <token>`.
    pub token: String,
    /// The session.
    pub session: SessionView,
}
