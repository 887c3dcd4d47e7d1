//! [`TenantClient`]: the tenant routes (profile, sessions, state with
//! ETags) and the tenant's locks, as one tenant credential authenticates.

use bytes::Bytes;
use reqwest::header::{HeaderValue, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use tenancy_core::{
    ApiKey, CreatedApiKey, DeleteMode, Error, KeyId, ListEntry, NewApiKey, Object, PutMode, Result,
    RotatedApiKey, ServerSession, SessionId, StateKey, Version,
};

use super::error::{backend, ClientError};
use super::{Auth, Client, HttpLockManager, TenantCredential};
use crate::views::{OwnTenantView, SessionList, SessionView, StateList, StateWritten};

/// The tenant routes of one server as one tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantClient {
    client: Client,
    credential: TenantCredential,
}

fn etag(v: &Version) -> Result<HeaderValue> {
    HeaderValue::from_str(&crate::views::etag(v))
        .map_err(|_| Error::invalid("a version no ETag can carry"))
}

use crate::views::parse_etag as version;

impl TenantClient {
    pub(crate) fn new(client: Client, credential: TenantCredential) -> Self {
        TenantClient { client, credential }
    }

    fn auth(&self) -> Auth<'_> {
        Auth::Tenant(&self.credential)
    }

    /// The credential this client authenticates with.
    pub fn credential(&self) -> &TenantCredential {
        &self.credential
    }

    /// The tenant's locks through this server.
    pub fn locks(&self) -> HttpLockManager {
        HttpLockManager::new(self.client.clone(), self.credential.clone())
    }

    /// The tenant's stack state through the stack routes.
    pub fn stacks(&self) -> super::StackClient {
        super::StackClient::new(self.client.clone(), self.credential.clone())
    }

    fn keys_routes(&self) -> super::keys::KeyRoutes<'_> {
        super::keys::KeyRoutes {
            client: &self.client,
            base: vec!["v1", "keys"],
            auth: self.auth(),
        }
    }

    /// The tenant's named API keys, oldest first (owner role).
    pub async fn keys(&self) -> Result<Vec<ApiKey>> {
        self.keys_routes().list().await
    }

    /// Creates a named key (owner role); the key is in the answer once.
    pub async fn create_key(&self, new: NewApiKey) -> Result<CreatedApiKey> {
        self.keys_routes().create(new).await
    }

    /// Revokes a key at once (owner role).
    pub async fn revoke_key(&self, id: &KeyId) -> Result<ApiKey> {
        self.keys_routes().revoke(id).await
    }

    /// Replaces a key; the old one works for `grace` (owner role).
    pub async fn rotate_key(
        &self,
        id: &KeyId,
        grace: std::time::Duration,
    ) -> Result<RotatedApiKey> {
        self.keys_routes().rotate(id, grace).await
    }

    /// The named key this client's credential is (or its session was
    /// opened with); `None` for the primary secret (role owner).
    pub async fn current_key(&self) -> Result<Option<ApiKey>> {
        let view: std::result::Result<crate::views::KeyView, Error> = self
            .client
            .call(Method::GET, &["v1", "keys", "current"], self.auth())
            .send_json()
            .await;
        match view {
            Ok(v) => Ok(Some(v.to_key())),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The tenant's profile, limits and usage (`GET /v1/tenant`).
    pub async fn me(&self) -> Result<OwnTenantView> {
        self.client
            .call(Method::GET, &["v1", "tenant"], self.auth())
            .send_json()
            .await
    }

    /// The session this client's token opens (`NotFound` when it
    /// authenticates with the secret instead).
    pub async fn session(&self) -> Result<ServerSession> {
        let view: SessionView = self
            .client
            .call(Method::GET, &["v1", "sessions", "current"], self.auth())
            .send_json()
            .await?;
        view.to_session()
    }

    /// The tenant's unexpired sessions, oldest first.
    pub async fn sessions(&self) -> Result<Vec<ServerSession>> {
        let list: SessionList = self
            .client
            .call(Method::GET, &["v1", "sessions"], self.auth())
            .send_json()
            .await?;
        list.sessions.iter().map(SessionView::to_session).collect()
    }

    /// Logout: ends the session this client's token opens; the token is
    /// refused from then on (`NotFound` when it authenticates with the
    /// secret).
    pub async fn logout(&self) -> Result<()> {
        self.client
            .call(Method::DELETE, &["v1", "sessions", "current"], self.auth())
            .send_empty()
            .await
    }

    /// Ends one of the tenant's sessions.
    pub async fn revoke_session(&self, id: &SessionId) -> Result<()> {
        self.client
            .call(
                Method::DELETE,
                &["v1", "sessions", id.as_str()],
                self.auth(),
            )
            .send_empty()
            .await
    }

    fn state_path(key: &StateKey) -> Vec<&str> {
        let mut path = vec!["v1", "state"];
        path.extend(key.segments());
        path
    }

    /// One object of the tenant's state and its version (from the ETag).
    pub async fn get_state(&self, key: &StateKey) -> Result<Option<Object>> {
        let got = self
            .client
            .call(Method::GET, &Self::state_path(key), self.auth())
            .send()
            .await;
        let res = match got {
            Ok(res) => res,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let version = self.version_of(res.headers().get(ETAG), res.status())?;
        let url = self.client.shown().to_string();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| super::error::unreachable(&url, &e))?;
        Ok(Some(Object { bytes, version }))
    }

    fn version_of(&self, tag: Option<&HeaderValue>, status: StatusCode) -> Result<Version> {
        tag.and_then(|t| t.to_str().ok())
            .and_then(version)
            .ok_or_else(|| {
                backend(ClientError::Protocol {
                    url: self.client.shown().to_string(),
                    status: status.as_u16(),
                    detail: "an answer without the ETag of the object".into(),
                })
            })
    }

    /// Writes one object: [`PutMode::Create`] only if absent (`AlreadyExists`
    /// otherwise, as the server's 412 for `If-None-Match: *` means),
    /// [`PutMode::Update`] only over that version (`Precondition`). Returns
    /// the new version. Counts against the tenant's state quotas.
    pub async fn put_state(&self, key: &StateKey, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let call = self
            .client
            .call(Method::PUT, &Self::state_path(key), self.auth())
            .body(bytes);
        let call = match &mode {
            PutMode::Overwrite => call,
            PutMode::Create => call.header(IF_NONE_MATCH, HeaderValue::from_static("*")),
            PutMode::Update(v) => call.header(IF_MATCH, etag(v)?),
        };
        let written = match call.send().await {
            Ok(res) => res,
            Err(Error::Precondition { what }) if mode == PutMode::Create => {
                return Err(Error::AlreadyExists { what })
            }
            Err(e) => return Err(e),
        };
        let status = written.status();
        let tag = written.headers().get(ETAG).cloned();
        let url = self.client.shown().to_string();
        let body = written
            .bytes()
            .await
            .map_err(|e| super::error::unreachable(&url, &e))?;
        match tag {
            Some(t) => self.version_of(Some(&t), status),
            None => {
                let w: StateWritten = serde_json::from_slice(&body).map_err(|e| {
                    backend(ClientError::Protocol {
                        url,
                        status: status.as_u16(),
                        detail: e.to_string(),
                    })
                })?;
                version(&w.etag).ok_or_else(|| Error::invalid("the server sent a malformed ETag"))
            }
        }
    }

    /// Deletes one object (`NotFound` when absent; `Precondition` when not
    /// at the version of [`DeleteMode::IfVersion`]).
    pub async fn delete_state(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        let call = self
            .client
            .call(Method::DELETE, &Self::state_path(key), self.auth());
        let call = match &mode {
            DeleteMode::Any => call,
            DeleteMode::IfVersion(v) => call.header(IF_MATCH, etag(v)?),
        };
        call.send_empty().await
    }

    /// The tenant's keys strictly below `prefix` (all for `None`), sorted,
    /// and whether the server cut the listing at its limit.
    pub async fn list_state(&self, prefix: Option<&StateKey>) -> Result<(Vec<ListEntry>, bool)> {
        let call = self.client.call(Method::GET, &["v1", "state"], self.auth());
        let call = match prefix {
            Some(p) => call.query(&[("prefix", p.as_str())]),
            None => call,
        };
        let list: StateList = call.send_json().await?;
        let entries = list
            .keys
            .into_iter()
            .map(|e| {
                Ok(ListEntry {
                    key: StateKey::new(e.key)?,
                    size: e.size,
                    last_modified: e.last_modified,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, list.truncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip() {
        for raw in ["123", "a.b-c", "needs/escaping \"x\"", "ü"] {
            let v = Version(raw.to_string());
            let tag = etag(&v).unwrap();
            assert_eq!(version(tag.to_str().unwrap()), Some(v), "{raw}");
        }
        assert_eq!(version("nope"), None);
    }
}
