//! Login sessions (admin or tenant) and their validity check; no file I/O here.
//!
//! The CLI stores sessions in files; the check that every command runs
//! against the registry lives here so every front end applies the same rules.
//!
//! # Server-issued sessions
//!
//! A registry can also issue sessions itself ([`crate::TenantRegistry::login_tenant`],
//! [`crate::TenantRegistry::login_admin`]): the caller gets a random
//! **session token** once, and the registry keeps only its SHA-256 (a
//! random token of about 190 bits needs no slow hash). A token reads
//! `tns_<owner>_<32 base62>`, the owner being the tenant id or `admin`
//! (a reserved tenant id, so the two never collide); a token has two `_`
//! and a tenant secret one, so neither can be taken for the other. The
//! [`SessionId`] shown in listings is the first 128 bits of the token's
//! SHA-256 ([`SessionId::of_token`]): it names the stored record without
//! revealing the token. A server-issued session is checked with the same
//! rules as a session file ([`Session::validate_tenant`],
//! [`Session::validate_admin`]): expiry, the credential generation it was
//! opened with, and the tenant's status.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::apikey::{ApiKey, Caller, KeyId};
use crate::clock::chrono_duration;
use crate::credentials::{self, Secret};
use crate::error::{Error, Result};
use crate::keys::TenantId;
use crate::tenant::Tenant;

/// The prefix of every server-issued session token.
pub const SESSION_TOKEN_PREFIX: &str = "tns";
/// The length of a session token's random part (base62, about 190 bits).
pub const SESSION_TOKEN_RANDOM_LEN: usize = 32;
/// The owner part of an admin session's token.
pub const ADMIN_OWNER: &str = "admin";

/// Whose sessions: the administrator's or one tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionOwner {
    /// The registry's administrator.
    Admin,
    /// A tenant.
    Tenant(TenantId),
}

impl SessionOwner {
    /// The owner as written in a token: the tenant id, or `admin`.
    pub fn as_str(&self) -> &str {
        match self {
            SessionOwner::Admin => ADMIN_OWNER,
            SessionOwner::Tenant(t) => t.as_str(),
        }
    }

    /// The tenant, for a tenant's sessions.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            SessionOwner::Admin => None,
            SessionOwner::Tenant(t) => Some(t),
        }
    }
}

impl fmt::Display for SessionOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionOwner::Admin => f.write_str("the admin"),
            SessionOwner::Tenant(t) => write!(f, "tenant {t}"),
        }
    }
}

/// The public id of a server-issued session: 32 lowercase hex characters,
/// the first 128 bits of its token's SHA-256. Not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Validates a session id (32 lowercase hex characters).
    pub fn parse(s: &str) -> Result<Self> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(SessionId(s.to_string()))
        } else {
            Err(Error::invalid(format!(
                "session id \"{}\" is not 32 lowercase hex characters",
                s.chars().take(64).collect::<String>().escape_debug()
            )))
        }
    }

    /// The id of the session a token opens.
    pub fn of_token(token: &str) -> Self {
        SessionId(credentials::lookup_id(token))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        SessionId::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

/// A new session token `tns_<owner>_<32 base62>` from the OS CSPRNG.
pub fn generate_session_token(owner: &SessionOwner) -> Secret {
    let owner = owner.as_str();
    let mut s = String::with_capacity(
        SESSION_TOKEN_PREFIX.len() + owner.len() + 2 + SESSION_TOKEN_RANDOM_LEN,
    );
    s.push_str(SESSION_TOKEN_PREFIX);
    s.push('_');
    s.push_str(owner);
    s.push('_');
    credentials::push_random_base62(&mut s, SESSION_TOKEN_RANDOM_LEN);
    Secret::new(s)
}

/// The owner and id of a string shaped like a session token, or `None`
/// (a tenant secret, an admin password or junk). Only the shape is
/// checked; whether the session exists is the registry's business.
pub fn parse_session_token(token: &str) -> Option<(SessionOwner, SessionId)> {
    let rest = token
        .strip_prefix(SESSION_TOKEN_PREFIX)?
        .strip_prefix('_')?;
    let (owner, random) = rest.rsplit_once('_')?;
    if !credentials::is_base62(random, SESSION_TOKEN_RANDOM_LEN) {
        return None;
    }
    let owner = if owner == ADMIN_OWNER {
        SessionOwner::Admin
    } else {
        SessionOwner::Tenant(TenantId::new(owner).ok()?)
    };
    Some((owner, SessionId::of_token(token)))
}

/// A session a registry issued and keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSession {
    /// Its id (listings, revocation).
    pub id: SessionId,
    /// Whose it is, the generation it was opened with, when it was opened
    /// and when it ends.
    pub session: Session,
    /// When it was last used, to within the registry's granularity (a
    /// registry that does not track it says `None`).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ServerSession {
    /// Whose session this is.
    pub fn owner(&self) -> SessionOwner {
        match &self.session.kind {
            SessionKind::Admin { .. } => SessionOwner::Admin,
            SessionKind::Tenant { tenant, .. } => SessionOwner::Tenant(tenant.clone()),
        }
    }
}

/// A session just opened: its token is shown here once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// The session.
    pub session: ServerSession,
    /// The token (`Debug` and `Display` redact it).
    pub token: Secret,
}

/// A session token that checked out: the session and, for a tenant
/// session, the tenant record it was checked against.
#[derive(Debug, Clone)]
pub struct AuthenticatedSession {
    /// The session.
    pub session: ServerSession,
    /// The tenant of a tenant session (its effective status is active).
    pub tenant: Option<Tenant>,
    /// The named key a key session was opened with (usable at the check).
    pub key: Option<ApiKey>,
}

impl AuthenticatedSession {
    /// The session's role: its key's, else owner (opened with the primary secret).
    pub fn role(&self) -> crate::apikey::Role {
        self.key
            .as_ref()
            .map_or(crate::apikey::Role::Owner, |k| k.role)
    }
}

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
    /// The named API key a tenant session was opened with (`None`: the
    /// tenant's primary secret). The session has that key's role and ends
    /// when the key is revoked or expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyId>,
}

impl Session {
    /// A new admin session at `now` for admin credential `generation`,
    /// lasting [`ADMIN_SESSION_TTL`].
    pub fn admin(now: DateTime<Utc>, generation: u64) -> Self {
        Session {
            kind: SessionKind::Admin { generation },
            issued_at: now,
            expires_at: now + chrono_duration(ADMIN_SESSION_TTL),
            key: None,
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
            key: None,
        }
    }

    /// A new tenant session at `now` for `caller`: bound to the tenant's
    /// credential generation and, for a named key, to that key (the session
    /// ends with the key's `expires_at` at the latest).
    pub fn for_caller(caller: &Caller, now: DateTime<Utc>) -> Self {
        let mut s = Session::tenant(&caller.tenant, now);
        if let Some(k) = &caller.key {
            s.key = Some(k.id.clone());
            if let Some(at) = k.expires_at {
                s.expires_at = s.expires_at.min(at);
            }
        }
        s
    }

    /// Checks the key a key session was opened with (`key` is its current
    /// record, `None` when the session was opened with the primary secret):
    /// `Unauthorized` when it was revoked, expired or is gone.
    pub fn validate_key(&self, key: Option<&ApiKey>, now: DateTime<Utc>) -> Result<()> {
        match (&self.key, key) {
            (None, _) => Ok(()),
            (Some(id), Some(k)) if &k.id == id => k.ensure_usable(now),
            (Some(id), _) => Err(Error::unauthorized(format!(
                "API key {id} of this session no longer exists; log in again"
            ))),
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
    fn session_tokens_have_their_own_shape() {
        let acme = SessionOwner::Tenant(TenantId::new("acme").unwrap());
        for owner in [SessionOwner::Admin, acme.clone()] {
            let a = generate_session_token(&owner);
            let b = generate_session_token(&owner);
            assert_ne!(a, b);
            let (o, id) = parse_session_token(a.expose()).unwrap();
            assert_eq!(o, owner);
            assert_eq!(id, SessionId::of_token(a.expose()));
            assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
            // never a tenant secret, and a tenant secret is never a token
            assert!(crate::credentials::parse_secret(a.expose()).is_none());
        }
        let secret = crate::credentials::generate_secret("tns").unwrap();
        assert!(parse_session_token(secret.expose()).is_none());
        for bad in [
            "",
            "tns_",
            "tns_acme_",
            "tns_acme_short",
            "tns_Acme_0123456789abcdef0123456789ABCDEF",
            "tns_default_0123456789abcdef0123456789ABCDEF",
            "tnx_acme_0123456789abcdef0123456789ABCDEF",
            "tns_acme_0123456789abcdef0123456789ABCDE!",
        ] {
            assert!(parse_session_token(bad).is_none(), "{bad}");
        }
        assert!(parse_session_token("tns_acme_0123456789abcdef0123456789ABCDEF").is_some());
        assert!(SessionId::parse("ABC").is_err());
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
