//! [`StackClient`]: a tenant's stack state through the server's stack
//! routes (`routes/stacks.rs` describes the protocol): documents byte for
//! byte, saves and rollbacks under the stack's lock, history.
//!
//! A write refused because another holder has the stack's lock (the
//! routes' 423 with the holder's Terraform LockInfo) is
//! [`Error::LockHeld`] with that holder, as from any `LockManager`.

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use tenancy_core::{Error, LockId, LockKey, Result};

use super::error::{backend, unreachable, ClientError};
use super::{error_of, Auth, Client, TenantCredential};
use crate::views::{RollbackBody, StackHistory, StackList, StackWritten, TerraformLock};

/// One version of a stack environment's state document, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDocument {
    /// Its serial.
    pub serial: u64,
    /// The document, byte for byte.
    pub bytes: Bytes,
}

/// The stack routes of one server as one tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StackClient {
    client: Client,
    credential: TenantCredential,
}

const SERIAL: HeaderName = HeaderName::from_static("x-tenancy-serial");

impl StackClient {
    pub(crate) fn new(client: Client, credential: TenantCredential) -> Self {
        StackClient { client, credential }
    }

    fn call(&self, method: Method, stack: &str, env: &str, rest: &[&str]) -> super::Call<'_> {
        let mut path = vec!["v1", "stacks", stack, env];
        path.extend_from_slice(rest);
        self.client
            .call(method, &path, Auth::Tenant(&self.credential))
    }

    fn protocol(&self, status: StatusCode, detail: impl Into<String>) -> Error {
        backend(ClientError::Protocol {
            url: self.client.shown().to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        })
    }

    /// Sends `call`; a 423 becomes `LockHeld` with the holder of the lock
    /// of `stack`/`env`, any other error answer its core error.
    async fn send(&self, call: super::Call<'_>, stack: &str, env: &str) -> Result<Response> {
        let res = call.send_any().await?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        if status == StatusCode::LOCKED {
            let bytes = self.body(res).await?;
            let lock: TerraformLock = serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(status, format!("a 423 without the holder: {e}")))?;
            let key = LockKey::stack_env(stack, env)?;
            let holder = lock.to_lock_info(key, None, chrono::Utc::now())?;
            return Err(Error::LockHeld {
                holder: Box::new(holder),
            });
        }
        Err(error_of(self.client.shown(), res).await)
    }

    async fn body(&self, res: Response) -> Result<Bytes> {
        res.bytes()
            .await
            .map_err(|e| unreachable(self.client.shown(), &e))
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, res: Response) -> Result<T> {
        let status = res.status();
        let bytes = self.body(res).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(status, e.to_string()))
    }

    async fn document(&self, res: Response) -> Result<StackDocument> {
        let status = res.status();
        let serial = res
            .headers()
            .get(SERIAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| self.protocol(status, "a state document without X-Tenancy-Serial"))?;
        Ok(StackDocument {
            serial,
            bytes: self.body(res).await?,
        })
    }

    fn under<'a>(call: super::Call<'a>, lock_id: Option<&LockId>) -> super::Call<'a> {
        match lock_id {
            Some(id) => call.query(&[("ID", id.to_string())]),
            None => call,
        }
    }

    /// The current document of `stack`/`env` (`None` when it has none).
    pub async fn current(&self, stack: &str, env: &str) -> Result<Option<StackDocument>> {
        let res = self
            .send(self.call(Method::GET, stack, env, &["state"]), stack, env)
            .await?;
        if res.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.document(res).await.map(Some)
    }

    /// Version `serial` of `stack`/`env` (`NotFound` when there is none).
    pub async fn version(&self, stack: &str, env: &str, serial: u64) -> Result<StackDocument> {
        let n = serial.to_string();
        let res = self
            .send(
                self.call(Method::GET, stack, env, &["history", &n]),
                stack,
                env,
            )
            .await?;
        self.document(res).await
    }

    /// Saves `document` (JSON, stored as given) as the next version, under
    /// the stack's lock when `lock_id` holds it. `LockHeld` while another
    /// holder has it; `Precondition` for a lock id that no longer holds it;
    /// `Fenced` when a newer holder saved since; `QuotaExceeded` for a new
    /// stack over `max_stacks` or a document over the state quota.
    pub async fn save(
        &self,
        stack: &str,
        env: &str,
        document: Bytes,
        lock_id: Option<&LockId>,
    ) -> Result<StackWritten> {
        let call = self
            .call(Method::POST, stack, env, &["state"])
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(document);
        let res = self.send(Self::under(call, lock_id), stack, env).await?;
        self.json(res).await
    }

    /// Makes version `to` current again, as a new version.
    pub async fn rollback(
        &self,
        stack: &str,
        env: &str,
        to: u64,
        lock_id: Option<&LockId>,
    ) -> Result<StackWritten> {
        let call = self
            .call(Method::POST, stack, env, &["rollback"])
            .json(&RollbackBody { to });
        let res = self.send(Self::under(call, lock_id), stack, env).await?;
        self.json(res).await
    }

    /// Deletes `stack`/`env` (a tombstone version; history is kept until
    /// pruned) and gives its stack quota back when it was the stack's last
    /// environment.
    pub async fn delete(
        &self,
        stack: &str,
        env: &str,
        lock_id: Option<&LockId>,
    ) -> Result<StackWritten> {
        let call = self.call(Method::DELETE, stack, env, &["state"]);
        let res = self.send(Self::under(call, lock_id), stack, env).await?;
        self.json(res).await
    }

    /// The versions of `stack`/`env`, oldest first, and what cannot be read.
    pub async fn history(&self, stack: &str, env: &str) -> Result<StackHistory> {
        let res = self
            .send(self.call(Method::GET, stack, env, &["history"]), stack, env)
            .await?;
        self.json(res).await
    }

    /// Every stack environment of the tenant with its serial and lock holder.
    pub async fn list(&self) -> Result<StackList> {
        self.client
            .call(
                Method::GET,
                &["v1", "stacks"],
                Auth::Tenant(&self.credential),
            )
            .send_json()
            .await
    }
}
