//! The one public error type of tenancy, shared by every crate and backend.

use std::time::Duration;

use crate::lock::LockInfo;

/// The result type used throughout tenancy.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tenancy.
///
/// Backends keep their own private error types and convert into this one
/// (usually into [`Error::Backend`]). Match on the variant, never on the
/// message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object, tenant, lock or version does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for, e.g. `tenant acme` or `key stacks/web`.
        what: String,
    },

    /// A create found the object already present.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What already exists.
        what: String,
    },

    /// A conditional write or delete lost: the version moved since it was read.
    #[error("precondition failed: {what}")]
    Precondition {
        /// What was being written, and why it was refused.
        what: String,
    },

    /// A write made under a lock was refused because a newer holder has
    /// written since (its fencing token is below the one recorded), or the
    /// lock it was made under was lost.
    #[error("fenced: {what}")]
    Fenced {
        /// What was refused, and which tokens were compared.
        what: String,
    },

    /// The lock is held by someone else.
    #[error("lock {} is held by {} (lock id {}, operation {:?}, expires {})",
        .holder.key, .holder.who, .holder.lock_id, .holder.operation, .holder.expires)]
    LockHeld {
        /// The current holder.
        holder: Box<LockInfo>,
    },

    /// The credentials are missing or wrong. Never says which part was wrong.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// A message safe to show to the caller.
        message: String,
    },

    /// A session ran past its expiry; the user must log in again.
    #[error("session expired at {expired_at}; log in again")]
    SessionExpired {
        /// When the session expired.
        expired_at: chrono::DateTime<chrono::Utc>,
    },

    /// The tenant's credentials were rotated after this session or cache entry was made.
    #[error("credentials of tenant {tenant} were rotated; log in again with the new secret")]
    CredentialsRotated {
        /// The tenant whose secret was rotated.
        tenant: String,
    },

    /// The caller is known but may not do this (suspended, expired or deleted
    /// tenant, or a tenant session running an admin command).
    #[error("forbidden: {message}")]
    Forbidden {
        /// Why the request was refused.
        message: String,
    },

    /// A quota would be exceeded; nothing was reserved.
    #[error("quota exceeded for tenant {tenant}: {resource} would be {requested} over a limit of {limit}")]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// The resource, e.g. `concurrent_jobs`.
        resource: String,
        /// The limit in force.
        limit: u64,
        /// The usage the request would have reached.
        requested: u64,
        /// When a retry may succeed, where a time window applies.
        retry_after: Option<Duration>,
    },

    /// The input is malformed; the message says what is wrong.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong with the input.
        message: String,
    },

    /// A stored object could not be decoded (corrupted or half-written).
    #[error("corrupt data in {what}: {message}")]
    Corrupt {
        /// What was being read, naming the tenant where there is one.
        what: String,
        /// The decoder's complaint.
        message: String,
    },

    /// The operation is not available on this backend or build.
    #[error("not implemented: {what}")]
    NotImplemented {
        /// What is missing.
        what: String,
    },

    /// The storage backend failed.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend, e.g. `memory`, `local`, `s3`.
        backend: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// What kind of error an [`Error`] is: one `Copy` value per variant.
///
/// Frontends map kinds to exit codes and HTTP statuses with an exhaustive
/// `match` (no `_` arm): this enum is deliberately *not* `non_exhaustive`,
/// so a new kind is a compile error in every frontend rather than a silent
/// exit 1 or 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::AlreadyExists`].
    AlreadyExists,
    /// [`Error::Precondition`].
    Precondition,
    /// [`Error::Fenced`].
    Fenced,
    /// [`Error::LockHeld`].
    LockHeld,
    /// [`Error::Unauthorized`].
    Unauthorized,
    /// [`Error::SessionExpired`].
    SessionExpired,
    /// [`Error::CredentialsRotated`].
    CredentialsRotated,
    /// [`Error::Forbidden`].
    Forbidden,
    /// [`Error::QuotaExceeded`].
    QuotaExceeded,
    /// [`Error::InvalidInput`].
    InvalidInput,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::NotImplemented`].
    NotImplemented,
    /// [`Error::Backend`].
    Backend,
}

impl ErrorKind {
    /// A stable machine-readable name (`not_found`, `lock_held`, ...), the
    /// `code` the server's error bodies and the CLI's JSON errors carry.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Precondition => "precondition_failed",
            ErrorKind::Fenced => "fenced",
            ErrorKind::LockHeld => "lock_held",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::CredentialsRotated => "credentials_rotated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Backend => "backend_unavailable",
        }
    }
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Precondition,
        ErrorKind::Fenced,
        ErrorKind::LockHeld,
        ErrorKind::Unauthorized,
        ErrorKind::SessionExpired,
        ErrorKind::CredentialsRotated,
        ErrorKind::Forbidden,
        ErrorKind::QuotaExceeded,
        ErrorKind::InvalidInput,
        ErrorKind::Corrupt,
        ErrorKind::NotImplemented,
        ErrorKind::Backend,
    ];
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Precondition { .. } => ErrorKind::Precondition,
            Error::Fenced { .. } => ErrorKind::Fenced,
            Error::LockHeld { .. } => ErrorKind::LockHeld,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::SessionExpired { .. } => ErrorKind::SessionExpired,
            Error::CredentialsRotated { .. } => ErrorKind::CredentialsRotated,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::NotImplemented { .. } => ErrorKind::NotImplemented,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// Shorthand for [`Error::AlreadyExists`].
    pub fn already_exists(what: impl Into<String>) -> Self {
        Error::AlreadyExists { what: what.into() }
    }

    /// Shorthand for [`Error::Precondition`].
    pub fn precondition(what: impl Into<String>) -> Self {
        Error::Precondition { what: what.into() }
    }

    /// Shorthand for [`Error::Forbidden`].
    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Error::Unauthorized {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::NotImplemented`].
    pub fn not_implemented(what: impl Into<String>) -> Self {
        Error::NotImplemented { what: what.into() }
    }

    /// Wraps a backend's own error.
    pub fn backend(
        backend: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            source: source.into(),
        }
    }

    /// True when retrying the same call later may succeed without any change
    /// by the caller: a held lock, a windowed quota, or a backend failure.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::LockHeld { .. } | Error::Backend { .. } => true,
            Error::QuotaExceeded { retry_after, .. } => retry_after.is_some(),
            _ => false,
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for a lost compare-and-swap: [`Error::AlreadyExists`] or [`Error::Precondition`].
    pub fn is_conflict(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::AlreadyExists | ErrorKind::Precondition
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_errors() {
        assert!(Error::backend("memory", "boom").is_temporary());
        assert!(!Error::invalid("x").is_temporary());
        assert!(!Error::precondition("x").is_temporary());
        let q = |retry_after| Error::QuotaExceeded {
            tenant: "acme".into(),
            resource: "jobs_per_hour".into(),
            limit: 10,
            requested: 11,
            retry_after,
        };
        assert!(q(Some(Duration::from_secs(5))).is_temporary());
        assert!(!q(None).is_temporary());
    }

    #[test]
    fn conflicts() {
        assert!(Error::already_exists("k").is_conflict());
        assert!(Error::precondition("k").is_conflict());
        assert!(!Error::not_found("k").is_conflict());
    }
}
