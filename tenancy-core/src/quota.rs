//! Quota accounting: the per-tenant usage record and the rules that change it.
//!
//! Everything here is pure: [`UsageRecord`] methods take the current time and
//! the tenant's [`Limits`] and change the record in memory. The store-backed
//! registry ([`crate::store_registry`]) reads the record, applies one of these
//! methods and writes it back with a compare-and-swap, retrying on conflict,
//! so a burst of concurrent reservations never ends above a limit.
//!
//! # Rules
//!
//! - A reservation adds its amount to the resource's counter at once. It is
//!   *pending* until committed; a pending reservation that is neither
//!   committed nor released within the reservation TTL (default
//!   [`DEFAULT_RESERVATION_TTL`]) expires and its capacity is given back, so
//!   a client that crashes between `reserve` and `commit` does not leak quota.
//! - `commit` turns a pending reservation into plain usage (only the counter
//!   remembers it). Committing an expired, released or unknown reservation
//!   is refused with [`Error::Precondition`].
//! - `release` gives the amount back: a pending reservation is removed, a
//!   committed one is subtracted from the counter. Release each committed
//!   reservation once; the record keeps no list of committed reservations
//!   (it would grow with every job).
//! - [`Resource::JobsPerHour`] counts jobs created in the current clock hour
//!   (`HH:00:00` to the next `HH:00:00`, UTC). Its capacity is never given
//!   back: releasing or expiring such a reservation leaves the count. Over
//!   the limit, [`Error::QuotaExceeded`] carries `retry_after` = the time to
//!   the next hour.
//! - Cost is counted per calendar month (UTC) and reset when a new month starts.

use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::chrono_duration;
use crate::error::{Error, Result};
use crate::keys::TenantId;
use crate::registry::{Reservation, UsageEvent};
use crate::tenant::{Limits, Resource, Usage, MAX_LIMIT_VALUE};

/// How long an uncommitted reservation holds its capacity: 15 minutes.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

/// The format version written into usage records.
pub const USAGE_FORMAT_VERSION: u32 = 1;

/// A reservation that was made but not yet committed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReservation {
    /// The reservation id.
    pub id: Uuid,
    /// The resource.
    pub resource: Resource,
    /// How much.
    pub amount: u64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it expires unless committed or released.
    pub expires_at: DateTime<Utc>,
}

/// A tenant's usage record, as stored by the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The record's format version.
    pub format_version: u32,
    /// The tenant.
    pub tenant: TenantId,
    /// The counters.
    pub usage: Usage,
    /// Reservations not yet committed or released.
    #[serde(default)]
    pub pending: Vec<PendingReservation>,
    /// When the record was last written.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The start of the clock hour that contains `now`.
pub fn hour_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(chrono::Duration::hours(1))
        .unwrap_or(now)
}

/// The month `now` is in, as `YYYY-MM`.
pub fn month_of(now: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", now.year(), now.month())
}

fn check_amount(amount: u64) -> Result<()> {
    if amount == 0 {
        return Err(Error::invalid(
            "a reservation needs an amount of at least 1",
        ));
    }
    if amount > MAX_LIMIT_VALUE {
        return Err(Error::invalid(format!(
            "a reservation of {amount} is absurd; the largest allowed is {MAX_LIMIT_VALUE}"
        )));
    }
    Ok(())
}

impl UsageRecord {
    /// An empty record for `tenant`.
    pub fn new(tenant: TenantId) -> Self {
        UsageRecord {
            format_version: USAGE_FORMAT_VERSION,
            tenant,
            usage: Usage::default(),
            pending: Vec::new(),
            updated_at: None,
        }
    }

    /// Brings the record to `now`: starts a new hour window and a new cost
    /// month where due, and drops expired pending reservations (giving their
    /// capacity back, except for [`Resource::JobsPerHour`]). Returns true if
    /// anything changed.
    pub fn roll(&mut self, now: DateTime<Utc>) -> bool {
        let mut changed = false;
        let hour = hour_start(now);
        if self.usage.hour_window_start != Some(hour) {
            self.usage.hour_window_start = Some(hour);
            self.usage.jobs_this_hour = 0;
            changed = true;
        }
        let month = month_of(now);
        if self.usage.cost_month.as_deref() != Some(month.as_str()) {
            self.usage.cost_month = Some(month);
            self.usage.cost_this_month = 0;
            changed = true;
        }
        let before = self.pending.len();
        let (expired, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.expires_at <= now);
        self.pending = live;
        for p in expired {
            self.give_back(p.resource, p.amount);
        }
        changed || self.pending.len() != before
    }

    fn give_back(&mut self, resource: Resource, amount: u64) {
        if resource != Resource::JobsPerHour {
            let c = self.usage.get_mut(resource);
            *c = c.saturating_sub(amount);
        }
    }

    /// Takes `amount` of `resource` within `limits`, or refuses with
    /// [`Error::QuotaExceeded`] without changing anything. The record must
    /// have been [rolled](UsageRecord::roll) to `now`.
    pub fn reserve(
        &mut self,
        limits: &Limits,
        resource: Resource,
        amount: u64,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Reservation> {
        check_amount(amount)?;
        let limit = resource.limit(limits);
        let current = self.usage.get(resource);
        let requested = current.saturating_add(amount);
        if requested > limit {
            let retry_after = if resource == Resource::JobsPerHour && amount <= limit {
                let next = hour_start(now) + chrono::Duration::hours(1);
                (next - now).to_std().ok()
            } else {
                None
            };
            return Err(Error::QuotaExceeded {
                tenant: self.tenant.to_string(),
                resource: resource.as_str().to_string(),
                limit,
                requested,
                retry_after,
            });
        }
        *self.usage.get_mut(resource) = requested;
        let reservation = Reservation {
            id: Uuid::new_v4(),
            tenant: self.tenant.clone(),
            resource,
            amount,
            created_at: now,
        };
        self.pending.push(PendingReservation {
            id: reservation.id,
            resource,
            amount,
            created_at: now,
            expires_at: now + chrono_duration(ttl),
        });
        Ok(reservation)
    }

    /// Confirms a pending reservation. [`Error::Precondition`] if it is not
    /// pending (expired, released, already committed or unknown).
    pub fn commit(&mut self, reservation: &Reservation) -> Result<()> {
        let pos = self
            .pending
            .iter()
            .position(|p| p.id == reservation.id)
            .ok_or_else(|| {
                Error::precondition(format!(
                    "reservation {} of tenant {} is not pending: it expired, was released \
                     or was already committed; reserve again",
                    reservation.id, self.tenant
                ))
            })?;
        self.pending.remove(pos);
        Ok(())
    }

    /// Gives a reservation's capacity back (not for [`Resource::JobsPerHour`],
    /// whose count stays for the hour).
    pub fn release(&mut self, reservation: &Reservation) -> Result<()> {
        check_amount(reservation.amount)?;
        if let Some(pos) = self.pending.iter().position(|p| p.id == reservation.id) {
            let p = self.pending.remove(pos);
            self.give_back(p.resource, p.amount);
        } else {
            self.give_back(reservation.resource, reservation.amount);
        }
        Ok(())
    }

    /// Records a usage event.
    pub fn record(&mut self, event: UsageEvent) -> Result<()> {
        match event {
            UsageEvent::JobCompleted => {
                self.usage.jobs_completed = self.usage.jobs_completed.saturating_add(1)
            }
            UsageEvent::JobFailed => {
                self.usage.jobs_failed = self.usage.jobs_failed.saturating_add(1)
            }
            UsageEvent::Cost(n) => {
                if n > MAX_LIMIT_VALUE {
                    return Err(Error::invalid(format!(
                        "a cost of {n} is absurd; the largest allowed is {MAX_LIMIT_VALUE}"
                    )));
                }
                self.usage.cost_this_month = self.usage.cost_this_month.saturating_add(n)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::Plan;
    use chrono::TimeZone;

    fn rec() -> UsageRecord {
        UsageRecord::new(TenantId::new("acme").unwrap())
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 31, h, m, 0).unwrap()
    }

    #[test]
    fn reserve_up_to_the_limit_then_refuse() {
        let mut r = rec();
        let limits = Plan::Free.limits(); // 5 concurrent jobs
        r.roll(t(10, 0));
        for _ in 0..5 {
            r.reserve(
                &limits,
                Resource::ConcurrentJobs,
                1,
                DEFAULT_RESERVATION_TTL,
                t(10, 0),
            )
            .unwrap();
        }
        let err = r
            .reserve(
                &limits,
                Resource::ConcurrentJobs,
                1,
                DEFAULT_RESERVATION_TTL,
                t(10, 0),
            )
            .unwrap_err();
        match err {
            Error::QuotaExceeded {
                limit,
                requested,
                retry_after,
                ..
            } => {
                assert_eq!((limit, requested, retry_after), (5, 6, None));
            }
            e => panic!("{e}"),
        }
        assert_eq!(r.usage.jobs_active, 5);
    }

    #[test]
    fn jobs_per_hour_window_and_retry_after() {
        let mut r = rec();
        let limits = Plan::Free.limits(); // 10 jobs per hour
        r.roll(t(10, 15));
        let res = r
            .reserve(
                &limits,
                Resource::JobsPerHour,
                10,
                DEFAULT_RESERVATION_TTL,
                t(10, 15),
            )
            .unwrap();
        r.release(&res).unwrap();
        assert_eq!(
            r.usage.jobs_this_hour, 10,
            "released jobs/hour are not given back"
        );
        match r.reserve(
            &limits,
            Resource::JobsPerHour,
            1,
            DEFAULT_RESERVATION_TTL,
            t(10, 15),
        ) {
            Err(Error::QuotaExceeded { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(45 * 60)))
            }
            other => panic!("{other:?}"),
        }
        // more than the whole limit can never succeed: no retry_after
        match r.reserve(
            &limits,
            Resource::JobsPerHour,
            11,
            DEFAULT_RESERVATION_TTL,
            t(10, 15),
        ) {
            Err(Error::QuotaExceeded { retry_after, .. }) => assert_eq!(retry_after, None),
            other => panic!("{other:?}"),
        }
        assert!(r.roll(t(11, 0)));
        assert_eq!(r.usage.jobs_this_hour, 0);
        r.reserve(
            &limits,
            Resource::JobsPerHour,
            1,
            DEFAULT_RESERVATION_TTL,
            t(11, 0),
        )
        .unwrap();
    }

    #[test]
    fn pending_reservations_expire_committed_ones_do_not() {
        let mut r = rec();
        let limits = Plan::Pro.limits();
        r.roll(t(10, 0));
        let ttl = Duration::from_secs(60);
        let a = r
            .reserve(&limits, Resource::Workers, 2, ttl, t(10, 0))
            .unwrap();
        let b = r
            .reserve(&limits, Resource::Workers, 3, ttl, t(10, 0))
            .unwrap();
        r.commit(&b).unwrap();
        assert!(r.commit(&b).is_err(), "second commit refused");
        assert_eq!(r.usage.workers, 5);
        r.roll(t(10, 2));
        assert_eq!(r.usage.workers, 3, "the pending 2 expired");
        assert!(matches!(r.commit(&a), Err(Error::Precondition { .. })));
        r.release(&b).unwrap();
        assert_eq!(r.usage.workers, 0);
    }

    #[test]
    fn amounts_and_costs_are_checked() {
        let mut r = rec();
        let limits = Plan::Pro.limits();
        r.roll(t(10, 0));
        for bad in [0, MAX_LIMIT_VALUE + 1] {
            assert!(matches!(
                r.reserve(
                    &limits,
                    Resource::Gpus,
                    bad,
                    DEFAULT_RESERVATION_TTL,
                    t(10, 0)
                ),
                Err(Error::InvalidInput { .. })
            ));
        }
        r.record(UsageEvent::Cost(7)).unwrap();
        r.record(UsageEvent::JobCompleted).unwrap();
        r.record(UsageEvent::JobFailed).unwrap();
        assert!(r.record(UsageEvent::Cost(u64::MAX)).is_err());
        assert_eq!(r.usage.cost_this_month, 7);
        // a new month resets the cost
        r.roll(Utc.with_ymd_and_hms(2030, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(r.usage.cost_this_month, 0);
        assert_eq!(r.usage.cost_month.as_deref(), Some("2030-02"));
        assert_eq!((r.usage.jobs_completed, r.usage.jobs_failed), (1, 1));
    }
}
