use std::time::Duration;

/// How often an action is tried and how long to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max, base * 2^(retry-1))]`, where
    /// `unit` is a uniform sample in `[0, 1)` supplied by the caller so this
    /// stays deterministic.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let ceiling = self.base_delay.saturating_mul(1 << exp).min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }
}
