//! The `LockManager` trait and lock types: leases with TTLs and fencing tokens.

use std::fmt::{self, Debug};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::keys::{LockKey, TenantId};

/// The shortest TTL a lock may have.
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(1);
/// The longest TTL a lock may have: one day. Longer leases must heartbeat.
pub const MAX_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest free-form `info` or `operation` text.
pub const MAX_LOCK_TEXT: usize = 1024;

/// A lock id (a UUID v4), handed to the holder by acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LockId(pub Uuid);

impl LockId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        LockId(Uuid::new_v4())
    }

    /// Parses a lock id, with a clear error for malformed input.
    pub fn parse(s: &str) -> Result<Self> {
        Uuid::parse_str(s.trim())
            .map(LockId)
            .map_err(|_| Error::invalid(format!("lock id \"{}\" is not a UUID", s.escape_debug())))
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for LockId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LockId::parse(s)
    }
}

/// Everything known about a held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock key (as the caller named it).
    pub key: LockKey,
    /// The holder's lock id.
    pub lock_id: LockId,
    /// The tenant that holds it, if tenant-scoped.
    pub tenant: Option<TenantId>,
    /// Who holds it, default `user@host`.
    pub who: String,
    /// What the holder is doing.
    pub operation: String,
    /// When it was acquired.
    pub created: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires: DateTime<Utc>,
    /// The last renew (or the acquire).
    pub last_heartbeat: DateTime<Utc>,
    /// Strictly increases for a key across every acquire, takeover and release.
    pub fencing_token: u64,
    /// The version of the tool that took the lock.
    pub version: String,
    /// Free-form information.
    pub info: String,
    /// The client's path for what it locked (Terraform's `LockInfo.Path`);
    /// empty when the client gave none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl LockInfo {
    /// True when the lease has run out at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires
    }
}

/// A request to take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// The key.
    pub key: LockKey,
    /// How long the lease lasts without a renew.
    pub ttl: Duration,
    /// Who asks; defaults to `user@host`.
    pub who: String,
    /// What for.
    pub operation: String,
    /// Free-form info.
    pub info: String,
    /// The tenant (set by the tenant wrapper).
    pub tenant: Option<TenantId>,
    /// The lock id the holder chose (Terraform sends its own); `None`: the
    /// manager makes a random one.
    pub lock_id: Option<LockId>,
    /// The holder's tool version (default: this library's).
    pub version: Option<String>,
    /// The client's path for what it locks (Terraform's `LockInfo.Path`).
    pub path: String,
}

impl LockRequest {
    /// A request for `key` with `ttl`, `who` defaulting to `user@host`.
    pub fn new(key: LockKey, ttl: Duration) -> Self {
        LockRequest {
            key,
            ttl,
            who: default_who(),
            operation: String::new(),
            info: String::new(),
            tenant: None,
            lock_id: None,
            version: None,
            path: String::new(),
        }
    }

    /// Uses the holder's own lock id instead of a random one.
    pub fn lock_id(mut self, id: LockId) -> Self {
        self.lock_id = Some(id);
        self
    }

    /// Records the holder's tool version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Records the client's path for what it locks.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the operation.
    pub fn operation(mut self, op: impl Into<String>) -> Self {
        self.operation = op.into();
        self
    }

    /// Sets who holds the lock.
    pub fn who(mut self, who: impl Into<String>) -> Self {
        self.who = who.into();
        self
    }

    /// Sets the free-form info.
    pub fn info(mut self, info: impl Into<String>) -> Self {
        self.info = info.into();
        self
    }

    /// Refuses a zero, tiny or huge TTL, over-long texts, and control
    /// characters (newlines, escapes) in `who` and `operation`, which are
    /// shown on one line in listings, errors and logs. `info` is free-form
    /// (e.g. JSON) and only bounded in length.
    pub fn validate(&self) -> Result<()> {
        validate_ttl(self.ttl)?;
        let version = self.version.clone().unwrap_or_default();
        for (what, v) in [
            ("who", &self.who),
            ("operation", &self.operation),
            ("info", &self.info),
            ("version", &version),
            ("path", &self.path),
        ] {
            if v.len() > MAX_LOCK_TEXT {
                return Err(Error::invalid(format!(
                    "lock {what} is {} bytes; the limit is {MAX_LOCK_TEXT}",
                    v.len()
                )));
            }
        }
        for (what, v) in [
            ("who", &self.who),
            ("operation", &self.operation),
            ("version", &version),
            ("path", &self.path),
        ] {
            if let Some(c) = v.chars().find(|c| c.is_control()) {
                return Err(Error::invalid(format!(
                    "lock {what} contains the control character {c:?}; use one line of printable text"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses TTLs outside [`MIN_LOCK_TTL`]..=[`MAX_LOCK_TTL`].
pub fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_LOCK_TTL || ttl > MAX_LOCK_TTL {
        Err(Error::invalid(format!(
            "lock ttl {ttl:?} is outside {MIN_LOCK_TTL:?}..={MAX_LOCK_TTL:?}"
        )))
    } else {
        Ok(())
    }
}

/// `user@host` from the environment only (core does no I/O): the user from
/// `USER`, `USERNAME` or `LOGNAME`, the host from `HOSTNAME`, `HOST` or
/// `COMPUTERNAME`; `unknown` / `localhost` when unset. Front ends that can
/// ask the OS for the host name (the CLI does) pass it with [`who`].
pub fn default_who() -> String {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let user = var(&["USER", "USERNAME", "LOGNAME"]).unwrap_or_else(|| "unknown".into());
    let host = var(&["HOSTNAME", "HOST", "COMPUTERNAME"]).unwrap_or_else(|| "localhost".into());
    who(&user, &host)
}

/// Formats a lock holder as `user@host`.
pub fn who(user: &str, host: &str) -> String {
    format!("{}@{}", user.trim(), host.trim())
}

/// Leased locks with fencing tokens.
#[async_trait]
pub trait LockManager: Send + Sync + Debug {
    /// Takes the lock if it is free or expired; else [`Error::LockHeld`] with the holder.
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo>;

    /// Like `try_acquire`, retrying with exponential backoff and jitter for up to `wait`.
    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo>;

    /// Extends the lease by `ttl` from now. Holder only: a stale or foreign
    /// lock id gets [`Error::Precondition`] (or `NotFound` if the key is free).
    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo>;

    /// Frees the lock. Holder only.
    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()>;

    /// The current holder, if the lock is held and not expired.
    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>>;

    /// Held, unexpired locks whose key starts with `prefix` (all for `""`).
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>>;

    /// Frees the lock whatever its lease, if `lock_id` is the current holder's
    /// (the admin's escape hatch; the id guards against freeing a newer holder).
    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()>;
}

macro_rules! forward_lock_manager {
    ($ty:ty) => {
        #[async_trait]
        impl<T: LockManager + ?Sized> LockManager for $ty {
            async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
                (**self).try_acquire(req).await
            }
            async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
                (**self).acquire(req, wait).await
            }
            async fn renew(&self, key: &LockKey, id: LockId, ttl: Duration) -> Result<LockInfo> {
                (**self).renew(key, id, ttl).await
            }
            async fn release(&self, key: &LockKey, id: LockId) -> Result<()> {
                (**self).release(key, id).await
            }
            async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
                (**self).inspect(key).await
            }
            async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
                (**self).list(prefix).await
            }
            async fn force_unlock(&self, key: &LockKey, id: LockId) -> Result<()> {
                (**self).force_unlock(key, id).await
            }
        }
    };
}

forward_lock_manager!(Arc<T>);
forward_lock_manager!(Box<T>);

/// Convenience methods for every [`LockManager`].
#[async_trait]
pub trait LockManagerExt: LockManager {
    /// Takes the lock for `key` with `ttl` and default metadata.
    async fn try_lock(&self, key: &LockKey, ttl: Duration) -> Result<LockInfo> {
        self.try_acquire(&LockRequest::new(key.clone(), ttl)).await
    }

    /// True when the lock is currently held.
    async fn is_locked(&self, key: &LockKey) -> Result<bool> {
        Ok(self.inspect(key).await?.is_some())
    }
}

impl<L: LockManager + ?Sized> LockManagerExt for L {}
