//! Per-tenant request rate limits (governor GCRA buckets) and the
//! `x-ratelimit-*` headers.
//!
//! Each tenant gets one bucket per server process, sized from its plan's
//! `requests_per_second` and `burst` (or its overrides). The buckets are
//! per replica: N replicas behind a load balancer admit up to N times the
//! rate in total.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::Clock as _;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultDirectRateLimiter, Quota};
use tenancy_core::{Limits, TenantId};

/// `x-ratelimit-limit`: the bucket size (burst).
pub(crate) const HEADER_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `x-ratelimit-remaining`: requests left in the bucket now.
pub(crate) const HEADER_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `x-ratelimit-reset`: seconds until the bucket is full again.
pub(crate) const HEADER_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Header values of small numbers, made once: writing the rate-limit headers
/// on the hot path then copies no bytes and allocates nothing.
const SMALL_NUMBERS: usize = 4096;

fn number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut text = String::new();
        let mut bounds = Vec::with_capacity(SMALL_NUMBERS);
        for i in 0..SMALL_NUMBERS {
            let start = text.len();
            text.push_str(&i.to_string());
            bounds.push((start, text.len()));
        }
        let text: &'static str = Box::leak(text.into_boxed_str());
        bounds
            .into_iter()
            .map(|(a, b)| HeaderValue::from_static(&text[a..b]))
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// One tenant's token bucket.
pub(crate) struct TenantLimiter {
    rps: u64,
    burst: u64,
    limiter: DefaultDirectRateLimiter<StateInformationMiddleware>,
}

impl std::fmt::Debug for TenantLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLimiter")
            .field("rps", &self.rps)
            .field("burst", &self.burst)
            .finish()
    }
}

fn nonzero(v: u64) -> NonZeroU32 {
    let v = u32::try_from(v).unwrap_or(u32::MAX).max(1);
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

/// The outcome of a rate-limit check, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// The bucket size.
    pub limit: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// When refused: how long to wait.
    pub retry_after: Option<Duration>,
}

impl RateInfo {
    /// Writes the `x-ratelimit-*` headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.reserve(3);
        headers.insert(HEADER_LIMIT, number(self.limit));
        headers.insert(HEADER_REMAINING, number(self.remaining));
        headers.insert(HEADER_RESET, number(self.reset_secs));
    }
}

impl TenantLimiter {
    fn new(rps: u64, burst: u64) -> Self {
        let rps = rps.max(1);
        let burst = burst.max(1);
        let quota = Quota::per_second(nonzero(rps)).allow_burst(nonzero(burst));
        TenantLimiter {
            rps,
            burst,
            limiter: DefaultDirectRateLimiter::direct(quota)
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn matches(&self, limits: &Limits) -> bool {
        self.rps == limits.requests_per_second.max(1) && self.burst == limits.burst.max(1)
    }

    /// Takes one request from the bucket.
    pub(crate) fn check(&self) -> RateInfo {
        let limit = u64::from(nonzero(self.burst).get());
        match self.limiter.check() {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                let missing = limit.saturating_sub(remaining);
                RateInfo {
                    limit,
                    remaining,
                    reset_secs: missing.div_ceil(self.rps),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                RateInfo {
                    limit,
                    remaining: 0,
                    reset_secs: limit.div_ceil(self.rps).max(wait.as_secs()),
                    retry_after: Some(wait.max(Duration::from_millis(1))),
                }
            }
        }
    }
}

/// The buckets of all tenants seen by this process.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    map: Mutex<HashMap<TenantId, Arc<TenantLimiter>>>,
}

/// Buckets kept before unused ones are dropped.
const MAX_IDLE_BUCKETS: usize = 100_000;

impl RateLimits {
    /// A new, empty set of buckets.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The bucket of `tenant` sized for `limits`; a bucket of other limits is replaced.
    pub(crate) fn bucket(&self, tenant: &TenantId, limits: &Limits) -> Arc<TenantLimiter> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(tenant) {
            if b.matches(limits) {
                return b.clone();
            }
        }
        if map.len() >= MAX_IDLE_BUCKETS {
            // Drop buckets nobody holds (no cached credential refers to them).
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let b = Arc::new(TenantLimiter::new(limits.requests_per_second, limits.burst));
        map.insert(tenant.clone(), b.clone());
        b
    }

    /// Forgets a tenant's bucket.
    pub(crate) fn forget(&self, tenant: &TenantId) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_core::Plan;

    #[test]
    fn a_bucket_admits_its_burst_then_refuses() {
        let l = TenantLimiter::new(1, 3);
        let a = l.check();
        assert_eq!((a.limit, a.remaining, a.retry_after), (3, 2, None));
        l.check();
        let c = l.check();
        assert_eq!(c.remaining, 0);
        assert!(c.retry_after.is_none());
        let d = l.check();
        assert!(d.retry_after.is_some());
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn header_numbers_are_exact() {
        for n in [0u64, 1, 9, 10, 4095, 4096, 123_456] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn buckets_follow_limit_changes() {
        let rl = RateLimits::new();
        let id = TenantId::new("acme").unwrap();
        let mut limits = Plan::Free.limits();
        let a = rl.bucket(&id, &limits);
        assert!(Arc::ptr_eq(&a, &rl.bucket(&id, &limits)));
        limits.requests_per_second = 7;
        let b = rl.bucket(&id, &limits);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.rps, 7);
    }
}
