//! Exponential backoff with full jitter, the one retry policy of the server: the store writer,
//! the cluster consumers and the idempotency filter loader all retry through it.
//!
//! Each failure draws the next delay uniformly from `[0, min(cap, base * 2^n)]` ("full
//! jitter"), so many nodes retrying the same database or NATS server spread out instead of
//! arriving in waves; a success resets `n`. Cost: one random draw per failure.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let base = base.max(Duration::from_millis(1));
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(fastrand::f64())
    }

    /// The ceiling the next delay is drawn under (for logs).
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap)
    }

    /// A success: start again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_jittered_under_a_doubling_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for n in 0..12u32 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(n)).min(Duration::from_secs(5));
            assert_eq!(b.ceiling(), ceiling);
            assert!(b.next_delay() <= ceiling);
        }
        let spread: std::collections::HashSet<u128> =
            (0..50).map(|_| b.next_delay().as_micros()).collect();
        assert!(spread.len() > 40, "delays are spread out, not one value");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
