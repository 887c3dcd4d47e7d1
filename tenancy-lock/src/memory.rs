//! `MemoryLockManager`: leased locks inside one process, behind one mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::lock::validate_ttl;
use tenancy_core::{
    Clock, Error, LockId, LockInfo, LockKey, LockManager, LockRequest, Result, SystemClock,
};

use crate::backoff::acquire_with_backoff;
use crate::lease::{classify, expired, foreign, new_lease, not_held, Holder};
use tenancy_core::Backoff;

#[derive(Debug, Default)]
struct Slot {
    /// The last fencing token handed out for the key; kept after release.
    token: u64,
    holder: Option<LockInfo>,
}

/// Leased locks held in process memory: fast, and gone with the process.
///
/// Fencing tokens are kept per key for the life of the manager (a released
/// key keeps a small slot), so they strictly increase across release,
/// expiry and takeover.
#[derive(Debug)]
pub struct MemoryLockManager {
    slots: Mutex<HashMap<LockKey, Slot>>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
}

impl Default for MemoryLockManager {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLockManager {
    /// An empty manager on the system clock with the default backoff.
    pub fn new() -> Self {
        MemoryLockManager {
            slots: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
            backoff: Backoff::default(),
        }
    }

    /// Reads time (expiry, backoff sleeps) from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `backoff` between the retries of `acquire`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<LockKey, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees `key` if `lock_id` holds it (expired or not).
    fn free(&self, key: &LockKey, lock_id: LockId, action: &str) -> Result<()> {
        let mut slots = self.slots();
        let slot = slots
            .get_mut(key)
            .ok_or_else(|| not_held(key, lock_id, action))?;
        match classify(slot.holder.as_ref(), lock_id) {
            Holder::Free => Err(not_held(key, lock_id, action)),
            Holder::Other(h) => Err(foreign(key, lock_id, h, action)),
            Holder::Mine(_) => {
                slot.holder = None;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl LockManager for MemoryLockManager {
    async fn try_acquire(&self, req: &LockRequest) -> Result<LockInfo> {
        req.validate()?;
        let now = self.clock.now();
        let mut slots = self.slots();
        let slot = slots.entry(req.key.clone()).or_default();
        if let Some(h) = &slot.holder {
            if !h.is_expired(now) {
                return Err(Error::LockHeld {
                    holder: Box::new(h.clone()),
                });
            }
        }
        let token = slot.token.checked_add(1).ok_or_else(|| {
            Error::invalid(format!("fencing token of lock {} overflowed", req.key))
        })?;
        let lease = new_lease(req, now, token);
        slot.token = token;
        slot.holder = Some(lease.clone());
        Ok(lease)
    }

    async fn acquire(&self, req: &LockRequest, wait: Duration) -> Result<LockInfo> {
        acquire_with_backoff(self, self.clock.as_ref(), &self.backoff, req, wait).await
    }

    async fn renew(&self, key: &LockKey, lock_id: LockId, ttl: Duration) -> Result<LockInfo> {
        validate_ttl(ttl)?;
        let now = self.clock.now();
        let mut slots = self.slots();
        let slot = slots
            .get_mut(key)
            .ok_or_else(|| not_held(key, lock_id, "renew"))?;
        match classify(slot.holder.as_ref(), lock_id) {
            Holder::Free => Err(not_held(key, lock_id, "renew")),
            Holder::Other(h) => Err(foreign(key, lock_id, h, "renew")),
            Holder::Mine(h) if h.is_expired(now) => Err(expired(key, h)),
            Holder::Mine(_) => {
                let h = slot
                    .holder
                    .as_mut()
                    .ok_or_else(|| not_held(key, lock_id, "renew"))?;
                h.expires = crate::lease::expiry(now, ttl);
                h.last_heartbeat = now;
                Ok(h.clone())
            }
        }
    }

    async fn release(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.free(key, lock_id, "release")
    }

    async fn inspect(&self, key: &LockKey) -> Result<Option<LockInfo>> {
        let now = self.clock.now();
        Ok(self
            .slots()
            .get(key)
            .and_then(|s| s.holder.as_ref())
            .filter(|h| !h.is_expired(now))
            .cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let now = self.clock.now();
        let mut held: Vec<LockInfo> = self
            .slots()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .filter_map(|(_, s)| s.holder.as_ref())
            .filter(|h| !h.is_expired(now))
            .cloned()
            .collect();
        held.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(held)
    }

    async fn force_unlock(&self, key: &LockKey, lock_id: LockId) -> Result<()> {
        self.free(key, lock_id, "force-unlock")
    }
}
