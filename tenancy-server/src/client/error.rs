//! How answers of the server become core [`Error`]s: the JSON error body's
//! `code` names the variant (the server's `ApiError` mapping, read
//! backwards), and a server that cannot be reached is one
//! [`Error::Backend`] saying "cannot reach <url>" (temporary).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tenancy_core::{Error, LockInfo};

use crate::views::ErrorBody;

/// What went wrong between this client and the server. Rides inside
/// [`Error::Backend`] (backend `http`), so callers see one core `Error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No answer: the server is down, the address is wrong, TLS failed or
    /// the request timed out.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// The innermost cause (e.g. `Connection refused (os error 111)`).
        reason: String,
    },
    /// The server answered with an error this client maps to no other
    /// variant (a server failure, or a code it does not know).
    #[error("{url} answered {status} {code}: {message}")]
    Server {
        /// The server's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error body's `code`.
        code: String,
        /// The error body's `message`.
        message: String,
    },
    /// The server's answer is not what the API says it is.
    #[error("{url} answered {status} with a body this client cannot read ({detail}); is it a tenancy-server of the same version?")]
    Protocol {
        /// The server's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What did not parse.
        detail: String,
    },
    /// The client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// The backend name in [`Error::Backend`].
pub(crate) const BACKEND: &str = "http";

pub(crate) fn backend(e: ClientError) -> Error {
    Error::backend(BACKEND, e)
}

/// A transport failure as "cannot reach <url>: <innermost cause>".
pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> Error {
    let mut reason = if e.is_timeout() {
        "the request timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    backend(ClientError::Unreachable {
        url: url.to_string(),
        reason,
    })
}

fn strip(message: &str, prefix: &str) -> String {
    message.strip_prefix(prefix).unwrap_or(message).to_string()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The tenant a server message names after `prefix` (up to the next
/// space or `:`), for errors whose body does not carry it separately.
fn tenant_in(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1;
    let end = rest.find([' ', ':']).unwrap_or(rest.len());
    Some(rest[..end].to_string()).filter(|t| !t.is_empty())
}

/// The core error for an error answer of the server at `url`.
pub(crate) fn from_answer(url: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
        let detail = format!(
            "{} bytes that are not the API's JSON error body",
            body.len()
        );
        return backend(ClientError::Protocol {
            url: url.to_string(),
            status,
            detail,
        });
    };
    let message = error.message;
    match error.code.as_str() {
        // The router's own 404 and 405: this server has no such route
        // (another version), not a missing object.
        "not_found" if message == "no such route" => Error::not_implemented(format!(
            "{url} has no route for this request; is it a tenancy-server of the same version?"
        )),
        "method_not_allowed" => Error::not_implemented(format!(
            "{url} does not allow this method here; is it a tenancy-server of the same version?"
        )),
        "not_found" => Error::NotFound {
            what: strip(&message, "not found: "),
        },
        "already_exists" => Error::AlreadyExists {
            what: strip(&message, "already exists: "),
        },
        "precondition_failed" => Error::Precondition {
            what: strip(&message, "precondition failed: "),
        },
        // A refused transition or a lost lease.
        "conflict" | "lock_lost" => Error::Precondition { what: message },
        "fenced" => Error::Fenced {
            what: strip(&message, "fenced: "),
        },
        "lock_held" => match error
            .holder
            .map(serde_json::from_value::<crate::views::LockView>)
        {
            Some(Ok(view)) => match LockInfo::try_from(view) {
                Ok(holder) => Error::LockHeld {
                    holder: Box::new(holder),
                },
                Err(e) => e,
            },
            _ => backend(ClientError::Protocol {
                url: url.to_string(),
                status,
                detail: "a lock_held error without its holder".into(),
            }),
        },
        "unauthorized" => Error::Unauthorized { message },
        "session_expired" => Error::SessionExpired {
            expired_at: error.expired_at.unwrap_or_else(chrono::Utc::now),
        },
        "credentials_rotated" => Error::CredentialsRotated {
            tenant: tenant_in(&message, "credentials of tenant ").unwrap_or_else(|| "?".into()),
        },
        "forbidden" => Error::Forbidden { message },
        "quota_exceeded" => {
            let quota = error.quota.unwrap_or_default();
            let field = |k: &str| quota.get(k).and_then(serde_json::Value::as_u64);
            Error::QuotaExceeded {
                tenant: tenant_in(&message, "quota exceeded for tenant ").unwrap_or_default(),
                resource: quota
                    .get("resource")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                limit: field("limit").unwrap_or_default(),
                requested: field("requested").unwrap_or_default(),
                retry_after: retry_after(headers),
            }
        }
        // The per-replica request rate: a quota with a window.
        "rate_limited" => {
            let limit = header_u64(headers, "x-ratelimit-limit").unwrap_or_default();
            Error::QuotaExceeded {
                tenant: tenant_in(&message, "tenant ").unwrap_or_default(),
                resource: "requests_per_second".into(),
                limit,
                requested: limit.saturating_add(1),
                retry_after: Some(retry_after(headers).unwrap_or(Duration::from_secs(1))),
            }
        }
        "invalid_input" | "bad_request" | "payload_too_large" | "unsupported_media_type" => {
            Error::InvalidInput { message }
        }
        "not_implemented" => Error::NotImplemented {
            what: strip(&message, "not implemented: "),
        },
        // internal, backend_unavailable, unavailable, timeout, and codes
        // this client does not know: the server's own failure, said with
        // its code.
        code => backend(ClientError::Server {
            url: url.to_string(),
            status,
            code: code.to_string(),
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: serde_json::Value) -> Error {
        from_answer(
            "http://x",
            status,
            &HeaderMap::new(),
            &serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    #[test]
    fn codes_map_back_to_kinds() {
        use tenancy_core::ErrorKind as K;
        let cases = [
            (404, "not_found", "not found: tenant acme", K::NotFound),
            (404, "not_found", "no such route", K::NotImplemented),
            (409, "already_exists", "already exists: x", K::AlreadyExists),
            (
                412,
                "precondition_failed",
                "precondition failed: x",
                K::Precondition,
            ),
            (
                409,
                "conflict",
                "a deleted tenant cannot become active",
                K::Precondition,
            ),
            (
                409,
                "lock_lost",
                "the lock is not held with this lock id",
                K::Precondition,
            ),
            (409, "fenced", "fenced: x", K::Fenced),
            (401, "unauthorized", "invalid credentials", K::Unauthorized),
            (401, "session_expired", "session expired", K::SessionExpired),
            (
                401,
                "credentials_rotated",
                "credentials of tenant acme were rotated; log in again",
                K::CredentialsRotated,
            ),
            (403, "forbidden", "tenant acme is suspended", K::Forbidden),
            (400, "invalid_input", "bad", K::InvalidInput),
            (413, "payload_too_large", "big", K::InvalidInput),
            (
                501,
                "not_implemented",
                "not implemented: x",
                K::NotImplemented,
            ),
            (503, "backend_unavailable", "retry later", K::Backend),
            (500, "internal", "internal server error", K::Backend),
            (418, "teapot", "short and stout", K::Backend),
        ];
        for (status, code, message, kind) in cases {
            let e = answer(
                status,
                serde_json::json!({"error": {"code": code, "message": message}}),
            );
            assert_eq!(e.kind(), kind, "{code}: {e}");
        }
        let e = answer(
            401,
            serde_json::json!({"error": {"code": "credentials_rotated", "message": "credentials of tenant acme were rotated; log in again"}}),
        );
        assert!(matches!(e, Error::CredentialsRotated { tenant } if tenant == "acme"));
        let e = answer(
            404,
            serde_json::json!({"error": {"code": "not_found", "message": "not found: tenant acme"}}),
        );
        assert_eq!(e.to_string(), "not found: tenant acme");
        let e = answer(
            418,
            serde_json::json!({"error": {"code": "teapot", "message": "short and stout"}}),
        );
        assert!(e.to_string().contains("teapot"), "{e}");
        let e = from_answer(
            "http://x",
            502,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
        );
        assert!(matches!(e, Error::Backend { .. }), "{e}");
    }

    #[test]
    fn quota_errors_keep_their_numbers_and_window() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, reqwest::header::HeaderValue::from_static("7"));
        let body = serde_json::json!({"error": {
            "code": "quota_exceeded",
            "message": "quota exceeded for tenant acme: jobs_per_hour would be 4 over a limit of 3",
            "quota": {"resource": "jobs_per_hour", "limit": 3, "requested": 4}}});
        let e = from_answer(
            "http://x",
            429,
            &headers,
            &serde_json::to_vec(&body).unwrap_or_default(),
        );
        match e {
            Error::QuotaExceeded {
                tenant,
                resource,
                limit,
                requested,
                retry_after,
            } => {
                assert_eq!(
                    (tenant.as_str(), resource.as_str(), limit, requested),
                    ("acme", "jobs_per_hour", 3, 4)
                );
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("{other}"),
        }
    }
}
