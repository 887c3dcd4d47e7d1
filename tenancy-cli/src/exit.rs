//! Exit codes, and the one-line error message every failure becomes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | other error |
//! | 2 | usage |
//! | 3 | not logged in / unauthorized / session expired / credentials rotated |
//! | 4 | forbidden (suspended, expired, deleted, wrong mode) |
//! | 5 | not found |
//! | 6 | conflict / lock held |
//! | 7 | quota exceeded |
//! | 8 | `doctor`: problems remain (after `--repair`: the ones it cannot fix); `audit verify`: the chain is not intact |

use std::fmt;

use tenancy_core::{Error, ErrorKind};

/// Success.
pub(crate) const OK: i32 = 0;
/// Any other error: backend, I/O, corrupt data.
pub(crate) const OTHER: i32 = 1;
/// Bad flags, ids or input.
pub(crate) const USAGE: i32 = 2;
/// Not logged in, unauthorized, session expired, credentials rotated.
pub(crate) const UNAUTHORIZED: i32 = 3;
/// Suspended, expired or deleted tenant; wrong session mode.
pub(crate) const FORBIDDEN: i32 = 4;
/// Not found.
pub(crate) const NOT_FOUND: i32 = 5;
/// Conflict or lock held.
pub(crate) const CONFLICT: i32 = 6;
/// Quota exceeded.
pub(crate) const QUOTA: i32 = 7;
/// `tenancy doctor` found problems that remain, or `tenancy audit verify` a chain that is not intact.
pub(crate) const PROBLEMS: i32 = 8;

/// An error raised by the CLI itself (not by a library), with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    /// The exit code.
    pub code: i32,
    /// The message: what went wrong and what to do.
    pub message: String,
}

impl CliError {
    /// An error with `code`.
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// A usage error (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// Not logged in (exit 3).
    pub(crate) fn not_logged_in(message: impl Into<String>) -> Self {
        Self::new(UNAUTHORIZED, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code of a library error.
pub(crate) fn code_of(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Unauthorized | ErrorKind::SessionExpired | ErrorKind::CredentialsRotated => {
            UNAUTHORIZED
        }
        ErrorKind::Forbidden => FORBIDDEN,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists
        | ErrorKind::Precondition
        | ErrorKind::Fenced
        | ErrorKind::LockHeld => CONFLICT,
        ErrorKind::QuotaExceeded => QUOTA,
        ErrorKind::InvalidInput => USAGE,
        ErrorKind::Corrupt | ErrorKind::NotImplemented | ErrorKind::Backend => OTHER,
    }
}

/// The machine-readable code of any error (JSON errors): the library
/// error's kind (`not_found`, `lock_held`, ... as the server names them),
/// or for the CLI's own errors the name of their exit code.
pub(crate) fn error_code(err: &anyhow::Error) -> &'static str {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return match c.code {
                USAGE => "usage",
                UNAUTHORIZED => "unauthorized",
                FORBIDDEN => "forbidden",
                NOT_FOUND => "not_found",
                CONFLICT => "conflict",
                QUOTA => "quota_exceeded",
                PROBLEMS => "problems_remain",
                _ => "error",
            };
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.kind().code();
        }
    }
    "error"
}

/// The exit code of any error: the first [`CliError`] or library [`Error`] in its chain.
pub(crate) fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return c.code;
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            return code_of(e);
        }
    }
    OTHER
}

fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let core = err.chain().find_map(|c| c.downcast_ref::<Error>())?;
    Some(match core.kind() {
        ErrorKind::Unauthorized => {
            "check the tenant id and secret (or the admin password) and try again"
        }
        ErrorKind::Forbidden => match core {
            Error::Forbidden { message } if message.contains("deleted") => {
                "a deleted tenant cannot be activated again; ask the admin for a new tenant"
            }
            Error::Forbidden { message }
                if message.contains("suspended") || message.contains("expired") =>
            {
                "ask the admin to activate it"
            }
            _ => "ask the admin to activate the tenant, or log in with the right kind of session",
        },
        ErrorKind::NotFound => "check the name or id and try again",
        ErrorKind::AlreadyExists => "pick another name, or use the existing one",
        // Only a lost compare-and-swap means someone else wrote meanwhile;
        // other refusals (a transition, a lock id) say what they are.
        ErrorKind::Precondition if is_lost_race(core) => {
            "someone changed it meanwhile; read it again and retry"
        }
        ErrorKind::Precondition => return None,
        ErrorKind::Fenced => {
            "another holder took the lock and saved since; read the state again under a new lock"
        }
        ErrorKind::LockHeld => {
            "wait for the lease to expire, retry with --wait, or ask the holder to release it"
        }
        ErrorKind::QuotaExceeded => "ask the admin to raise the limit or change the plan",
        ErrorKind::Corrupt => "the stored object is damaged; restore it from history or a backup",
        ErrorKind::Backend => "check the backend URL, network and credentials, then retry",
        ErrorKind::NotImplemented => "use a backend that supports it",
        // The message of these already says what to do (log in again).
        ErrorKind::SessionExpired | ErrorKind::CredentialsRotated | ErrorKind::InvalidInput => {
            return None
        }
    })
}

/// True for a conditional write that lost to another writer (the backends'
/// "no longer at version" and "changed by another writer").
fn is_lost_race(e: &Error) -> bool {
    matches!(e, Error::Precondition { what }
        if what.contains("no longer at version") || what.contains("changed by another writer"))
}

/// Collapses whitespace (newlines included) into single spaces.
fn single_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one-line message of an error: its causes joined by `: `, plus a hint
/// of what to do where the message does not already say it.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = single_line(&cause.to_string());
        if s.is_empty() || parts.iter().any(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    let mut msg = parts.join(": ");
    let says_what_to_do = [
        "log in", "tenancy ", "pass ", "run ", "retry", "set ", "check ", "ask ",
    ]
    .iter()
    .any(|w| msg.contains(w));
    if !says_what_to_do {
        if let Some(h) = hint(err) {
            msg.push_str("; ");
            msg.push_str(h);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_follow_the_table() {
        let cases = [
            (Error::unauthorized("x"), 3),
            (
                Error::CredentialsRotated {
                    tenant: "acme".into(),
                },
                3,
            ),
            (
                Error::SessionExpired {
                    expired_at: chrono::Utc::now(),
                },
                3,
            ),
            (Error::forbidden("x"), 4),
            (Error::not_found("x"), 5),
            (Error::already_exists("x"), 6),
            (Error::precondition("x"), 6),
            (
                Error::QuotaExceeded {
                    tenant: "a".into(),
                    resource: "stacks".into(),
                    limit: 1,
                    requested: 2,
                    retry_after: None,
                },
                7,
            ),
            (Error::invalid("x"), 2),
            (Error::backend("s3", "boom"), 1),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let any = anyhow::Error::new(e).context("while doing something");
            assert_eq!(exit_code(&any), code, "{shown}");
        }
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), OTHER);
        assert_eq!(exit_code(&CliError::usage("u").into()), USAGE);
    }

    #[test]
    fn messages_are_one_line_with_a_hint() {
        let e: Result<(), Error> = Err(Error::backend("s3", "line one\nline two"));
        let e = e.context("reading tenant acme").unwrap_err();
        let msg = one_line(&e);
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with("reading tenant acme: s3 backend error"),
            "{msg}"
        );
        assert!(msg.contains("check the backend URL"), "{msg}");

        let e = anyhow::Error::new(Error::CredentialsRotated {
            tenant: "acme".into(),
        });
        let msg = one_line(&e);
        assert!(msg.contains("rotated; log in again"), "{msg}");
        assert!(!msg.contains("check the tenant id"), "{msg}");
    }
}
