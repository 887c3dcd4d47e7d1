//! Quota accounting on the store: the per-tenant usage record
//! (`registry-usage/<id>.yaml`), the rules that change it, and the
//! registry's quota operations.
//!
//! [`UsageRecord`] methods are pure: they take the current time and the
//! tenant's [`Limits`] and change the record in memory (the windows and
//! amount checks are core's, `tenancy_core::quota`). The registry reads the
//! record, applies one of them and writes it back with a compare-and-swap
//! ([`StateBackendExt::update_with`]), so a burst of concurrent
//! reservations never ends above a limit.
//!
//! # Rules
//!
//! - A reservation adds its amount to the resource's counter at once. It is
//!   *pending* until committed; a pending reservation that is neither
//!   committed nor released within the reservation TTL (default
//!   `DEFAULT_RESERVATION_TTL`) expires and its capacity is given back, so
//!   a client that crashes between `reserve` and `commit` does not leak quota.
//! - `commit` turns a pending reservation into a *committed* one: the
//!   record keeps its id, resource and amount (one entry per live job,
//!   worker or stack) until it is released. Committing an expired, released,
//!   already committed or unknown reservation is refused with
//!   [`Error::Precondition`] and changes nothing.
//! - `release` is exact and idempotent per reservation id: a pending or
//!   committed reservation gives back its stored amount once and is then
//!   forgotten; releasing an expired or already released one is a no-op.
//!   The ids of reservations that expired or were released are remembered
//!   for [`FINISHED_RETENTION`] (at most [`MAX_FINISHED`] of them) to tell
//!   these cases apart in errors. A release of an id the record does not
//!   know at all gives back at most the part of the counter that no listed
//!   reservation accounts for (only records written before committed
//!   reservations were listed have such a part), so it can never take back
//!   capacity that a known reservation holds.
//! - [`Resource::JobsPerHour`] counts jobs created in the current clock hour
//!   (`HH:00:00` to the next `HH:00:00`, UTC). Its capacity is never given
//!   back: releasing or expiring such a reservation leaves the count, and a
//!   committed one is not listed (only its id is remembered a while). Over
//!   the limit, [`Error::QuotaExceeded`] carries `retry_after` = the time to
//!   the next hour.
//! - [`Resource::StateBytes`] and [`Resource::StateObjects`] (the server's
//!   state API) are not listed when committed either: a tenant may hold a
//!   million objects, and one entry each would make the record huge. The
//!   committed amount stays in the counter, and the server gives back a
//!   shrink or a deletion with a release of a fresh reservation id, which
//!   gives back at most the part of the counter that no pending reservation
//!   holds (the unknown-id rule above), exactly once per id. The protocol is
//!   described in `tenancy-server`'s state routes.
//! - Cost is counted per calendar month (UTC) and reset when a new month starts.
//! - [`Resource::LocksHeld`] is not reserved here (refused as invalid input)
//!   and `Usage::locks_held` stays 0 in the record: a lock whose lease runs
//!   out must stop counting without a release, so the lock layer
//!   (`tenancy_lock::LimitedLocks`) counts locks in its own record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use tenancy_core::clock::chrono_duration;
use tenancy_core::quota::{hour_start, month_of, validate_amount};
use tenancy_core::tenant::MAX_LIMIT_VALUE;
use tenancy_core::{
    Error, Limits, ListedReservation, Reservation, Resource, Result, StateBackendExt, Step,
    TenantId, Usage, UsageEvent, Version,
};

use super::records::from_yaml;
use super::{layout, StoreRegistry};

/// The format version written into usage records.
pub(crate) const USAGE_FORMAT_VERSION: u32 = 1;

/// How long the id of an expired or released reservation is remembered: 24 hours.
pub(crate) const FINISHED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How many ids of expired or released reservations a record keeps at most
/// (the oldest are dropped first). They only make errors precise and
/// repeated releases free; correctness does not depend on them (a release
/// of an id the record no longer knows gives back only unlisted capacity).
/// The record is rewritten on every reservation, commit and release, so
/// its size is paid on each: 256 ids made it 26 KB, which PostgreSQL
/// stores out of line (a pair slowed from 3 to 8 ms under a steady stream
/// of updates until vacuum ran); 64 made it ~7 KB, which PostgreSQL
/// compresses on every write (pglz took a quarter of the database's CPU
/// with 64 tenants reserving at once) and JSON took most of ours. 16 keep
/// a busy tenant's record under 2 KB, below PostgreSQL's threshold for
/// compressing a row at all.
pub(crate) const MAX_FINISHED: usize = 16;

/// A reservation that was made but not yet committed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingReservation {
    /// The reservation id.
    pub(crate) id: Uuid,
    /// The resource.
    pub(crate) resource: Resource,
    /// How much.
    pub(crate) amount: u64,
    /// When it was made.
    pub(crate) created_at: DateTime<Utc>,
    /// When it expires unless committed or released.
    pub(crate) expires_at: DateTime<Utc>,
}

/// A committed reservation: its capacity stays in use until it is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommittedReservation {
    /// The reservation id.
    pub(crate) id: Uuid,
    /// The resource.
    pub(crate) resource: Resource,
    /// How much.
    pub(crate) amount: u64,
    /// When it was made (records written before this was kept: the epoch).
    #[serde(default = "epoch")]
    pub(crate) created_at: DateTime<Utc>,
}

fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// How a reservation that is no longer pending or committed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Finish {
    /// It was not committed or released within the reservation TTL.
    Expired,
    /// It was released.
    Released,
    /// It was committed and is not listed ([`Resource::JobsPerHour`]).
    Committed,
}

/// The id of a reservation that expired, was released or was committed
/// without being listed, remembered for [`FINISHED_RETENTION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FinishedReservation {
    /// The reservation id.
    pub(crate) id: Uuid,
    /// How it ended.
    pub(crate) how: Finish,
    /// When.
    pub(crate) at: DateTime<Utc>,
}

/// A tenant's usage record, as stored by the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsageRecord {
    /// The record's format version.
    pub(crate) format_version: u32,
    /// The tenant.
    pub(crate) tenant: TenantId,
    /// The counters.
    pub(crate) usage: Usage,
    /// Reservations not yet committed or released.
    #[serde(default)]
    pub(crate) pending: Vec<PendingReservation>,
    /// Committed reservations not yet released (not [`Resource::JobsPerHour`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) committed: Vec<CommittedReservation>,
    /// Recently expired or released reservations, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) finished: Vec<FinishedReservation>,
    /// When the record was last written.
    pub(crate) updated_at: Option<DateTime<Utc>>,
}

impl UsageRecord {
    /// An empty record for `tenant`.
    pub(crate) fn new(tenant: TenantId) -> Self {
        UsageRecord {
            format_version: USAGE_FORMAT_VERSION,
            tenant,
            usage: Usage::default(),
            pending: Vec::new(),
            committed: Vec::new(),
            finished: Vec::new(),
            updated_at: None,
        }
    }

    /// Brings the record to `now`: starts a new hour window and a new cost
    /// month where due, and drops expired pending reservations (giving their
    /// capacity back, except for [`Resource::JobsPerHour`]). Returns true if
    /// anything changed.
    pub(crate) fn roll(&mut self, now: DateTime<Utc>) -> bool {
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
        let (expired, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.expires_at <= now);
        self.pending = live;
        changed |= !expired.is_empty();
        for p in expired {
            self.give_back(p.resource, p.amount);
            self.finish(p.id, Finish::Expired, p.expires_at);
        }
        let keep_after = now - chrono_duration(FINISHED_RETENTION);
        let before = self.finished.len();
        self.finished.retain(|f| f.at > keep_after);
        changed || self.finished.len() != before
    }

    /// Remembers that `id` ended, dropping the oldest entries beyond [`MAX_FINISHED`].
    fn finish(&mut self, id: Uuid, how: Finish, at: DateTime<Utc>) {
        self.finished.push(FinishedReservation { id, how, at });
        if self.finished.len() > MAX_FINISHED {
            let excess = self.finished.len() - MAX_FINISHED;
            self.finished.drain(..excess);
        }
    }

    fn finished(&self, id: Uuid) -> Option<&FinishedReservation> {
        self.finished.iter().find(|f| f.id == id)
    }

    /// How much of each resource's counter no listed (pending or committed)
    /// reservation accounts for: only records from before committed
    /// reservations were listed have any.
    fn unlisted(&self, resource: Resource) -> u64 {
        let listed = self
            .pending
            .iter()
            .filter(|p| p.resource == resource)
            .map(|p| p.amount)
            .chain(
                self.committed
                    .iter()
                    .filter(|c| c.resource == resource)
                    .map(|c| c.amount),
            )
            .fold(0u64, u64::saturating_add);
        self.usage.get(resource).saturating_sub(listed)
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
    pub(crate) fn reserve(
        &mut self,
        limits: &Limits,
        resource: Resource,
        amount: u64,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Reservation> {
        validate_amount(amount)?;
        if !resource.reserved_in_registry() {
            return Err(Error::invalid(format!(
                "{resource} is counted by the lock layer (tenancy_lock::LimitedLocks), not reserved in the registry"
            )));
        }
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

    /// Confirms a pending reservation; its capacity stays in use until it
    /// is released. [`Error::Precondition`], changing nothing, if it expired,
    /// was released, was already committed or is unknown. The record must
    /// have been [rolled](UsageRecord::roll) to `now`.
    pub(crate) fn commit(&mut self, reservation: &Reservation, now: DateTime<Utc>) -> Result<()> {
        let id = reservation.id;
        if let Some(pos) = self.pending.iter().position(|p| p.id == id) {
            let p = self.pending.remove(pos);
            if !p.resource.listed_when_committed() {
                self.finish(id, Finish::Committed, now);
            } else {
                self.committed.push(CommittedReservation {
                    id,
                    resource: p.resource,
                    amount: p.amount,
                    created_at: p.created_at,
                });
            }
            return Ok(());
        }
        let why = match self.finished(id).map(|f| (f.how, f.at)) {
            _ if self.committed.iter().any(|c| c.id == id) => {
                "it was already committed".to_string()
            }
            Some((Finish::Committed, at)) => format!("it was already committed at {at}"),
            Some((Finish::Expired, at)) => {
                format!("it expired at {at} (not committed within the reservation TTL)")
            }
            Some((Finish::Released, at)) => format!("it was released at {at}"),
            None => "it is unknown (or expired or was released long ago)".to_string(),
        };
        Err(Error::precondition(format!(
            "reservation {id} of tenant {} cannot be committed: {why}; reserve again",
            self.tenant
        )))
    }

    /// Gives a reservation's capacity back, exactly once per reservation id
    /// (not for [`Resource::JobsPerHour`], whose count stays for the hour).
    /// Releasing an expired or already released reservation is a no-op; see
    /// the [module rules](self) for an id the record does not know. The
    /// record must have been [rolled](UsageRecord::roll) to `now`.
    pub(crate) fn release(&mut self, reservation: &Reservation, now: DateTime<Utc>) -> Result<()> {
        validate_amount(reservation.amount)?;
        let id = reservation.id;
        if let Some(pos) = self.pending.iter().position(|p| p.id == id) {
            let p = self.pending.remove(pos);
            self.give_back(p.resource, p.amount);
        } else if let Some(pos) = self.committed.iter().position(|c| c.id == id) {
            let c = self.committed.remove(pos);
            self.give_back(c.resource, c.amount);
        } else if self.finished(id).is_some() {
            return Ok(());
        } else {
            let amount = reservation.amount.min(self.unlisted(reservation.resource));
            self.give_back(reservation.resource, amount);
        }
        self.finish(id, Finish::Released, now);
        Ok(())
    }

    /// Releases `reservation` and records `event`, both only if the
    /// reservation is still listed (pending or committed); returns whether
    /// it was. The record must have been [rolled](UsageRecord::roll) to `now`.
    pub(crate) fn release_recording(
        &mut self,
        reservation: &Reservation,
        event: UsageEvent,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let id = reservation.id;
        let listed =
            self.pending.iter().any(|p| p.id == id) || self.committed.iter().any(|c| c.id == id);
        if !listed {
            return Ok(false);
        }
        self.record(event)?;
        self.release(reservation, now)?;
        Ok(true)
    }

    /// The reservations this record lists, as the registry hands them out.
    pub(crate) fn listed(&self) -> Vec<ListedReservation> {
        let pending = self.pending.iter().map(|p| ListedReservation {
            reservation: Reservation {
                id: p.id,
                tenant: self.tenant.clone(),
                resource: p.resource,
                amount: p.amount,
                created_at: p.created_at,
            },
            committed: false,
        });
        let committed = self.committed.iter().map(|c| ListedReservation {
            reservation: Reservation {
                id: c.id,
                tenant: self.tenant.clone(),
                resource: c.resource,
                amount: c.amount,
                created_at: c.created_at,
            },
            committed: true,
        });
        pending.chain(committed).collect()
    }

    /// Records a usage event.
    pub(crate) fn record(&mut self, event: UsageEvent) -> Result<()> {
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

/// What one attempt on a usage record found.
enum Seen<T> {
    Done(T, Usage),
    /// No record yet, and the tenant's existence is not known.
    NoRecord,
}

/// A usage record as stored: JSON (see the module docs).
pub(crate) fn encode(rec: &UsageRecord, what: &str) -> Result<bytes::Bytes> {
    serde_json::to_vec(rec)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::invalid(format!("cannot encode {what}: {e}")))
}

/// A stored usage record: JSON as written now, or YAML as earlier builds
/// wrote it; a failure is [`Error::Corrupt`] naming `what`.
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<UsageRecord> {
    if bytes.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: what.to_string(),
            message: e.to_string(),
        })
    } else {
        from_yaml(bytes, what)
    }
}

impl StoreRegistry {
    pub(crate) async fn read_usage(&self, id: &TenantId) -> Result<Option<UsageRecord>> {
        let what = format!("usage of tenant {id} (registry-usage/{id}.yaml)");
        match self.backend.get(&layout::usage(id)?).await? {
            None => Ok(None),
            Some(o) => Ok(Some(decode(&o.bytes, &what)?)),
        }
    }

    /// Read-modify-write of a usage record with compare-and-swap, starting
    /// from the record this registry wrote last where that is still worth
    /// trusting (`last_written.rs`: a stale one is refused by the write and
    /// read afresh). A missing record is created, but only for a tenant
    /// that exists.
    async fn modify_usage<T, F>(&self, id: &TenantId, mut f: F) -> Result<(T, Usage)>
    where
        F: FnMut(&mut UsageRecord, DateTime<Utc>) -> Result<T> + Send,
        T: Send,
    {
        self.ensure_cas()?;
        let key = layout::usage(id)?;
        let what = format!("usage of tenant {id}");
        let (mut known, start) = self.last_written.start(id);
        let mut tenant_exists = false;
        // The version of the record the latest decision was made on, and
        // what that decision wrote.
        let mut decided_on: Option<Option<Version>> = None;
        let mut written: Option<bytes::Bytes> = None;
        loop {
            let step = |current: Option<&tenancy_core::Object>| {
                decided_on = Some(current.map(|o| o.version.clone()));
                let mut rec = match current {
                    Some(o) => decode(&o.bytes, &format!("{what} (registry-usage/{id}.yaml)"))?,
                    None if !tenant_exists => return Ok(Step::Keep(Seen::NoRecord)),
                    None => UsageRecord::new(id.clone()),
                };
                let now = self.now();
                rec.roll(now);
                let out = f(&mut rec, now)?;
                rec.updated_at = Some(now);
                let bytes = encode(&rec, &what)?;
                written = Some(bytes.clone());
                Ok(Step::Write(bytes, Seen::Done(out, rec.usage)))
            };
            let updated = self
                .backend
                .update_from(&key, known.take(), self.retry(&what), step)
                .await;
            let updated = match updated {
                Ok(u) => u,
                Err(e) => {
                    let seen = decided_on.as_ref().map(Option::as_ref);
                    self.last_written.failed(id, &start, seen);
                    return Err(e);
                }
            };
            match updated.value {
                Seen::Done(out, usage) => {
                    if let (Some(bytes), Some(version)) = (written.take(), updated.version) {
                        let seen = decided_on.as_ref().and_then(Option::as_ref);
                        self.last_written.wrote(
                            id,
                            &start,
                            seen,
                            tenancy_core::Object { bytes, version },
                        );
                    }
                    return Ok((out, usage));
                }
                Seen::NoRecord => {
                    self.last_written.failed(id, &start, Some(None));
                    // Never create a usage record for a tenant that does not exist.
                    self.get_record(id).await?;
                    tenant_exists = true;
                }
            }
        }
    }

    pub(super) async fn current_usage(&self, id: &TenantId) -> Result<Usage> {
        let mut rec = match self.read_usage(id).await? {
            Some(rec) => rec,
            None => {
                // No record yet: the tenant must exist.
                self.get_record(id).await?;
                UsageRecord::new(id.clone())
            }
        };
        rec.roll(self.now());
        Ok(rec.usage)
    }

    pub(super) async fn reserve_quota(
        &self,
        id: &TenantId,
        resource: Resource,
        amount: u64,
    ) -> Result<Reservation> {
        let t = self.active_record(id).await?;
        let limits = t.limit_overrides.apply(t.plan);
        let ttl = self.reservation_ttl;
        let (r, _) = self
            .modify_usage(id, |rec, now| {
                rec.reserve(&limits, resource, amount, ttl, now)
            })
            .await?;
        Ok(r)
    }

    pub(super) async fn commit_reservation(&self, reservation: &Reservation) -> Result<()> {
        self.modify_usage(&reservation.tenant, |rec, now| rec.commit(reservation, now))
            .await?;
        Ok(())
    }

    pub(super) async fn release_reservation(&self, reservation: &Reservation) -> Result<()> {
        self.modify_usage(&reservation.tenant, |rec, now| {
            rec.release(reservation, now)
        })
        .await?;
        Ok(())
    }

    pub(super) async fn release_reservation_recording(
        &self,
        reservation: &Reservation,
        event: UsageEvent,
    ) -> Result<bool> {
        let (released, _) = self
            .modify_usage(&reservation.tenant, |rec, now| {
                rec.release_recording(reservation, event, now)
            })
            .await?;
        Ok(released)
    }

    pub(super) async fn listed_reservations(
        &self,
        id: &TenantId,
    ) -> Result<Vec<ListedReservation>> {
        match self.read_usage(id).await? {
            Some(mut rec) => {
                rec.roll(self.now());
                Ok(rec.listed())
            }
            None => {
                self.get_record(id).await?;
                Ok(Vec::new())
            }
        }
    }

    pub(super) async fn record_event(&self, id: &TenantId, event: UsageEvent) -> Result<Usage> {
        self.get_record(id).await?;
        let ((), usage) = self.modify_usage(id, |rec, _| rec.record(event)).await?;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tenancy_core::quota::DEFAULT_RESERVATION_TTL;
    use tenancy_core::Plan;

    fn rec() -> UsageRecord {
        UsageRecord::new(TenantId::new("acme").unwrap())
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 31, h, m, 0).unwrap()
    }

    #[test]
    fn records_are_written_as_json_and_read_as_json_or_yaml() {
        let mut r = rec();
        let limits = Plan::Pro.limits();
        r.roll(t(10, 0));
        let res = r
            .reserve(
                &limits,
                Resource::ConcurrentJobs,
                2,
                DEFAULT_RESERVATION_TTL,
                t(10, 0),
            )
            .unwrap();
        r.release(&res, t(10, 1)).unwrap();
        let json = encode(&r, "usage").unwrap();
        assert!(json.starts_with(b"{"), "{json:?}");
        assert_eq!(decode(&json, "usage").unwrap(), r);
        // A build that reads the record as YAML reads the JSON too...
        let as_yaml: UsageRecord = from_yaml(&json, "usage").unwrap();
        assert_eq!(as_yaml, r);
        // ...and a record an earlier build wrote as YAML still reads.
        let yaml = super::super::records::to_yaml(&r, "usage").unwrap();
        assert!(!yaml.starts_with(b"{"));
        assert_eq!(decode(&yaml, "usage").unwrap(), r);
        // Broken JSON is corrupt, not silently read as YAML.
        assert!(matches!(
            decode(b"{\"usage\": [1, 2", "usage"),
            Err(Error::Corrupt { .. })
        ));
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
        r.release(&res, t(10, 15)).unwrap();
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
        r.commit(&b, t(10, 0)).unwrap();
        assert!(r.commit(&b, t(10, 0)).is_err(), "second commit refused");
        assert_eq!(r.usage.workers, 5);
        r.roll(t(10, 2));
        assert_eq!(r.usage.workers, 3, "the pending 2 expired");
        assert!(matches!(
            r.commit(&a, t(10, 2)),
            Err(Error::Precondition { .. })
        ));
        assert_eq!(r.usage.workers, 3, "a refused commit counts nothing");
        r.release(&b, t(10, 2)).unwrap();
        assert_eq!(r.usage.workers, 0);
    }

    #[test]
    fn release_is_exact_and_idempotent() {
        let mut r = rec();
        let limits = Plan::Pro.limits();
        let ttl = Duration::from_secs(60);
        r.roll(t(10, 0));
        let expired = r
            .reserve(&limits, Resource::Workers, 2, ttl, t(10, 0))
            .unwrap();
        let committed = r
            .reserve(&limits, Resource::Workers, 3, ttl, t(10, 0))
            .unwrap();
        r.commit(&committed, t(10, 0)).unwrap();
        r.roll(t(10, 5));
        assert_eq!(r.usage.workers, 3, "the pending 2 expired and came back");
        let other = r
            .reserve(&limits, Resource::Workers, 4, ttl, t(10, 5))
            .unwrap();
        assert_eq!(r.usage.workers, 7);

        // releasing the expired reservation gives nothing back a second time
        r.release(&expired, t(10, 5)).unwrap();
        assert_eq!(r.usage.workers, 7);
        match r.commit(&expired, t(10, 5)) {
            Err(Error::Precondition { what }) => assert!(what.contains("expired"), "{what}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.usage.workers, 7, "commit after expiry counts nothing");

        // a committed reservation is given back exactly once
        r.release(&committed, t(10, 5)).unwrap();
        assert_eq!(r.usage.workers, 4);
        r.release(&committed, t(10, 6)).unwrap();
        assert_eq!(r.usage.workers, 4, "second release is a no-op");
        match r.commit(&committed, t(10, 6)) {
            Err(Error::Precondition { what }) => assert!(what.contains("released"), "{what}"),
            other => panic!("{other:?}"),
        }

        // the stored amount counts, not what the caller claims
        let mut inflated = other.clone();
        inflated.amount = 100;
        r.release(&inflated, t(10, 6)).unwrap();
        assert_eq!(r.usage.workers, 0);

        // once the remembered ids are gone, an unknown release still takes
        // nothing that a listed reservation holds
        let held = r
            .reserve(&limits, Resource::Workers, 5, ttl, t(10, 6))
            .unwrap();
        r.commit(&held, t(10, 6)).unwrap();
        r.roll(t(10, 6) + chrono_duration(FINISHED_RETENTION));
        assert!(r.finished.is_empty(), "old ids are forgotten");
        r.release(&committed, t(10, 6) + chrono_duration(FINISHED_RETENTION))
            .unwrap();
        assert_eq!(r.usage.workers, 5);
    }

    #[test]
    fn remembered_ids_are_bounded() {
        let mut r = rec();
        r.roll(t(10, 0));
        for _ in 0..MAX_FINISHED + 10 {
            let res = Reservation {
                id: Uuid::new_v4(),
                tenant: r.tenant.clone(),
                resource: Resource::Stacks,
                amount: 1,
                created_at: t(10, 0),
            };
            r.release(&res, t(10, 0)).unwrap();
        }
        assert_eq!(r.finished.len(), MAX_FINISHED);
        assert_eq!(r.usage.stacks, 0);
    }

    #[test]
    fn records_without_committed_lists_still_give_back() {
        // a record written before committed reservations were listed: 3
        // workers in use by reservations only the counter knows of
        let old = "format_version: 1\ntenant: acme\nusage:\n  stacks: 0\n  services: 0\n  \
                   jobs_active: 0\n  jobs_completed: 0\n  jobs_failed: 0\n  \
                   jobs_this_hour: 0\n  hour_window_start: null\n  workers: 3\n  \
                   cpu_cores: 0\n  gpus: 0\n  cost_this_month: 0\n  cost_month: null\n\
                   pending: []\nupdated_at: null\n";
        let mut r: UsageRecord = serde_yaml_ng::from_str(old).unwrap();
        r.roll(t(10, 0));
        let legacy = Reservation {
            id: Uuid::new_v4(),
            tenant: r.tenant.clone(),
            resource: Resource::Workers,
            amount: 2,
            created_at: t(9, 0),
        };
        r.release(&legacy, t(10, 0)).unwrap();
        assert_eq!(r.usage.workers, 1);
        r.release(&legacy, t(10, 0)).unwrap();
        assert_eq!(r.usage.workers, 1, "released once");
        let mut bigger = legacy.clone();
        bigger.id = Uuid::new_v4();
        bigger.amount = 5;
        r.release(&bigger, t(10, 0)).unwrap();
        assert_eq!(r.usage.workers, 0, "never below zero");
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
