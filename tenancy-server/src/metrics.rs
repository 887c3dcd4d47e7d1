//! Prometheus metrics in the text exposition format, kept in process.
//!
//! - `tenant_api_requests_total{tenant,route,status}`: every answered request.
//!   `route` is the matched route *template* (`/v1/jobs/{id}`), never the raw
//!   path, and `tenant` is the authenticated tenant or `-`, never a header
//!   value, so label cardinality stays bounded by tenants x routes x statuses.
//! - `tenancy_tenants`, `tenancy_tenants_active`: from the registry, re-counted at most
//!   once per `tenant_count_interval` (a full listing is expensive at 100k tenants).
//! - `tenant_quota_usage{tenant,resource}` and `tenant_quota_limit{tenant,resource}`:
//!   the last usage this replica saw for a tenant (updated by job, worker and
//!   stats requests).
//! - `tenancy_auth_cache_*`: the verification cache's counters.
//! - `tenancy_audit_unrecorded_total`: audit entries that could not be
//!   appended (the change stands; each is also logged as an error).
//!
//! The names follow Prometheus' conventions (`promtool check metrics`
//! reports nothing; the e2e test runs it on a whole scrape): counters end
//! in `_total`, gauges do not, no name ends in `_count`, `_sum` or `_bucket`,
//! every family has `# HELP` and `# TYPE`. The seed documents' names map
//! to them so:
//!
//! | seed document | here | why |
//! |---|---|---|
//! | `tenants_total` (a gauge) | `tenancy_tenants` | `_total` is for counters; prefixed with the exporter's name |
//! | `tenants_active` | `tenancy_tenants_active` | prefixed likewise |
//! | `tenant_quota_usage{tenant,resource}` | `tenant_quota_usage{tenant,resource}`, with `tenant_quota_limit{tenant,resource}` beside it | the same; the limit makes the utilisation a ratio of two gauges |
//! | `tenant_api_requests{tenant,endpoint}` | `tenant_api_requests_total{tenant,route,status}` | a counter ends in `_total`; `route` is the matched template (bounded, unlike a raw endpoint path), `status` the answer |

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tenancy_core::{Resource, Tenant, TenantId, Usage};

use crate::auth::AuthStats;

type RequestCounters = HashMap<String, HashMap<String, HashMap<u16, AtomicU64>>>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: RwLock<RequestCounters>,
    quota: RwLock<HashMap<TenantId, [(u64, u64); Resource::ALL.len()]>>,
    tenant_counts: Mutex<Option<(Instant, u64, u64)>>,
    counting: AtomicBool,
    tenant_count_interval: Duration,
    audit_unrecorded: AtomicU64,
}

impl Metrics {
    /// Metrics that re-count tenants at most every `tenant_count_interval`.
    pub fn new(tenant_count_interval: Duration) -> Self {
        Metrics {
            requests: RwLock::new(HashMap::new()),
            quota: RwLock::new(HashMap::new()),
            tenant_counts: Mutex::new(None),
            counting: AtomicBool::new(false),
            tenant_count_interval,
            audit_unrecorded: AtomicU64::new(0),
        }
    }

    /// Counts an audit entry that could not be appended.
    pub fn count_audit_unrecorded(&self) {
        self.audit_unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn record_request(&self, tenant: Option<&TenantId>, route: Option<&str>, status: u16) {
        let tenant = tenant.map_or("-", TenantId::as_str);
        let route = route.unwrap_or("unmatched");
        {
            let map = self.requests.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = map
                .get(tenant)
                .and_then(|routes| routes.get(route))
                .and_then(|statuses| statuses.get(&status))
            {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .entry(route.to_string())
            .or_default()
            .entry(status)
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The count of requests with these labels (for tests).
    pub fn requests(&self, tenant: &str, route: &str, status: u16) -> u64 {
        self.requests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .and_then(|routes| routes.get(route))
            .and_then(|statuses| statuses.get(&status))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Drops a tenant's request counters and quota gauges (deleted tenants).
    pub fn forget_tenant(&self, id: &TenantId) {
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
        self.quota
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Records a tenant's usage against its limits.
    pub fn record_usage(&self, tenant: &Tenant, usage: &Usage) {
        let limits = tenant.limits();
        let mut row = [(0u64, 0u64); Resource::ALL.len()];
        for (slot, r) in row.iter_mut().zip(Resource::ALL) {
            *slot = (usage.get(r), r.limit(&limits));
        }
        self.quota
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.id.clone(), row);
    }

    /// True when the tenant counts are older than the interval.
    pub fn tenant_counts_stale(&self) -> bool {
        match *self.tenant_counts.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, _, _)) => at.elapsed() >= self.tenant_count_interval,
            None => true,
        }
    }

    /// True once tenant counts exist.
    pub fn has_tenant_counts(&self) -> bool {
        self.tenant_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Claims the one background re-count; false if one is running.
    pub fn begin_tenant_count(&self) -> bool {
        !self.counting.swap(true, Ordering::AcqRel)
    }

    /// Ends the background re-count.
    pub fn end_tenant_count(&self) {
        self.counting.store(false, Ordering::Release);
    }

    /// Stores fresh tenant counts.
    pub fn set_tenant_counts(&self, total: u64, active: u64) {
        *self.tenant_counts.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), total, active));
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, auth: &AuthStats, cached_keys: usize) -> String {
        let mut out = String::with_capacity(4096);
        if let Some((_, total, active)) =
            *self.tenant_counts.lock().unwrap_or_else(|p| p.into_inner())
        {
            gauge(
                &mut out,
                "tenancy_tenants",
                "Tenants in the registry (any status).",
                total,
            );
            gauge(
                &mut out,
                "tenancy_tenants_active",
                "Tenants whose status is active.",
                active,
            );
        }

        out.push_str("# HELP tenant_api_requests_total API requests answered, by tenant, route template and status.\n");
        out.push_str("# TYPE tenant_api_requests_total counter\n");
        let mut rows: Vec<(String, String, u16, u64)> = Vec::new();
        for (t, routes) in self
            .requests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (r, statuses) in routes {
                for (s, c) in statuses {
                    rows.push((t.clone(), r.clone(), *s, c.load(Ordering::Relaxed)));
                }
            }
        }
        rows.sort();
        for (t, r, s, n) in rows {
            let _ = writeln!(
                out,
                "tenant_api_requests_total{{tenant=\"{}\",route=\"{}\",status=\"{s}\"}} {n}",
                escape(&t),
                escape(&r)
            );
        }

        let quota = self.quota.read().unwrap_or_else(|p| p.into_inner());
        let mut tenants: Vec<&TenantId> = quota.keys().collect();
        tenants.sort();
        for (name, help, pick) in [
            (
                "tenant_quota_usage",
                "Usage of a quota-limited resource, as last seen by this replica.",
                0usize,
            ),
            (
                "tenant_quota_limit",
                "The limit of a quota-limited resource.",
                1,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for t in &tenants {
                if let Some(row) = quota.get(*t) {
                    for (r, v) in Resource::ALL.iter().zip(row.iter()) {
                        let value = if pick == 0 { v.0 } else { v.1 };
                        let _ = writeln!(
                            out,
                            "{name}{{tenant=\"{}\",resource=\"{}\"}} {value}",
                            escape(t.as_str()),
                            r.as_str()
                        );
                    }
                }
            }
        }
        drop(quota);

        counter(
            &mut out,
            "tenancy_auth_cache_refreshes_total",
            "Cache entries refreshed by re-reading the tenant record.",
            auth.refreshes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tenancy_auth_registry_checks_total",
            "Well-formed tenant keys checked against the registry on a cache miss (one bcrypt each at most; none when the key's lookup id names no tenant).",
            auth.verifications.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tenancy_auth_negative_hits_total",
            "Requests refused without bcrypt from the caches of failed keys and forbidden tenants.",
            auth.negative_hits.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tenancy_auth_cached_keys",
            "Keys in the verification cache.",
            cached_keys as u64,
        );
        counter(
            &mut out,
            "tenancy_audit_unrecorded_total",
            "Audit entries that could not be appended (the change stands; each is logged as an error).",
            self.audit_unrecorded.load(Ordering::Relaxed),
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_template() {
        let m = Metrics::new(Duration::from_secs(1));
        let acme = TenantId::new("acme").unwrap();
        m.record_request(Some(&acme), Some("/v1/jobs/{id}"), 200);
        m.record_request(Some(&acme), Some("/v1/jobs/{id}"), 200);
        m.record_request(None, None, 404);
        assert_eq!(m.requests("acme", "/v1/jobs/{id}", 200), 2);
        assert_eq!(m.requests("-", "unmatched", 404), 1);
        let text = m.render(&AuthStats::default(), 0);
        assert!(text.contains(
            "tenant_api_requests_total{tenant=\"acme\",route=\"/v1/jobs/{id}\",status=\"200\"} 2"
        ));
    }
}
