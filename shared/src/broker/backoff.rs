//! Exponential backoff with full jitter: the broker's reconnects, every
//! hold while the database or the broker is away, and the saga's retries
//! all wait by the same arithmetic.

use std::time::Duration;

/// Exponential backoff with full jitter: each delay is uniform in
/// `[0, min(cap, base * 2^n)]`, so many clients that lost one broker do not
/// come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Between tries of a message held while the database or the broker is
    /// away: quick at first (a blip), at most 5 s apart (an outage).
    pub fn holding() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Between attempts to reach a server again (connect, consume, listen).
    pub fn reconnecting() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling
            .mul_f64(rand::random::<f64>())
            .max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }
}
