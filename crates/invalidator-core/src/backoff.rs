//! Retry delays: full-jitter exponential backoff, the one retry policy of the project (the
//! client's reconnects; the server's store writer, cluster consumers and filter loader).
//!
//! The n-th consecutive failed attempt (counting from 0) waits a uniformly random delay in
//! `[0, min(cap, base · 2^n)]` ("full jitter", as in the AWS architecture blog's comparison
//! of backoff strategies). The randomness spreads the reconnects of many clients that lost
//! the same server at the same moment, instead of having them all come back in lock step.
//! [`Backoff::reset`] returns to attempt 0 after a successful connect.

use std::time::Duration;

/// Delay generator for reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// `base`: the ceiling of the first delay; `cap`: the largest ceiling.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, fastrand::Rng::new())
    }

    /// As [`new`](Self::new), with a given random source (tests use a seeded one).
    pub fn with_rng(base: Duration, cap: Duration, rng: fastrand::Rng) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng,
        }
    }

    /// The ceiling of the delay for the current attempt: `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt (a random point in `[0, ceiling]`); counts the
    /// attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        // Stop counting once the ceiling is the cap: the factor cannot overflow.
        if self.ceiling() < self.cap {
            self.attempt = self.attempt.saturating_add(1);
        }
        Duration::from_nanos(self.rng.u64(0..=ceiling))
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first attempt (after a successful connect).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_stay_within_the_full_jitter_bounds() {
        let base = 100 * MS;
        let cap = 5000 * MS;
        let mut b = Backoff::with_rng(base, cap, fastrand::Rng::with_seed(7));
        for attempt in 0..40u32 {
            let ceiling = base
                .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
                .min(cap);
            assert_eq!(b.ceiling(), ceiling, "attempt {attempt}");
            let d = b.next_delay();
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
        // The ceiling grows 100, 200, 400, ... and stays at the cap.
        assert_eq!(b.ceiling(), cap);
    }

    #[test]
    fn delays_are_spread_over_the_whole_range() {
        let base = 100 * MS;
        let mut b = Backoff::with_rng(base, 5000 * MS, fastrand::Rng::with_seed(42));
        let mut low = 0;
        let mut high = 0;
        for _ in 0..1000 {
            b.reset();
            let d = b.next_delay();
            assert!(d <= base);
            if d < base / 4 {
                low += 1;
            }
            if d > base * 3 / 4 {
                high += 1;
            }
        }
        // Uniform on [0, base]: about 250 in each outer quarter.
        assert!((150..350).contains(&low), "{low}");
        assert!((150..350).contains(&high), "{high}");
    }

    #[test]
    fn reset_returns_to_the_first_ceiling() {
        let mut b = Backoff::with_rng(10 * MS, 1000 * MS, fastrand::Rng::with_seed(1));
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.attempt(), 5);
        assert_eq!(b.ceiling(), 320 * MS);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), 10 * MS);
        assert!(b.next_delay() <= 10 * MS);
    }

    #[test]
    fn odd_settings_do_not_panic() {
        // A cap below the base is raised to the base; a zero base never waits.
        let mut b = Backoff::with_rng(200 * MS, 50 * MS, fastrand::Rng::with_seed(3));
        for _ in 0..100 {
            assert!(b.next_delay() <= 200 * MS);
        }
        let mut z = Backoff::with_rng(Duration::ZERO, Duration::ZERO, fastrand::Rng::new());
        assert_eq!(z.next_delay(), Duration::ZERO);
        let mut huge = Backoff::with_rng(
            Duration::from_secs(u64::MAX / 4),
            Duration::MAX,
            fastrand::Rng::new(),
        );
        for _ in 0..100 {
            huge.next_delay();
        }
    }
}
