//! Login sessions (admin or tenant) and their validity check; no file I/O here.
//!
//! The CLI stores sessions in files; the check that every command runs
//! against the registry lives here so every front end applies the same rules.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::chrono_duration;
use crate::error::{Error, Result};
use crate::keys::TenantId;
use crate::tenant::Tenant;

/// How long an admin session lasts: 8 hours.
pub const ADMIN_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a tenant session lasts: 7 days.
pub const TENANT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SessionKind {
    /// The registry's administrator.
    Admin {
        /// The admin credential generation the session was opened with
        /// (0 in sessions written before it was recorded: never valid).
        #[serde(default)]
        generation: u64,
    },
    /// A tenant team.
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// The credential generation the session was opened with.
        generation: u64,
    },
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Admin or tenant.
    #[serde(flatten)]
    pub kind: SessionKind,
    /// When the session was opened.
    pub issued_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

impl Session {
    /// A new admin session at `now` for admin credential `generation`,
    /// lasting [`ADMIN_SESSION_TTL`].
    pub fn admin(now: DateTime<Utc>, generation: u64) -> Self {
        Session {
            kind: SessionKind::Admin { generation },
            issued_at: now,
            expires_at: now + chrono_duration(ADMIN_SESSION_TTL),
        }
    }

    /// A new tenant session at `now` for the tenant's current credential generation.
    pub fn tenant(tenant: &Tenant, now: DateTime<Utc>) -> Self {
        Session {
            kind: SessionKind::Tenant {
                tenant: tenant.id.clone(),
                generation: tenant.credential.generation,
            },
            issued_at: now,
            expires_at: now + chrono_duration(TENANT_SESSION_TTL),
        }
    }

    /// The tenant of a tenant session.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        match &self.kind {
            SessionKind::Tenant { tenant, .. } => Some(tenant),
            SessionKind::Admin { .. } => None,
        }
    }

    /// True for an admin session.
    pub fn is_admin(&self) -> bool {
        matches!(self.kind, SessionKind::Admin { .. })
    }

    /// Checks only the session's own expiry.
    pub fn check_expiry(&self, now: DateTime<Utc>) -> Result<()> {
        if now >= self.expires_at {
            Err(Error::SessionExpired {
                expired_at: self.expires_at,
            })
        } else {
            Ok(())
        }
    }

    /// Checks a tenant session against the tenant's current record.
    ///
    /// Distinct errors: [`Error::SessionExpired`] for an expired session,
    /// [`Error::CredentialsRotated`] when the secret was rotated since login,
    /// [`Error::Forbidden`] when the tenant is not active, and
    /// [`Error::Forbidden`] when this is an admin session or another tenant's.
    pub fn validate_tenant(&self, tenant: &Tenant, now: DateTime<Utc>) -> Result<()> {
        self.check_expiry(now)?;
        match &self.kind {
            SessionKind::Admin { .. } => Err(Error::forbidden(
                "this is an admin session; log in as a tenant for tenant commands",
            )),
            SessionKind::Tenant {
                tenant: id,
                generation,
            } => {
                if id != &tenant.id {
                    return Err(Error::forbidden(format!(
                        "session belongs to tenant {id}, not {}",
                        tenant.id
                    )));
                }
                if *generation != tenant.credential.generation {
                    return Err(Error::CredentialsRotated {
                        tenant: tenant.id.to_string(),
                    });
                }
                tenant.ensure_active(now)
            }
        }
    }

    /// Checks an admin session: not expired, really an admin session, and
    /// opened with the admin credential's `current` generation (a changed
    /// admin credential ends every admin session:
    /// [`Error::CredentialsRotated`]).
    pub fn validate_admin(&self, now: DateTime<Utc>, current: u64) -> Result<()> {
        self.check_expiry(now)?;
        match self.kind {
            SessionKind::Admin { generation } if generation == current => Ok(()),
            SessionKind::Admin { .. } => Err(Error::CredentialsRotated {
                tenant: "admin".into(),
            }),
            SessionKind::Tenant { .. } => Err(Error::forbidden(
                "admin command refused: this is a tenant session; run `tenancy admin login`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{CredentialInfo, LimitOverrides, Plan, StorageInfo, TenantStatus};

    fn tenant(now: DateTime<Utc>) -> Tenant {
        Tenant {
            id: TenantId::new("acme").unwrap(),
            display_name: "Acme".into(),
            email: None,
            status: TenantStatus::Active,
            plan: Plan::Free,
            limit_overrides: LimitOverrides::default(),
            credential: CredentialInfo {
                prefix: "tnc".into(),
                generation: 1,
                rotations: 0,
                last_rotated: None,
            },
            storage: StorageInfo {
                prefix: "tenants/acme".into(),
                version: "v1".into(),
            },
            lock_prefix: "tenant:acme".into(),
            metadata: Default::default(),
            suspended_reason: None,
            created_at: now,
            updated_at: now,
            expires_at: None,
            deleted_at: None,
            revision: 1,
        }
    }

    #[test]
    fn distinct_errors() {
        let now = Utc::now();
        let mut t = tenant(now);
        let s = Session::tenant(&t, now);
        s.validate_tenant(&t, now).unwrap();

        let later = now + chrono::Duration::days(8);
        assert!(matches!(
            s.validate_tenant(&t, later),
            Err(Error::SessionExpired { .. })
        ));

        t.credential.generation = 2;
        assert!(matches!(
            s.validate_tenant(&t, now),
            Err(Error::CredentialsRotated { .. })
        ));

        t.credential.generation = 1;
        t.status = TenantStatus::Suspended;
        assert!(matches!(
            s.validate_tenant(&t, now),
            Err(Error::Forbidden { .. })
        ));

        t.status = TenantStatus::Active;
        t.expires_at = Some(now - chrono::Duration::seconds(1));
        assert!(matches!(
            s.validate_tenant(&t, now),
            Err(Error::Forbidden { .. })
        ));
    }

    #[test]
    fn admin_and_tenant_sessions_do_not_mix() {
        let now = Utc::now();
        let t = tenant(now);
        let admin = Session::admin(now, 1);
        admin.validate_admin(now, 1).unwrap();
        assert!(matches!(
            admin.validate_admin(now, 2),
            Err(Error::CredentialsRotated { .. })
        ));
        assert!(matches!(
            admin.validate_tenant(&t, now),
            Err(Error::Forbidden { .. })
        ));
        let ts = Session::tenant(&t, now);
        assert!(matches!(
            ts.validate_admin(now, 1),
            Err(Error::Forbidden { .. })
        ));
        let late = now + chrono::Duration::hours(9);
        assert!(matches!(
            admin.validate_admin(late, 1),
            Err(Error::SessionExpired { .. })
        ));
        let json = serde_json::to_string(&ts).unwrap();
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ts);
    }
}
