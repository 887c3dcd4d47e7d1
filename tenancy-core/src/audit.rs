//! The audit trail's domain types: whose log ([`Scope`]), who acted
//! ([`Actor`]), what an action came to ([`Outcome`]), entries ([`NewEntry`],
//! [`Entry`]), a chain's head ([`Head`], `<seq>:<sha256 hex>`), and what a
//! verification found ([`Verification`], [`Problem`]). The logs themselves
//! (append-only, hash-chained, on any `StateBackend`) are
//! `tenancy_state::audit::AuditLog`; this module does no I/O.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::TenantId;

/// Whose log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Admin actions.
    Admin,
    /// One tenant's actions (and the admin's on it).
    Tenant(TenantId),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Tenant(id) => write!(f, "tenant {id}"),
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin`, `tenant`, `key`, `anonymous` (a refused login: whoever
    /// presented the credential), `store` (whoever holds the store's
    /// credentials, without a session: `tenancy init`, `admin passwd
    /// --reset`) or `system` (the server itself, e.g. its reconciler).
    pub kind: String,
    /// The tenant or key id, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A key's name, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server-issued session the request was made with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Actor {
    /// The admin.
    pub fn admin() -> Self {
        Self::of_kind("admin")
    }

    /// A tenant (its primary secret or a session of it).
    pub fn tenant(id: &TenantId) -> Self {
        Actor {
            kind: "tenant".into(),
            id: Some(id.to_string()),
            name: None,
            session: None,
        }
    }

    /// A tenant's named API key (the tenant is the log's).
    pub fn key(id: &str, name: &str) -> Self {
        Actor {
            kind: "key".into(),
            id: Some(id.to_string()),
            name: Some(name.to_string()),
            session: None,
        }
    }

    /// Whoever presented a refused credential.
    pub fn anonymous() -> Self {
        Self::of_kind("anonymous")
    }

    /// Whoever holds the store's credentials, without a session.
    pub fn store() -> Self {
        Self::of_kind("store")
    }

    /// The server itself (work no request asked for).
    pub fn system() -> Self {
        Self::of_kind("system")
    }

    fn of_kind(kind: &str) -> Self {
        Actor {
            kind: kind.into(),
            id: None,
            name: None,
            session: None,
        }
    }

    /// The same actor, acting through server-issued session `id`.
    pub fn in_session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if let Some(id) = &self.id {
            write!(f, " {id}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if let Some(s) = &self.session {
            write!(f, " session {s}")?;
        }
        Ok(())
    }
}

/// What an action came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused (bad credentials, a quota, a role).
    Refused,
    /// Failed for another reason.
    Failed,
}

impl Outcome {
    /// `ok`, `refused` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Who.
    pub actor: Actor,
    /// What: `tenant.create`, `key.revoke`, `session.login`, ...
    pub action: String,
    /// On what: `tenant acme`, `key k_123`, `stack web/prod`.
    pub target: String,
    /// From where: `cli` (a CLI on the store itself) or `server`.
    pub via: String,
    /// The server's request id, for `server`.
    pub request_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// A few more facts (never a secret, hash or token).
    pub detail: serde_json::Value,
}

/// A stored entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its number (1 for the first ever).
    pub seq: u64,
    /// When it was appended.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub via: String,
    /// The server's request id.
    pub request_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// More facts.
    pub detail: serde_json::Value,
    /// The SHA-256 (hex) of the previous entry's stored bytes.
    pub prev: String,
    /// The SHA-256 (hex) of this entry's stored bytes.
    pub hash: String,
}

/// The head of a chain: its last entry's number and hash, printed as
/// `<seq>:<hash>` to be kept outside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The last entry's number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for Head {
    type Err = Error;

    fn from_str(s: &str) -> Result<Head> {
        let bad = || {
            Error::invalid(format!(
                "\"{}\" is not a chain head (<seq>:<sha256 hex>)",
                s.escape_debug()
            ))
        };
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Head {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// What is wrong with an entry of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Its bytes changed (they no longer hash to the next entry's link,
    /// or do not decode).
    Modified,
    /// It is gone (a gap in the numbers).
    Missing,
    /// It records another number than its place (entries swapped or moved).
    Moved,
    /// The chain's head is not the one recorded earlier (rewritten).
    Rewritten,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Modified => "modified",
            ProblemKind::Missing => "missing",
            ProblemKind::Moved => "moved",
            ProblemKind::Rewritten => "rewritten",
        })
    }
}

/// One problem `AuditLog::verify` (tenancy-state) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry it is about.
    pub seq: u64,
    /// What.
    pub kind: ProblemKind,
    /// In words.
    pub message: String,
}

/// The outcome of `AuditLog::verify` (tenancy-state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries read.
    pub entries: u64,
    /// The first number kept (after a prune), else 1.
    pub first: u64,
    /// The head now.
    pub head: Option<Head>,
    /// Everything wrong, in chain order; empty when the chain holds.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// True when nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Which entries `AuditLog::list` (tenancy-state) returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this action (`tenant.create`), or actions below a prefix ending
    /// in `.` (`tenant.`).
    pub action: Option<String>,
}
