//! Named API keys of a tenant: their roles, ids, names and lifecycle (the
//! rules only; the registry stores them).
//!
//! A tenant has its primary secret (role [`Role::Owner`]) and any number of
//! named keys, each with a role and an optional expiry. A key is a secret of
//! the same shape as the primary one (`<prefix>_<32 base62><checksum>`,
//! [`crate::credentials::generate_secret`]), stored the same way (a bcrypt
//! hash and a lookup id, never the key), so a presented key is found with
//! one index read and no scan. What a request may do is decided by its
//! [`Caller`]'s role: [`Role::allows`].
//!
//! A key is **usable** while it is neither revoked nor past its
//! `expires_at` ([`ApiKey::status_at`]); a rotation (Unkey's "reroll")
//! issues a new key with the old one's name, role and remaining lifetime and
//! sets the old key's `expires_at` to the end of the grace period.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credentials::{self, Secret};
use crate::error::{Error, Result};
use crate::keys::TenantId;
use crate::tenant::Tenant;

/// The most usable keys a tenant may have at once (revoked and expired
/// keys do not count).
pub const MAX_KEYS_PER_TENANT: usize = 100;
/// The longest key name, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 64;
/// How long revoked and expired keys stay listed before the registry drops
/// their records (30 days).
pub const KEY_RECORD_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);
/// How often at most a key's `last_used_at` is written: once a minute.
pub const LAST_USED_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(60);
/// The length of a key id's random part (base62).
pub const KEY_ID_RANDOM_LEN: usize = 16;

/// What a credential may do. Ordered: each role can do all the one below it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only: state, stacks, locks, jobs, usage.
    #[default]
    Viewer,
    /// Also writes state, takes and releases locks, runs jobs and workers.
    Operator,
    /// Also manages the tenant's keys and reads its audit trail (the primary secret).
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Owner];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Owner => "owner",
        }
    }

    /// Whether a credential of this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown role \"{}\" (expected viewer, operator or owner)",
                    s.chars().take(32).collect::<String>().escape_debug()
                ))
            })
    }
}

/// The public id of an API key: `key_` and 16 base62 characters. Not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// The prefix of every key id.
    pub const PREFIX: &'static str = "key_";

    /// A new random key id.
    pub fn generate() -> Self {
        let mut s = String::from(Self::PREFIX);
        credentials::push_random_base62(&mut s, KEY_ID_RANDOM_LEN);
        KeyId(s)
    }

    /// Validates a key id.
    pub fn parse(s: &str) -> Result<Self> {
        match s.strip_prefix(Self::PREFIX) {
            Some(rest) if credentials::is_base62(rest, KEY_ID_RANDOM_LEN) => Ok(KeyId(s.into())),
            _ => Err(Error::invalid(format!(
                "key id \"{}\" is not `key_` and {KEY_ID_RANDOM_LEN} letters or digits (see `tenancy key list`)",
                s.chars().take(64).collect::<String>().escape_debug()
            ))),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyId::parse(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

/// Checks a key name: 1 to 64 characters of letters, digits, `.`, `_`, `-`
/// and `@`, starting with a letter or digit (so it reads well in a table
/// and never needs quoting in a shell).
pub fn validate_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "key name \"{}\" must be 1 to {MAX_KEY_NAME_LEN} letters, digits, '.', '_', '-' or '@', starting with a letter or digit",
            name.chars().take(80).collect::<String>().escape_debug()
        )))
    }
}

/// Whether a key can be used at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its `expires_at` (a rotated key after its grace period).
    Expired,
    /// Revoked.
    Revoked,
}

impl KeyStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's API key as the registry shows it: never the key or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its id.
    pub id: KeyId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Its name (unique among the tenant's usable keys).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The key's prefix (the part before `_`), for recognizing it.
    pub prefix: String,
    /// Its last four characters, for recognizing it.
    pub last_four: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used, to within [`LAST_USED_GRANULARITY`].
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key a rotation replaced it with.
    pub rotated_to: Option<KeyId>,
}

impl ApiKey {
    /// Its status at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| now >= at) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// `Unauthorized` naming why when the key cannot be used at `now`.
    pub fn ensure_usable(&self, now: DateTime<Utc>) -> Result<()> {
        match self.status_at(now) {
            KeyStatus::Active => Ok(()),
            KeyStatus::Revoked => Err(Error::unauthorized(format!(
                "API key {} ({}) was revoked; ask an owner of tenant {} for a new one",
                self.name, self.id, self.tenant
            ))),
            KeyStatus::Expired => Err(Error::unauthorized(format!(
                "API key {} ({}) expired at {}; ask an owner of tenant {} for a new one",
                self.name,
                self.id,
                self.expires_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                self.tenant
            ))),
        }
    }

    /// How the key is shown in a table: `<prefix>_…<last four>`.
    pub fn hint(&self) -> String {
        format!("{}_…{}", self.prefix, self.last_four)
    }
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it stops working, if ever (must lie in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just created or rotated: the key is shown here once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    /// The key's record.
    pub key: ApiKey,
    /// The key itself (`Debug` and `Display` redact it).
    pub secret: Secret,
}

/// A rotation's outcome: the new key (shown once) and the old key's record,
/// which works until its new `expires_at` (the end of the grace period).
#[derive(Debug, Clone)]
pub struct RotatedApiKey {
    /// The new key.
    pub created: CreatedApiKey,
    /// The key it replaces.
    pub previous: ApiKey,
}

/// Who made a request: a tenant with its primary secret, or one of its
/// keys. The role decides what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant (its effective status was active when checked).
    pub tenant: Tenant,
    /// The key, when the credential is a named key (not the primary secret).
    pub key: Option<ApiKey>,
}

impl Caller {
    /// The caller of a tenant's primary secret.
    pub fn primary(tenant: Tenant) -> Self {
        Caller { tenant, key: None }
    }

    /// What the caller may do: the key's role, or owner for the primary secret.
    pub fn role(&self) -> Role {
        self.key.as_ref().map_or(Role::Owner, |k| k.role)
    }

    /// `Forbidden` naming the role needed when the caller's is weaker.
    pub fn require(&self, needed: Role) -> Result<()> {
        require_role(self.role(), self.key.as_ref(), needed)
    }
}

/// `Forbidden` naming the role `needed` and the one held when `held` is weaker.
pub fn require_role(held: Role, key: Option<&ApiKey>, needed: Role) -> Result<()> {
    if held.allows(needed) {
        return Ok(());
    }
    let who = match key {
        Some(k) => format!("API key {} ({}) has the {held} role", k.name, k.id),
        None => format!("this credential has the {held} role"),
    };
    Err(Error::forbidden(format!(
        "this needs the {needed} role; {who} (an owner can create a key with `tenancy key create --role {needed}`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Owner));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert!(r.allows(r));
        }
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn key_ids_round_trip_and_refuse_junk() {
        let id = KeyId::generate();
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "key_",
            "key_short",
            "kex_0123456789abcdef",
            "key_0123456789abcde/",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_names_are_checked() {
        for ok in ["ci", "alice@example.com", "deploy-bot_2", "a"] {
            validate_key_name(ok).unwrap();
        }
        let long = "a".repeat(MAX_KEY_NAME_LEN + 1);
        for bad in ["", "-x", "has space", "new\nline", "tab\t", long.as_str()] {
            assert!(validate_key_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_follows_revocation_and_expiry() {
        let now = Utc::now();
        let mut k = ApiKey {
            id: KeyId::generate(),
            tenant: TenantId::new("acme").unwrap(),
            name: "ci".into(),
            role: Role::Viewer,
            prefix: "tnc".into(),
            last_four: "abcd".into(),
            created_at: now,
            expires_at: Some(now + chrono::Duration::seconds(10)),
            last_used_at: None,
            revoked_at: None,
            rotated_to: None,
        };
        assert_eq!(k.status_at(now), KeyStatus::Active);
        assert_eq!(
            k.status_at(now + chrono::Duration::seconds(10)),
            KeyStatus::Expired
        );
        assert!(k
            .ensure_usable(now + chrono::Duration::seconds(11))
            .is_err());
        k.revoked_at = Some(now);
        assert_eq!(k.status_at(now), KeyStatus::Revoked);
        let e = k.ensure_usable(now).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
    }

    #[test]
    fn a_weaker_role_is_refused_naming_the_needed_one() {
        let e = require_role(Role::Viewer, None, Role::Operator).unwrap_err();
        assert!(matches!(e, Error::Forbidden { .. }));
        assert!(e.to_string().contains("needs the operator role"), "{e}");
        require_role(Role::Owner, None, Role::Operator).unwrap();
    }
}
