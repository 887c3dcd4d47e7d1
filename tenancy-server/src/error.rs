//! The server's error type: every failure becomes `{"error": {"code", "message"}}`.
//!
//! [`ApiError`] maps every [`ErrorKind`] of [`tenancy_core::Error`] to an HTTP
//! status. Messages of backend and decoding failures are replaced by a
//! generic text, so no internal path, backend detail or stack trace reaches
//! a client; the detail is logged once, when the error becomes a response.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tenancy_core::{Error, ErrorKind};

pub(crate) use crate::views::{ErrorBody, ErrorDetail};

/// An HTTP error with a JSON body (boxed: handlers return it by value).
#[derive(Debug)]
pub struct ApiError {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    holder: Option<Value>,
    quota: Option<Value>,
    expired_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Internal detail, logged (never sent) when the error becomes a response.
    cause: Option<String>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            inner: Box::new(Inner {
                status,
                code,
                message: message.into(),
                retry_after: None,
                holder: None,
                quota: None,
                expired_at: None,
                cause: None,
            }),
        }
    }

    /// 400 `invalid_input`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 412 `precondition_failed`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this tenant; slow down",
        );
        e.inner.retry_after = Some(retry_after);
        e
    }

    /// 500 `internal`, with a generic message.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.inner.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Replaces the message (used where a handler knows a better one).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = message.into();
        self
    }

    /// The `Retry-After` delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// A plain JSON error response for a status without more context
    /// (used for timeouts, unmatched routes and responses of foreign layers).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "this method is not allowed here")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
            StatusCode::SERVICE_UNAVAILABLE => (
                "unavailable",
                "the service is unavailable or the request took too long; retry later",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported_media_type", "unsupported media type")
            }
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "missing or invalid credentials"),
            StatusCode::FORBIDDEN => ("forbidden", "forbidden"),
            s if s.is_client_error() => ("bad_request", "the request is not valid"),
            _ => ("internal", "internal server error"),
        };
        Self::new(status, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.inner.status.as_u16(),
            self.inner.code,
            self.inner.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<Error> for ApiError {
    /// Maps every [`ErrorKind`] exhaustively (a new kind is a compile error
    /// here). Nothing is logged: the internal detail of a backend or decoding
    /// failure rides along and is logged once, when the error becomes a
    /// response.
    fn from(e: Error) -> Self {
        let mut err = match e.kind() {
            ErrorKind::NotFound => ApiError::not_found(e.to_string()),
            ErrorKind::AlreadyExists => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            ErrorKind::Precondition => ApiError::precondition(e.to_string()),
            ErrorKind::Fenced => ApiError::new(StatusCode::CONFLICT, "fenced", e.to_string()),
            ErrorKind::LockHeld => ApiError::new(StatusCode::CONFLICT, "lock_held", ""),
            ErrorKind::Unauthorized => ApiError::unauthorized(""),
            ErrorKind::SessionExpired => {
                ApiError::new(StatusCode::UNAUTHORIZED, "session_expired", e.to_string())
            }
            ErrorKind::CredentialsRotated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "credentials_rotated",
                e.to_string(),
            ),
            ErrorKind::Forbidden => ApiError::forbidden(""),
            ErrorKind::QuotaExceeded => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                e.to_string(),
            ),
            ErrorKind::InvalidInput => ApiError::bad_request(""),
            ErrorKind::NotImplemented => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                e.to_string(),
            ),
            ErrorKind::Corrupt => ApiError::internal(),
            ErrorKind::Backend => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                "the storage backend failed; retry later",
            ),
        };
        match e {
            Error::LockHeld { holder } => {
                err.inner.message = format!("lock {} is held", holder.key);
                err.inner.holder = serde_json::to_value(crate::views::LockView::from(*holder)).ok();
            }
            Error::Unauthorized { message }
            | Error::Forbidden { message }
            | Error::InvalidInput { message } => err.inner.message = message,
            Error::QuotaExceeded {
                resource,
                limit,
                requested,
                retry_after,
                ..
            } => {
                err.inner.retry_after = retry_after;
                err.inner.quota = Some(serde_json::json!({
                    "resource": resource,
                    "limit": limit,
                    "requested": requested,
                }));
            }
            Error::SessionExpired { expired_at } => err.inner.expired_at = Some(expired_at),
            e @ Error::Backend { .. } => {
                // A store that is down or restarting: worth a retry soon.
                err.inner.retry_after = Some(BACKEND_RETRY_AFTER);
                err.inner.cause = Some(e.to_string());
            }
            e @ Error::Corrupt { .. } => err.inner.cause = Some(e.to_string()),
            _ => {}
        }
        err
    }
}

/// The `Retry-After` of a 503 for a failed storage backend (a database or
/// bucket that is down or restarting).
pub(crate) const BACKEND_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = *self.inner;
        if let Some(cause) = &this.cause {
            // The one place a server-side failure is logged.
            tracing::error!(code = this.code, status = this.status.as_u16(), %cause, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: this.code.to_string(),
                message: this.message,
                holder: this.holder,
                quota: this.quota,
                expired_at: this.expired_at,
            },
        };
        let mut res = (this.status, axum::Json(body)).into_response();
        if let Some(d) = this.retry_after {
            // Round up: a client that waits the advertised time must succeed.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// The result type of handlers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_hide_their_details() {
        let e: ApiError = Error::backend("local", "/var/lib/secret/path: permission denied").into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message().contains("/var/lib"));
        let e: ApiError = Error::Corrupt {
            what: "tenants/acme/v1/x".into(),
            message: "eof".into(),
        }
        .into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("tenants/"));
    }

    #[test]
    fn a_failed_backend_is_a_503_with_retry_after() {
        let res = ApiError::from(Error::backend("postgres", "cannot connect")).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn quota_errors_carry_retry_after() {
        let e: ApiError = Error::QuotaExceeded {
            tenant: "acme".into(),
            resource: "jobs_per_hour".into(),
            limit: 10,
            requested: 11,
            retry_after: Some(Duration::from_millis(1500)),
        }
        .into();
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn statuses_map() {
        let cases = [
            (Error::not_found("x"), 404),
            (Error::already_exists("x"), 409),
            (Error::precondition("x"), 412),
            (Error::unauthorized("x"), 401),
            (Error::forbidden("x"), 403),
            (Error::invalid("x"), 400),
            (Error::not_implemented("x"), 501),
        ];
        for (e, want) in cases {
            assert_eq!(ApiError::from(e).status().as_u16(), want);
        }
    }
}
