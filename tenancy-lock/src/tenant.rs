//! `TenantLocks`: a tenant's view of a shared lock manager, with every key
//! namespaced under `tenant:<id>:`.

use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{Error, LockId, LockInfo, LockKey, LockManager, LockRequest, Result, TenantId};

/// Wraps a [`LockManager`] for one tenant.
///
/// Keys are stored as `tenant:<id>:<key>`; results carry the key as the
/// tenant named it and `tenant` set. Because every key the tenant names is
/// prefixed in this one place, a tenant can only ever address its own
/// namespace: it cannot see, renew, release or force-unlock another tenant's
/// lock, whatever key or lock id it passes.
#[derive(Debug, Clone)]
pub struct TenantLocks<L: LockManager> {
    inner: L,
    tenant: TenantId,
    prefix: String,
}

impl<L: LockManager> TenantLocks<L> {
    /// The view of `inner` for `tenant`.
    pub fn new(inner: L, tenant: TenantId) -> Self {
        let prefix = tenancy_core::layout::lock_prefix(&tenant);
        TenantLocks {
            inner,
            tenant,
            prefix,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The key as stored in the wrapped manager: `tenant:<id>:<key>`.
    pub fn full_key(&self, key: &LockKey) -> Result<LockKey> {
        key.prefixed(&self.prefix)
    }

    /// Turns a stored lease back into the tenant's view, or `None` if it is
    /// not in this tenant's namespace.
    fn local(&self, mut info: LockInfo) -> Option<LockInfo> {
        info.key = info.key.strip_prefix(&self.prefix)?;
        info.tenant = Some(self.tenant.clone());
        Some(info)
    }

    fn local_or_err(&self, info: LockInfo) -> Result<LockInfo> {
        let key = info.key.clone();
        self.local(info).ok_or_else(|| {
            Error::invalid(format!(
                "lock manager returned lock {key} outside the namespace of tenant {}",
                self.tenant
            ))
        })
    }

    fn map_err(&self, e: Error) -> Error {
        match e {
            Error::LockHeld { holder } => match self.local((*holder).clone()) {
                Some(h) => Error::LockHeld {
                    holder: Box::new(h),
                },
                None => Error::LockHeld { holder },
            },
            other => other,
        }
    }

    fn request(&self, req: &LockRequest) -> Result<LockRequest> {
        let mut r = req.clone();
        r.key = self.full_key(&req.key)?;
        r.tenant = Some(self.tenant.clone());
        Ok(r)
    }
}

#[async_trait]
impl<L: LockManager> LockManager for TenantLocks<L> {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        let r = self.request(req)?;
        let info = self
            .inner
            .try_acquire(&r)
            .await
            .map_err(|e| self.map_err(e))?;
        self.local_or_err(info)
    }

    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        let r = self.request(req)?;
        let info = self
            .inner
            .acquire(&r, wait)
            .await
            .map_err(|e| self.map_err(e))?;
        self.local_or_err(info)
    }

    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo> {
        let info = self
            .inner
            .renew(&self.full_key(key)?, lock_id, ttl)
            .await
            .map_err(|e| self.map_err(e))?;
        self.local_or_err(info)
    }

    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.inner.release(&self.full_key(key)?, lock_id).await
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        match self.inner.inspect(&self.full_key(key)?).await? {
            None => Ok(None),
            Some(info) => self.local_or_err(info).map(Some),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let full = format!("{}:{prefix}", self.prefix);
        Ok(self
            .inner
            .list(&full)
            .await?
            .into_iter()
            .filter_map(|info| self.local(info))
            .collect())
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.inner.force_unlock(&self.full_key(key)?, lock_id).await
    }
}
