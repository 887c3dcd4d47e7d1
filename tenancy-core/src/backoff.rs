//! Exponential backoff with jitter: the one retry schedule of the workspace.
//!
//! Two presets cover every retry loop: [`Backoff::default`] (1 s doubling to
//! 16 s) spaces the retries of a lock `acquire(req, wait)`, and
//! [`Backoff::cas`] (1 ms doubling to 50 ms) spaces the retries of a lost
//! compare-and-swap (see [`StateBackendExt::update_with`]).
//!
//! [`StateBackendExt::update_with`]: crate::state::StateBackendExt::update_with

use std::time::Duration;

use rand::Rng;

/// How a retry loop spaces its attempts.
///
/// The n-th wait (from 0) is `initial * factor^n`, capped at `max`, then
/// shortened by a random part of up to `jitter` of itself (so `jitter = 0.5`
/// waits between half and all of the computed delay), and never longer than
/// what is left of the caller's `wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay (default 1 s).
    pub initial: Duration,
    /// The longest delay (default 16 s).
    pub max: Duration,
    /// The growth factor per attempt (default 2). Values below 1 (or NaN) count as 1.
    pub factor: f64,
    /// The random part of each delay, 0 to 1 (default 0.5). Clamped to 0..=1.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(16),
            factor: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The schedule of a lost compare-and-swap: 1 ms doubling to 50 ms,
    /// half jitter, so contenders on one object spread out quickly.
    pub const fn cas() -> Self {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(50),
            factor: 2.0,
            jitter: 0.5,
        }
    }

    /// The delay before retry `attempt`, with jitter from the thread's RNG.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, &mut rand::thread_rng())
    }

    /// A backoff without randomness and with a fixed delay (handy in tests).
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            factor: 1.0,
            jitter: 0.0,
        }
    }

    /// The delay before retry number `attempt` (0-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_nan() || self.factor < 1.0 {
            1.0
        } else {
            self.factor
        };
        let max = self.max.max(self.initial).as_secs_f64();
        let exp = factor.powi(attempt.min(1024) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(max);
        if secs.is_finite() && secs >= 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            self.max.max(self.initial)
        }
    }

    /// The delay before retry number `attempt` (0-based), with jitter applied.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        if jitter == 0.0 {
            return base;
        }
        let cut: f64 = rng.gen_range(0.0..=jitter);
        base.mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    #[test]
    fn default_is_one_to_sixteen_seconds() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..7).map(|n| b.base_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(16));
    }

    #[test]
    fn cas_preset_is_one_to_fifty_milliseconds() {
        let b = Backoff::cas();
        let ms: Vec<u128> = (0..8).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(ms, vec![1, 2, 4, 8, 16, 32, 50, 50]);
        let d = b.next_delay(3);
        assert!(d >= Duration::from_millis(4) && d <= Duration::from_millis(8));
    }

    #[test]
    fn jitter_shortens_within_bounds() {
        let b = Backoff::default();
        let mut rng = rand::thread_rng();
        for n in 0..6 {
            let base = b.base_delay(n);
            for _ in 0..100 {
                let d = b.delay(n, &mut rng);
                assert!(d <= base && d >= base.mul_f64(0.5), "{d:?} vs {base:?}");
            }
        }
        let mut zero = StepRng::new(0, 0);
        assert_eq!(
            Backoff::fixed(Duration::from_millis(7)).delay(3, &mut zero),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn odd_settings_are_tamed() {
        let b = Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(1),
            factor: f64::NAN,
            jitter: 7.0,
        };
        assert_eq!(b.base_delay(5), Duration::from_secs(2));
        let d = b.delay(5, &mut rand::thread_rng());
        assert!(d <= Duration::from_secs(2));
    }
}
