//! [`HttpLockManager`]: core's `LockManager` over the tenant's `/v1/locks`
//! routes. The server scopes every key to the calling tenant (its
//! `TenantLocks`), so keys here are the tenant's own, as in the CLI.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use tenancy_core::lock::validate_ttl;
use tenancy_core::{
    Backoff, Clock, Error, LockId, LockInfo, LockKey, LockManager, LockRequest, Result, SystemClock,
};

use super::{Auth, Client, TenantCredential};
use crate::views::{AcquireLock, LockList, LockView};

/// Leased locks through a tenancy-server. `acquire(wait)` retries
/// `try_acquire` with the backoff, sleeping through the clock (the system
/// clock unless [`HttpLockManager::with_clock`]).
#[derive(Debug, Clone)]
pub struct HttpLockManager {
    client: Client,
    credential: TenantCredential,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
}

/// The API takes TTLs in whole seconds; anything else is refused rather
/// than rounded (a rounded lease would end at another time than asked).
fn whole_seconds(ttl: Duration) -> Result<u64> {
    validate_ttl(ttl)?;
    if ttl.subsec_nanos() != 0 {
        return Err(Error::invalid(format!(
            "lock ttl {ttl:?} is not a whole number of seconds, which the HTTP API needs"
        )));
    }
    Ok(ttl.as_secs())
}

fn info(view: LockView) -> Result<LockInfo> {
    LockInfo::try_from(view)
}

impl HttpLockManager {
    /// Locks of the tenant `credential` authenticates, on `client`'s server.
    pub fn new(client: Client, credential: TenantCredential) -> Self {
        HttpLockManager {
            client,
            credential,
            clock: Arc::new(SystemClock),
            backoff: Backoff::default(),
        }
    }

    /// Sleeps between `acquire` attempts through `clock` (tests pass a
    /// manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The backoff between `acquire` attempts (default: 1 s doubling to 16 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn auth(&self) -> Auth<'_> {
        Auth::Tenant(&self.credential)
    }
}

#[async_trait]
impl LockManager for HttpLockManager {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        // The server checks all of this too; refusing here saves a round trip.
        req.validate()?;
        let body = AcquireLock {
            ttl_seconds: whole_seconds(req.ttl)?,
            operation: Some(req.operation.clone()),
            owner: Some(req.who.clone()),
            info: Some(req.info.clone()),
            lock_id: req.lock_id.map(|id| id.to_string()),
            version: req.version.clone(),
            path: (!req.path.is_empty()).then(|| req.path.clone()),
        };
        let view: LockView = self
            .client
            .call(
                Method::POST,
                &["v1", "locks", req.key.as_str()],
                self.auth(),
            )
            .json(&body)
            .send_json()
            .await?;
        info(view)
    }

    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        tenancy_lock::acquire_with_backoff(self, self.clock.as_ref(), &self.backoff, req, wait)
            .await
    }

    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo> {
        let secs = whole_seconds(ttl)?;
        let view: LockView = self
            .client
            .call(Method::PUT, &["v1", "locks", key.as_str()], self.auth())
            .query(&[
                ("lock_id", lock_id.to_string()),
                ("ttl_seconds", secs.to_string()),
            ])
            .send_json()
            .await?;
        info(view)
    }

    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.client
            .call(Method::DELETE, &["v1", "locks", key.as_str()], self.auth())
            .query(&[("lock_id", lock_id.to_string())])
            .send_empty()
            .await
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        let got: Result<LockView> = self
            .client
            .call(Method::GET, &["v1", "locks", key.as_str()], self.auth())
            .send_json()
            .await;
        match got {
            Ok(view) => info(view).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let call = self.client.call(Method::GET, &["v1", "locks"], self.auth());
        let call = if prefix.is_empty() {
            call
        } else {
            call.query(&[("prefix", prefix)])
        };
        let list: LockList = call.send_json().await?;
        list.locks.into_iter().map(info).collect()
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.client
            .call(Method::DELETE, &["v1", "locks", key.as_str()], self.auth())
            .query(&[
                ("lock_id", lock_id.to_string()),
                ("force", "true".to_string()),
            ])
            .send_empty()
            .await
    }
}
