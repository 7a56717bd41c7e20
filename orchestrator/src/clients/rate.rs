//! Each instance enforces its share of a client's rate in memory: a token
//! bucket holding `burst / instances` and refilled at `rate / instances`.
//! A shared bucket in PostgreSQL would serialise every checkout of a client
//! on one row lock; shares cost nothing on the hot path and hold across
//! instances as long as the load balancer spreads requests evenly (which
//! round robin does). An instance learns how many run within a second or
//! two (see `registry.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClientLimits;

/// Over the rate: when a token comes back, and the instance's share.
#[derive(Debug, Clone, Copy)]
pub struct RateRefused {
    pub retry_after: Duration,
    /// The client's whole rate burst (what `RateLimit-Limit` states).
    pub limit: u32,
}

#[derive(Default)]
pub struct Buckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    /// Takes a token from `client`'s bucket, this instance's share of it
    /// being `1 / instances`.
    pub fn take(
        &self,
        client: &str,
        limits: &ClientLimits,
        instances: usize,
    ) -> Result<(), RateRefused> {
        let share = 1.0 / instances.max(1) as f64;
        let rate = limits.rate_per_second * share;
        // Never below one token, or a client with a small burst could not
        // check out at all on many instances.
        let capacity = (f64::from(limits.rate_burst) * share).max(1.0);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .expect("the rate buckets are never poisoned");
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / rate;
        Err(RateRefused {
            retry_after: Duration::from_secs_f64(wait.min(3600.0)),
            limit: limits.rate_burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_and_the_share_divides_it() {
        let limits = ClientLimits {
            rate_per_second: 0.01,
            rate_burst: 4,
            max_in_flight: 10,
        };
        let alone = Buckets::default();
        assert_eq!(
            (0..6)
                .filter(|_| alone.take("a", &limits, 1).is_ok())
                .count(),
            4
        );
        let shared = Buckets::default();
        assert_eq!(
            (0..6)
                .filter(|_| shared.take("a", &limits, 2).is_ok())
                .count(),
            2
        );
        let refused = shared.take("a", &limits, 2).unwrap_err();
        assert!(
            refused.retry_after > Duration::from_secs(100),
            "{refused:?}"
        );
        assert!(
            shared.take("b", &limits, 2).is_ok(),
            "another client's bucket"
        );
    }
}
