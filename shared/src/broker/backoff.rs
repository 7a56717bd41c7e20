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

    /// The longest delay after `doublings` doublings: `min(cap, base * 2^n)`.
    pub fn ceiling(&self, doublings: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << doublings.min(20))
            .min(self.cap)
    }

    /// The delay after `doublings` doublings for a uniform sample `unit` in
    /// `[0, 1)`: the caller's own draw keeps a policy deterministic.
    pub fn delay(&self, doublings: u32, unit: f64) -> Duration {
        self.ceiling(doublings).mul_f64(unit.clamp(0.0, 1.0))
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        delay.max(Duration::from_millis(10))
    }

    /// The next ceiling itself, without jitter: for a lone client (chaos
    /// asking its few instances), whose waits need to grow but have no
    /// crowd to spread from.
    pub fn next_ceiling(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delays as the broker, the saga policy and chaos each computed
    /// them before they shared this one: every sequence stays as it was.
    #[test]
    fn every_delay_is_what_it_was_before_the_backoff_was_shared() {
        let broker_before = |base: Duration, cap: Duration, attempt: u32, unit: f64| {
            base.saturating_mul(1u32 << attempt.min(20))
                .min(cap)
                .mul_f64(unit)
                .max(Duration::from_millis(10))
        };
        let policy_before = |base: Duration, max: Duration, retry: u32, unit: f64| {
            let exp = retry.saturating_sub(1).min(20);
            base.saturating_mul(1 << exp)
                .min(max)
                .mul_f64(unit.clamp(0.0, 1.0))
        };
        let shapes = [
            (Duration::from_millis(50), Duration::from_secs(5)),
            (Duration::from_millis(100), Duration::from_secs(5)),
            (Duration::from_millis(200), Duration::from_secs(10)),
            (Duration::from_millis(1), Duration::from_secs(86_400)),
            (Duration::from_secs(3_600), Duration::from_secs(86_400)),
        ];
        for (base, cap) in shapes {
            let backoff = Backoff::new(base, cap);
            for n in 0..40 {
                for unit in [0.0, 1e-9, 0.25, 0.5, 0.999_999, 1.0 - f64::EPSILON] {
                    assert_eq!(
                        backoff.delay(n, unit).max(Duration::from_millis(10)),
                        broker_before(base, cap, n, unit),
                        "{base:?} {cap:?} {n} {unit}"
                    );
                }
                for unit in [-1.0, 0.0, 0.3, 1.0, 2.0] {
                    assert_eq!(
                        backoff.delay(n.saturating_sub(1), unit),
                        policy_before(base, cap, n, unit),
                        "{base:?} {cap:?} {n} {unit}"
                    );
                }
            }
        }
        // chaos's pauses: 100 ms, doubling, at most 1 s.
        let mut chaos_before = Duration::from_millis(100);
        let mut pauses = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..40 {
            assert_eq!(pauses.next_ceiling(), chaos_before);
            chaos_before = (chaos_before * 2).min(Duration::from_secs(1));
        }
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }
}
