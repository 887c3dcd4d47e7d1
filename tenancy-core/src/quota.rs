//! The pure quota rules every registry shares: reservation amounts, the
//! jobs-per-hour window and the cost month, and the reservation TTL.
//!
//! The stored side (usage records with their pending and committed
//! reservations, written with compare-and-swap) is the registry's, in
//! `tenancy_state::registry`.

use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, Utc};

use crate::error::{Error, Result};
use crate::tenant::MAX_LIMIT_VALUE;

/// How long an uncommitted reservation holds its capacity: 15 minutes.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

/// The start of the clock hour that contains `now` (the jobs-per-hour window).
pub fn hour_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(chrono::Duration::hours(1))
        .unwrap_or(now)
}

/// The month `now` is in, as `YYYY-MM` (the cost window).
pub fn month_of(now: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", now.year(), now.month())
}

/// A reservation amount must be 1 to [`MAX_LIMIT_VALUE`].
pub fn validate_amount(amount: u64) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows() {
        let t = Utc.with_ymd_and_hms(2026, 3, 9, 14, 59, 59).unwrap();
        assert_eq!(
            hour_start(t),
            Utc.with_ymd_and_hms(2026, 3, 9, 14, 0, 0).unwrap()
        );
        assert_eq!(month_of(t), "2026-03");
    }

    #[test]
    fn amounts() {
        assert!(validate_amount(0).is_err());
        assert!(validate_amount(1).is_ok());
        assert!(validate_amount(MAX_LIMIT_VALUE).is_ok());
        assert!(validate_amount(MAX_LIMIT_VALUE + 1).is_err());
    }
}
