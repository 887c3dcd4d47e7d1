//! The tenant domain: `Tenant`, `TenantStatus`, `Plan`, `Limits`, `Usage`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{StateKey, TenantId};

/// The state layout version new tenants get (`tenants/<id>/v1/`).
pub const DEFAULT_STATE_VERSION: &str = "v1";

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// May log in and work.
    Active,
    /// Switched off by an admin; may be activated again.
    Suspended,
    /// Its `expires_at` has passed; an admin may activate it again.
    Expired,
    /// Soft-deleted; state archived. Terminal.
    Deleted,
}

impl TenantStatus {
    /// All statuses.
    pub const ALL: [TenantStatus; 4] = [
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Expired,
        TenantStatus::Deleted,
    ];

    /// The lifecycle rules in one place: may a tenant go from `self` to `to`?
    ///
    /// | from \ to  | active | suspended | expired | deleted |
    /// |------------|--------|-----------|---------|---------|
    /// | active     | -      | yes       | yes     | yes     |
    /// | suspended  | yes    | -         | yes     | yes     |
    /// | expired    | yes    | yes       | -       | yes     |
    /// | deleted    | no     | no        | no      | -       |
    ///
    /// Staying in the same status is not a transition and is refused.
    pub fn can_transition_to(self, to: TenantStatus) -> bool {
        use TenantStatus::*;
        match (self, to) {
            (a, b) if a == b => false,
            (Deleted, _) => false,
            (_, _) => true,
        }
    }

    /// The status at `now` of a tenant stored with this status and
    /// `expires_at`: an active or suspended tenant past `expires_at` is
    /// `expired`.
    pub fn at(self, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> TenantStatus {
        match (self, expires_at) {
            (TenantStatus::Active | TenantStatus::Suspended, Some(exp)) if exp <= now => {
                TenantStatus::Expired
            }
            (s, _) => s,
        }
    }

    /// Checks a transition, with an error that names both ends.
    pub fn transition(self, to: TenantStatus) -> Result<TenantStatus> {
        if self.can_transition_to(to) {
            Ok(to)
        } else if self == to {
            Err(Error::precondition(format!("tenant is already {self}")))
        } else {
            Err(Error::precondition(format!(
                "a {self} tenant cannot become {to}"
            )))
        }
    }

    /// True when `e` is [`TenantStatus::transition`]'s refusal to go to
    /// this status from this same status: re-applying a state that already
    /// holds (callers may treat it as "unchanged").
    pub fn is_already(self, e: &Error) -> bool {
        matches!(e, Error::Precondition { what } if what.ends_with(&format!(" is already {self}")))
    }

    /// The status as a lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Expired => "expired",
            TenantStatus::Deleted => "deleted",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown status \"{s}\"; expected active, suspended, expired or deleted"
                ))
            })
    }
}

/// A service plan; each has default [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// The default plan.
    #[default]
    Free,
    /// Small teams.
    Basic,
    /// Production teams.
    Pro,
    /// Everything larger.
    Enterprise,
}

impl Plan {
    /// All plans, cheapest first.
    pub const ALL: [Plan; 4] = [Plan::Free, Plan::Basic, Plan::Pro, Plan::Enterprise];

    /// The plan's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Basic => "basic",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    /// The plan's default quotas.
    pub fn limits(self) -> Limits {
        // (stacks, services, monthly cost, jobs, workers, jobs/hour, cpu, gpu, rps)
        const MIB: u64 = 1024 * 1024;
        // (bytes, objects) of the server's state API, locks held at once
        let (bytes, objects, locks) = match self {
            Plan::Free => (10 * MIB, 100, 10),
            Plan::Basic => (100 * MIB, 1_000, 50),
            Plan::Pro => (1024 * MIB, 10_000, 250),
            Plan::Enterprise => (100 * 1024 * MIB, 1_000_000, 1_000),
        };
        let (s, sv, cost, j, w, jh, cpu, gpu, rps) = match self {
            Plan::Free => (5, 10, 100, 5, 1, 10, 4, 0, 50),
            Plan::Basic => (25, 50, 1_000, 20, 5, 100, 16, 1, 200),
            Plan::Pro => (100, 250, 10_000, 100, 20, 1_000, 64, 4, 1_000),
            Plan::Enterprise => (1_000, 2_500, 100_000, 1_000, 100, 10_000, 256, 16, 5_000),
        };
        Limits {
            max_stacks: s,
            max_services: sv,
            monthly_cost_limit: cost,
            max_concurrent_jobs: j,
            max_workers: w,
            max_jobs_per_hour: jh,
            max_cpu_cores: cpu,
            max_gpus: gpu,
            requests_per_second: rps,
            burst: rps * 2,
            max_state_bytes: bytes,
            max_state_objects: objects,
            max_locks: locks,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown plan \"{s}\"; expected free, basic, pro or enterprise"
                ))
            })
    }
}

/// Effective quotas of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Stacks the tenant may keep state for.
    pub max_stacks: u64,
    /// Services across all stacks.
    pub max_services: u64,
    /// Monthly cost limit, in whole currency units.
    pub monthly_cost_limit: u64,
    /// Jobs queued or running at once.
    pub max_concurrent_jobs: u64,
    /// Registered workers.
    pub max_workers: u64,
    /// Jobs created per rolling clock hour.
    pub max_jobs_per_hour: u64,
    /// CPU cores requested by active jobs and workers.
    pub max_cpu_cores: u64,
    /// GPUs requested by active jobs and workers.
    pub max_gpus: u64,
    /// Sustained API requests per second.
    pub requests_per_second: u64,
    /// API request burst size.
    pub burst: u64,
    /// Bytes stored through the server's state API (`/v1/state`).
    #[serde(default)]
    pub max_state_bytes: u64,
    /// Objects stored through the server's state API (`/v1/state`).
    #[serde(default)]
    pub max_state_objects: u64,
    /// Locks held at once through the server's lock APIs (`/v1/locks`, and
    /// every other route that takes a tenant's lock through the server).
    #[serde(default)]
    pub max_locks: u64,
}

/// The largest value any limit may be set to; larger is refused as absurd
/// (except [`Limits::max_state_bytes`], see [`MAX_STATE_BYTES_LIMIT`]).
pub const MAX_LIMIT_VALUE: u64 = 1_000_000_000;

/// The largest value [`Limits::max_state_bytes`] may be set to: 1 PiB.
pub const MAX_STATE_BYTES_LIMIT: u64 = 1 << 50;

/// Per-tenant overrides on top of the plan's limits; `None` keeps the plan's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Overrides [`Limits::max_stacks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stacks: Option<u64>,
    /// Overrides [`Limits::max_services`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_services: Option<u64>,
    /// Overrides [`Limits::monthly_cost_limit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost_limit: Option<u64>,
    /// Overrides [`Limits::max_concurrent_jobs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<u64>,
    /// Overrides [`Limits::max_workers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u64>,
    /// Overrides [`Limits::max_jobs_per_hour`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs_per_hour: Option<u64>,
    /// Overrides [`Limits::max_cpu_cores`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_cores: Option<u64>,
    /// Overrides [`Limits::max_gpus`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpus: Option<u64>,
    /// Overrides [`Limits::requests_per_second`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
    /// Overrides [`Limits::burst`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Overrides [`Limits::max_state_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_state_bytes: Option<u64>,
    /// Overrides [`Limits::max_state_objects`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_state_objects: Option<u64>,
    /// Overrides [`Limits::max_locks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_locks: Option<u64>,
}

impl LimitOverrides {
    fn fields(&self) -> [(&'static str, Option<u64>); 12] {
        [
            ("max_stacks", self.max_stacks),
            ("max_services", self.max_services),
            ("monthly_cost_limit", self.monthly_cost_limit),
            ("max_concurrent_jobs", self.max_concurrent_jobs),
            ("max_workers", self.max_workers),
            ("max_jobs_per_hour", self.max_jobs_per_hour),
            ("max_cpu_cores", self.max_cpu_cores),
            ("max_gpus", self.max_gpus),
            ("requests_per_second", self.requests_per_second),
            ("burst", self.burst),
            ("max_state_objects", self.max_state_objects),
            ("max_locks", self.max_locks),
        ]
    }

    /// Refuses absurd values (above [`MAX_LIMIT_VALUE`]) and a zero request rate.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in self.fields() {
            if let Some(v) = v {
                if v > MAX_LIMIT_VALUE {
                    return Err(Error::invalid(format!(
                        "limit {name} = {v} is absurd; the largest allowed is {MAX_LIMIT_VALUE}"
                    )));
                }
            }
        }
        if let Some(v) = self.max_state_bytes {
            if v > MAX_STATE_BYTES_LIMIT {
                return Err(Error::invalid(format!(
                    "limit max_state_bytes = {v} is absurd; the largest allowed is {MAX_STATE_BYTES_LIMIT}"
                )));
            }
        }
        if self.requests_per_second == Some(0) {
            return Err(Error::invalid(
                "limit requests_per_second must be at least 1",
            ));
        }
        Ok(())
    }

    /// Overlays `other` on `self`: values set in `other` win.
    pub fn merged(&self, other: &LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            max_stacks: other.max_stacks.or(self.max_stacks),
            max_services: other.max_services.or(self.max_services),
            monthly_cost_limit: other.monthly_cost_limit.or(self.monthly_cost_limit),
            max_concurrent_jobs: other.max_concurrent_jobs.or(self.max_concurrent_jobs),
            max_workers: other.max_workers.or(self.max_workers),
            max_jobs_per_hour: other.max_jobs_per_hour.or(self.max_jobs_per_hour),
            max_cpu_cores: other.max_cpu_cores.or(self.max_cpu_cores),
            max_gpus: other.max_gpus.or(self.max_gpus),
            requests_per_second: other.requests_per_second.or(self.requests_per_second),
            burst: other.burst.or(self.burst),
            max_state_bytes: other.max_state_bytes.or(self.max_state_bytes),
            max_state_objects: other.max_state_objects.or(self.max_state_objects),
            max_locks: other.max_locks.or(self.max_locks),
        }
    }

    /// The effective limits: the plan's defaults with these overrides applied.
    pub fn apply(&self, plan: Plan) -> Limits {
        let d = plan.limits();
        Limits {
            max_stacks: self.max_stacks.unwrap_or(d.max_stacks),
            max_services: self.max_services.unwrap_or(d.max_services),
            monthly_cost_limit: self.monthly_cost_limit.unwrap_or(d.monthly_cost_limit),
            max_concurrent_jobs: self.max_concurrent_jobs.unwrap_or(d.max_concurrent_jobs),
            max_workers: self.max_workers.unwrap_or(d.max_workers),
            max_jobs_per_hour: self.max_jobs_per_hour.unwrap_or(d.max_jobs_per_hour),
            max_cpu_cores: self.max_cpu_cores.unwrap_or(d.max_cpu_cores),
            max_gpus: self.max_gpus.unwrap_or(d.max_gpus),
            requests_per_second: self.requests_per_second.unwrap_or(d.requests_per_second),
            burst: self.burst.unwrap_or(d.burst),
            max_state_bytes: self.max_state_bytes.unwrap_or(d.max_state_bytes),
            max_state_objects: self.max_state_objects.unwrap_or(d.max_state_objects),
            max_locks: self.max_locks.unwrap_or(d.max_locks),
        }
    }
}

/// A quota-limited resource that can be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Jobs queued or running ([`Limits::max_concurrent_jobs`]).
    ConcurrentJobs,
    /// Jobs created in the current hour ([`Limits::max_jobs_per_hour`]); released reservations are not given back.
    JobsPerHour,
    /// Registered workers ([`Limits::max_workers`]).
    Workers,
    /// CPU cores ([`Limits::max_cpu_cores`]).
    CpuCores,
    /// GPUs ([`Limits::max_gpus`]).
    Gpus,
    /// Stacks ([`Limits::max_stacks`]).
    Stacks,
    /// Services ([`Limits::max_services`]).
    Services,
    /// Bytes stored through the server's state API
    /// ([`Limits::max_state_bytes`]); a committed reservation is not listed,
    /// its amount stays in the counter until given back.
    StateBytes,
    /// Objects stored through the server's state API
    /// ([`Limits::max_state_objects`]); counted like [`Resource::StateBytes`].
    StateObjects,
    /// Locks held at once through the server ([`Limits::max_locks`]). Not a
    /// registry reservation: the lock layer (`tenancy_lock::LimitedLocks`)
    /// counts them in its own per-tenant record, where an expired lease
    /// stops counting; the registry refuses to reserve it.
    LocksHeld,
}

impl Resource {
    /// All resources.
    pub const ALL: [Resource; 10] = [
        Resource::ConcurrentJobs,
        Resource::JobsPerHour,
        Resource::Workers,
        Resource::CpuCores,
        Resource::Gpus,
        Resource::Stacks,
        Resource::Services,
        Resource::StateBytes,
        Resource::StateObjects,
        Resource::LocksHeld,
    ];

    /// The resource's name, as used in errors and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::ConcurrentJobs => "concurrent_jobs",
            Resource::JobsPerHour => "jobs_per_hour",
            Resource::Workers => "workers",
            Resource::CpuCores => "cpu_cores",
            Resource::Gpus => "gpus",
            Resource::Stacks => "stacks",
            Resource::Services => "services",
            Resource::StateBytes => "state_bytes",
            Resource::StateObjects => "state_objects",
            Resource::LocksHeld => "locks_held",
        }
    }

    /// The resources the server's jobs and workers reserve (their records
    /// name these reservations). Only these may be judged by the job
    /// reconciler or `doctor`: stacks, services and state belong to owners
    /// that keep no per-reservation record.
    pub const JOBS_AND_WORKERS: [Resource; 5] = [
        Resource::ConcurrentJobs,
        Resource::JobsPerHour,
        Resource::CpuCores,
        Resource::Gpus,
        Resource::Workers,
    ];

    /// Whether a committed reservation of this resource is kept in the
    /// usage record's list until released. Not for [`Resource::JobsPerHour`]
    /// (its count stays for the hour) nor for the state API's
    /// [`Resource::StateBytes`] and [`Resource::StateObjects`] (their counts
    /// stay until given back, without one entry per object).
    pub fn listed_when_committed(self) -> bool {
        !matches!(
            self,
            Resource::JobsPerHour | Resource::StateBytes | Resource::StateObjects
        )
    }

    /// Whether the registry reserves this resource. Every resource but
    /// [`Resource::LocksHeld`], which the lock layer counts in its own
    /// record (a lease that runs out must stop counting without anyone
    /// releasing it, which a registry reservation cannot do).
    pub fn reserved_in_registry(self) -> bool {
        self != Resource::LocksHeld
    }

    /// The limit that applies to this resource.
    pub fn limit(self, limits: &Limits) -> u64 {
        match self {
            Resource::ConcurrentJobs => limits.max_concurrent_jobs,
            Resource::JobsPerHour => limits.max_jobs_per_hour,
            Resource::Workers => limits.max_workers,
            Resource::CpuCores => limits.max_cpu_cores,
            Resource::Gpus => limits.max_gpus,
            Resource::Stacks => limits.max_stacks,
            Resource::Services => limits.max_services,
            Resource::StateBytes => limits.max_state_bytes,
            Resource::StateObjects => limits.max_state_objects,
            Resource::LocksHeld => limits.max_locks,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown resource \"{s}\"")))
    }
}

/// What may be shown of a tenant's credential: never the secret, its hash
/// or its lookup id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// The secret's prefix (the part before `_`).
    pub prefix: String,
    /// Bumped by every rotation; sessions of an older generation stop working.
    pub generation: u64,
    /// How many times the secret was rotated.
    pub rotations: u64,
    /// When the secret was last rotated.
    pub last_rotated: Option<DateTime<Utc>>,
}

/// Where a tenant's state lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    /// `tenants/<id>`.
    pub prefix: String,
    /// The state layout version, e.g. `v1`.
    pub version: String,
}

/// A tenant: what the registry returns. It is not the stored record (that
/// one, with the credential's hash and lookup id, is private to the store);
/// `storage` and `lock_prefix` are derived from the id by [`crate::layout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant id.
    pub id: TenantId,
    /// Human-readable name.
    pub display_name: String,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Lifecycle status as stored. Use [`Tenant::effective_status`] to account for expiry.
    pub status: TenantStatus,
    /// The plan.
    pub plan: Plan,
    /// Per-tenant overrides of the plan's limits.
    #[serde(default)]
    pub limit_overrides: LimitOverrides,
    /// The credential, as far as it may be shown.
    pub credential: CredentialInfo,
    /// Where the tenant's state lives.
    pub storage: StorageInfo,
    /// The prefix of the tenant's lock keys, `tenant:<id>`.
    pub lock_prefix: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Why the tenant was suspended, if it is.
    #[serde(default)]
    pub suspended_reason: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
    /// When the tenant expires, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the tenant was soft-deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Bumped by every write; used for optimistic updates.
    pub revision: u64,
}

impl Tenant {
    /// The effective limits (plan defaults plus overrides).
    pub fn limits(&self) -> Limits {
        self.limit_overrides.apply(self.plan)
    }

    /// The status at `now`: an active or suspended tenant past `expires_at` is `expired`.
    pub fn effective_status(&self, now: DateTime<Utc>) -> TenantStatus {
        self.status.at(self.expires_at, now)
    }

    /// `Ok` when the tenant may work at `now`; otherwise `Forbidden` naming the status.
    pub fn ensure_active(&self, now: DateTime<Utc>) -> Result<()> {
        match self.effective_status(now) {
            TenantStatus::Active => Ok(()),
            s => Err(Error::forbidden(format!("tenant {} is {s}", self.id))),
        }
    }

    /// The root of the tenant's versioned state: `tenants/<id>/<version>`.
    pub fn state_root(&self) -> Result<StateKey> {
        crate::layout::state_root(&self.id, &self.storage.version)
    }
}

/// A tenant's usage counters, as kept in its usage record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Stacks with state.
    pub stacks: u64,
    /// Services.
    pub services: u64,
    /// Jobs queued or running.
    pub jobs_active: u64,
    /// Jobs completed, all time.
    pub jobs_completed: u64,
    /// Jobs failed, all time.
    pub jobs_failed: u64,
    /// Jobs created in the current hour window.
    pub jobs_this_hour: u64,
    /// Start of the current hour window.
    pub hour_window_start: Option<DateTime<Utc>>,
    /// Registered workers.
    pub workers: u64,
    /// CPU cores in use.
    pub cpu_cores: u64,
    /// GPUs in use.
    pub gpus: u64,
    /// Cost this month, in whole currency units.
    pub cost_this_month: u64,
    /// The month `cost_this_month` belongs to, `YYYY-MM`.
    pub cost_month: Option<String>,
    /// Bytes stored through the server's state API (reserved writes included).
    #[serde(default)]
    pub state_bytes: u64,
    /// Objects stored through the server's state API (reserved writes included).
    #[serde(default)]
    pub state_objects: u64,
    /// Locks held at once through the server (acquires in flight included).
    /// Not kept in the registry's usage record (always 0 there): the server
    /// fills it in from the lock layer's count (`tenancy_lock::LimitedLocks`).
    #[serde(default)]
    pub locks_held: u64,
}

impl Usage {
    /// The current usage of a resource.
    pub fn get(&self, r: Resource) -> u64 {
        match r {
            Resource::ConcurrentJobs => self.jobs_active,
            Resource::JobsPerHour => self.jobs_this_hour,
            Resource::Workers => self.workers,
            Resource::CpuCores => self.cpu_cores,
            Resource::Gpus => self.gpus,
            Resource::Stacks => self.stacks,
            Resource::Services => self.services,
            Resource::StateBytes => self.state_bytes,
            Resource::StateObjects => self.state_objects,
            Resource::LocksHeld => self.locks_held,
        }
    }

    /// Mutable access to the counter of a resource.
    pub fn get_mut(&mut self, r: Resource) -> &mut u64 {
        match r {
            Resource::ConcurrentJobs => &mut self.jobs_active,
            Resource::JobsPerHour => &mut self.jobs_this_hour,
            Resource::Workers => &mut self.workers,
            Resource::CpuCores => &mut self.cpu_cores,
            Resource::Gpus => &mut self.gpus,
            Resource::Stacks => &mut self.stacks,
            Resource::Services => &mut self.services,
            Resource::StateBytes => &mut self.state_bytes,
            Resource::StateObjects => &mut self.state_objects,
            Resource::LocksHeld => &mut self.locks_held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use TenantStatus::*;
        let allowed = [
            (Active, Suspended),
            (Active, Expired),
            (Active, Deleted),
            (Suspended, Active),
            (Suspended, Expired),
            (Suspended, Deleted),
            (Expired, Active),
            (Expired, Suspended),
            (Expired, Deleted),
        ];
        for from in TenantStatus::ALL {
            for to in TenantStatus::ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), want, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn plan_defaults_match_the_spec() {
        let f = Plan::Free.limits();
        assert_eq!(
            (
                f.max_concurrent_jobs,
                f.max_workers,
                f.max_jobs_per_hour,
                f.max_cpu_cores,
                f.max_gpus
            ),
            (5, 1, 10, 4, 0)
        );
        let b = Plan::Basic.limits();
        assert_eq!(
            (
                b.max_concurrent_jobs,
                b.max_workers,
                b.max_jobs_per_hour,
                b.max_cpu_cores,
                b.max_gpus
            ),
            (20, 5, 100, 16, 1)
        );
        let p = Plan::Pro.limits();
        assert_eq!(
            (
                p.max_concurrent_jobs,
                p.max_workers,
                p.max_jobs_per_hour,
                p.max_cpu_cores,
                p.max_gpus
            ),
            (100, 20, 1000, 64, 4)
        );
        let e = Plan::Enterprise.limits();
        assert_eq!(
            (
                e.max_concurrent_jobs,
                e.max_workers,
                e.max_jobs_per_hour,
                e.max_cpu_cores,
                e.max_gpus
            ),
            (1000, 100, 10000, 256, 16)
        );
        let rps: Vec<_> = Plan::ALL
            .iter()
            .map(|p| p.limits().requests_per_second)
            .collect();
        assert_eq!(rps, [50, 200, 1000, 5000]);
        assert!(Plan::ALL
            .iter()
            .all(|p| p.limits().burst == 2 * p.limits().requests_per_second));
        let locks: Vec<_> = Plan::ALL.iter().map(|p| p.limits().max_locks).collect();
        assert_eq!(locks, [10, 50, 250, 1000]);
    }

    #[test]
    fn overrides_apply_and_validate() {
        let o = LimitOverrides {
            max_workers: Some(7),
            ..Default::default()
        };
        assert_eq!(o.apply(Plan::Free).max_workers, 7);
        assert_eq!(o.apply(Plan::Free).max_gpus, 0);
        let absurd = LimitOverrides {
            max_stacks: Some(u64::MAX),
            ..Default::default()
        };
        assert!(matches!(absurd.validate(), Err(Error::InvalidInput { .. })));
        let locks = LimitOverrides {
            max_locks: Some(3),
            ..Default::default()
        };
        assert_eq!(locks.apply(Plan::Pro).max_locks, 3);
        assert_eq!(Resource::LocksHeld.limit(&locks.apply(Plan::Pro)), 3);
        assert_eq!(o.merged(&locks).max_locks, Some(3));
        assert!(LimitOverrides {
            max_locks: Some(MAX_LIMIT_VALUE + 1),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(!Resource::LocksHeld.reserved_in_registry());
        assert!("gold".parse::<Plan>().is_err());
        assert_eq!("pro".parse::<Plan>().unwrap(), Plan::Pro);
    }
}
