//! The HTTP client of tenancy-server (feature `client`): core's traits over
//! the server's API, so code written against `LockManager` or
//! `TenantRegistry` works through a server with nothing but a tenant
//! secret, a session token or the admin credential.
//!
//! - [`Client`]: one server (its base URL) and one connection pool; cheap to
//!   clone. [`Client::login_tenant`] / [`Client::login_admin`] exchange a
//!   secret or the admin token for a server-issued session
//!   ([`tenancy_core::IssuedSession`], the token shown once).
//! - [`TenantClient`] (from [`Client::tenant`] with a [`TenantCredential`]):
//!   the tenant routes (profile, sessions and logout, state with ETags, its
//!   named API keys) and [`TenantClient::locks`].
//! - [`HttpLockManager`]: `LockManager` over `/v1/locks` (the server scopes
//!   the keys to the tenant; `acquire` retries through its `Clock`).
//! - [`HttpRegistry`] (from [`Client::registry`] with the admin token or an
//!   admin session token): `TenantRegistry` over the admin API. What a
//!   server has no route for says so with `NotImplemented`: `bootstrap` and
//!   `is_bootstrapped` (a server bootstraps its own registry).
//!
//! Errors are core's [`Error`]: the server's JSON error `code` gives the
//! variant back (`client/error.rs`); a server that cannot be reached is one
//! [`Error::Backend`] "cannot reach <url>: <cause>" (temporary, like every
//! backend failure). Credentials travel in headers marked sensitive and
//! never appear in an error.
//!
//! TLS is rustls on ring (no C build): the first client installs ring as
//! the process's rustls crypto provider if none is, and uses the platform's
//! certificate verifier.

mod error;
mod keys;
mod locks;
mod registry;
mod stacks;
mod tenant;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tenancy_core::{Error, IssuedSession, Result, Secret, TenantId};
use url::Url;

pub use error::ClientError;
pub use locks::HttpLockManager;
pub use registry::HttpRegistry;
pub use stacks::{StackClient, StackDocument};
pub use tenant::TenantClient;

use crate::views::{IssuedSessionView, TenantLogin};

/// The default time a whole request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default time to set up a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a tenant authenticates to the server.
#[derive(Debug, Clone)]
pub enum TenantCredential {
    /// The tenant's secret (sent as `X-API-Key`), optionally with the tenant
    /// id it must belong to (`X-Tenant-ID`).
    Secret {
        /// The secret.
        secret: Secret,
        /// The tenant it must belong to.
        tenant: Option<TenantId>,
    },
    /// A tenant session token from [`Client::login_tenant`] (sent as
    /// `Authorization: Bearer`).
    Session(Secret),
}

impl TenantCredential {
    fn apply(&self, headers: &mut HeaderMap) -> Result<()> {
        match self {
            TenantCredential::Secret { secret, tenant } => {
                headers.insert(
                    HeaderName::from_static("x-api-key"),
                    sensitive(secret.expose())?,
                );
                if let Some(t) = tenant {
                    headers.insert(
                        HeaderName::from_static("x-tenant-id"),
                        sensitive(t.as_str())?,
                    );
                }
            }
            TenantCredential::Session(token) => {
                headers.insert(AUTHORIZATION, bearer(token)?);
            }
        }
        Ok(())
    }
}

/// A header value that HTTP stacks must not log.
fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| Error::unauthorized("the credential holds characters no HTTP header can"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn bearer(token: &Secret) -> Result<HeaderValue> {
    sensitive(&format!("Bearer {}", token.expose()))
}

/// Builds a [`Client`] with non-default timeouts.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// The longest a whole request may take (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The longest setting up a connection may take (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The client. `InvalidInput` for a URL that is not `http://` or
    /// `https://` with a host.
    pub fn build(self) -> Result<Client> {
        let base = parse_base(&self.url)?;
        // reqwest is built without a provider of its own: use ring, unless
        // the process chose one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("tenancy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error::backend(ClientError::Setup(e.to_string())))?;
        let shown = base.as_str().trim_end_matches('/').to_string();
        Ok(Client {
            inner: Arc::new(Inner { http, base, shown }),
        })
    }
}

fn parse_base(raw: &str) -> Result<Url> {
    let invalid = |why: &str| {
        Error::invalid(format!(
            "server URL \"{}\" {why}; give http://host[:port] or https://host[:port]",
            raw.chars().take(200).collect::<String>().escape_debug()
        ))
    };
    let mut url = Url::parse(raw.trim()).map_err(|_| invalid("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "carries credentials (send them as a secret or token instead)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    // A base path (a server behind a prefix) ends in `/`, so routes join below it.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    /// The base URL as errors show it.
    shown: String,
}

/// A tenancy-server, by URL, with a connection pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client of the server at `url` (`http://host:port` or
    /// `https://host`, optionally with a base path), with the default
    /// timeouts.
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder, for other timeouts.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The server's base URL.
    pub fn url(&self) -> &Url {
        &self.inner.base
    }

    /// Checks that the server answers and is ready (`GET /readyz`).
    pub async fn ready(&self) -> Result<()> {
        self.call(Method::GET, &["readyz"], Auth::None)
            .send_empty()
            .await
    }

    /// Exchanges a tenant's secret for a tenant session (7 days); the token
    /// is in the answer, once. `Unauthorized` for a wrong secret or another
    /// tenant's, `Forbidden` for a suspended, expired or deleted tenant.
    pub async fn login_tenant(&self, tenant: &TenantId, secret: &Secret) -> Result<IssuedSession> {
        if tenancy_core::session::parse_session_token(secret.expose()).is_some() {
            return Err(Error::unauthorized(
                "that is a session token, not a tenant secret",
            ));
        }
        let credential = TenantCredential::Secret {
            secret: secret.clone(),
            tenant: None,
        };
        let view: IssuedSessionView = self
            .call(Method::POST, &["v1", "sessions"], Auth::Tenant(&credential))
            .json(&TenantLogin {
                tenant: Some(tenant.to_string()),
            })
            .send_json()
            .await?;
        issued(view)
    }

    /// Exchanges the admin token for an admin session (8 hours); the token
    /// is in the answer, once. `Unauthorized` for a wrong token.
    pub async fn login_admin(&self, admin_token: &Secret) -> Result<IssuedSession> {
        if tenancy_core::session::parse_session_token(admin_token.expose()).is_some() {
            return Err(Error::unauthorized(
                "that is a session token, not the admin credential",
            ));
        }
        let view: IssuedSessionView = self
            .call(
                Method::POST,
                &["v1", "admin", "sessions"],
                Auth::Admin(admin_token),
            )
            .send_json()
            .await?;
        issued(view)
    }

    /// Ends the admin session `token` opens (`DELETE
    /// /v1/admin/sessions/current`); the token is refused from then on.
    pub async fn logout_admin(&self, token: &Secret) -> Result<()> {
        self.call(
            Method::DELETE,
            &["v1", "admin", "sessions", "current"],
            Auth::Admin(token),
        )
        .send_empty()
        .await
    }

    /// The tenant routes, as the tenant `credential` authenticates.
    pub fn tenant(&self, credential: TenantCredential) -> TenantClient {
        TenantClient::new(self.clone(), credential)
    }

    /// The admin API as a `TenantRegistry`, authenticated by the admin token
    /// or an admin session token.
    pub fn registry(&self, admin: Secret) -> HttpRegistry {
        HttpRegistry::new(self.clone(), admin)
    }

    /// The base URL as errors show it.
    pub(crate) fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// A request to the route made of `segments` (each percent-encoded as
    /// one path segment, so a key cannot add segments or a query).
    pub(crate) fn call<'a>(
        &'a self,
        method: Method,
        segments: &[&str],
        auth: Auth<'a>,
    ) -> Call<'a> {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        Call {
            client: self,
            builder: self.inner.http.request(method, url),
            auth,
        }
    }
}

/// The core error for an error answer of the server at `url`.
pub(crate) async fn error_of(url: &str, res: Response) -> Error {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    match res.bytes().await {
        Ok(body) => error::from_answer(url, status, &headers, &body),
        Err(e) => error::unreachable(url, &e),
    }
}

fn issued(view: IssuedSessionView) -> Result<IssuedSession> {
    Ok(IssuedSession {
        session: view.session.to_session()?,
        token: Secret::new(view.token),
    })
}

/// Who a request is made as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// Nobody (open routes).
    None,
    /// A tenant.
    Tenant(&'a TenantCredential),
    /// The admin (token or admin session).
    Admin(&'a Secret),
}

/// One request being built.
pub(crate) struct Call<'a> {
    client: &'a Client,
    builder: RequestBuilder,
    auth: Auth<'a>,
}

impl<'a> Call<'a> {
    pub(crate) fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    pub(crate) fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        self.builder = self.builder.query(query);
        self
    }

    pub(crate) fn header(mut self, name: reqwest::header::HeaderName, value: HeaderValue) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub(crate) fn body(mut self, bytes: bytes::Bytes) -> Self {
        self.builder = self.builder.body(bytes);
        self
    }

    /// Sends the request; an error answer becomes its core error.
    pub(crate) async fn send(self) -> Result<Response> {
        let url = self.client.shown().to_string();
        let res = self.send_any().await?;
        let status = res.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(res);
        }
        Err(error_of(&url, res).await)
    }

    /// Sends the request and returns any answer the server gave (only a
    /// transport failure is an error).
    pub(crate) async fn send_any(self) -> Result<Response> {
        let mut headers = HeaderMap::new();
        match self.auth {
            Auth::None => {}
            Auth::Tenant(c) => c.apply(&mut headers)?,
            Auth::Admin(token) => {
                headers.insert(AUTHORIZATION, bearer(token)?);
            }
        }
        let url = self.client.shown();
        self.builder
            .headers(headers)
            .send()
            .await
            .map_err(|e| error::unreachable(url, &e))
    }

    /// Sends and decodes a JSON answer.
    pub(crate) async fn send_json<T: DeserializeOwned>(self) -> Result<T> {
        let url = self.client.shown().to_string();
        let res = self.send().await?;
        let status = res.status().as_u16();
        let body = res
            .bytes()
            .await
            .map_err(|e| error::unreachable(&url, &e))?;
        serde_json::from_slice(&body).map_err(|e| {
            error::backend(ClientError::Protocol {
                url,
                status,
                detail: e.to_string(),
            })
        })
    }

    /// Sends and ignores the answer's body.
    pub(crate) async fn send_empty(self) -> Result<()> {
        self.send().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for (raw, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            (
                "https://tenancy.example.com/",
                "https://tenancy.example.com/",
            ),
            ("https://example.com/api", "https://example.com/api/"),
        ] {
            assert_eq!(parse_base(raw).unwrap().as_str(), want);
        }
        for bad in [
            "",
            "127.0.0.1:8080",
            "file:///tmp/x",
            "s3://bucket",
            "http://user:pw@host",
            "http://host/?q=1",
        ] {
            assert!(
                matches!(parse_base(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn segments_are_encoded_one_by_one() {
        let c = Client::new("http://h:1/base").unwrap();
        let call = c.call(Method::GET, &["v1", "state", "a/b?c"], Auth::None);
        let req = call.builder.build().unwrap();
        assert_eq!(req.url().as_str(), "http://h:1/base/v1/state/a%2Fb%3Fc");
    }
}
