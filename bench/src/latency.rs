//! Latency figures: an HDR histogram in microseconds and the percentiles a
//! report prints.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies from 1 µs to an hour, to three significant digits: a checkout
/// stuck for minutes still lands in the histogram instead of being dropped.
pub struct Latencies(Histogram<u64>);

const HIGHEST_MICROS: u64 = 3_600_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("static bounds are valid"))
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        let at = |q: f64| Duration::from_micros(self.0.value_at_quantile(q));
        LatencySummary {
            count: self.0.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(self.0.max()),
        }
    }
}

/// The percentiles every step reports. An empty histogram reports zeros
/// with `count == 0`, which the verdict treats as nothing measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

pub fn millis(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1000.0
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            millis(self.p50),
            millis(self.p90),
            millis(self.p99),
            millis(self.p999),
            millis(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Duration, expected_ms: f64) -> bool {
        // Three significant digits: within 0.1%.
        (millis(actual) - expected_ms).abs() <= expected_ms * 0.001
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds() {
        let mut latencies = Latencies::default();
        for ms in 1..=1000 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        assert!(close(summary.p50, 500.0), "{summary}");
        assert!(close(summary.p90, 900.0), "{summary}");
        assert!(close(summary.p99, 990.0), "{summary}");
        assert!(close(summary.p999, 999.0), "{summary}");
        assert!(close(summary.max, 1000.0), "{summary}");
    }

    #[test]
    fn a_single_slow_checkout_is_the_tail_not_the_median() {
        let mut latencies = Latencies::default();
        for _ in 0..999 {
            latencies.record(Duration::from_millis(5));
        }
        latencies.record(Duration::from_secs(90));
        let summary = latencies.summary();
        assert!(close(summary.p50, 5.0), "{summary}");
        assert!(close(summary.p99, 5.0), "{summary}");
        assert!(close(summary.max, 90_000.0), "{summary}");
    }

    #[test]
    fn nothing_recorded_reports_zero_count() {
        let summary = Latencies::default().summary();
        assert_eq!(summary, LatencySummary::default());
    }

    #[test]
    fn display_is_in_milliseconds() {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_micros(12_000));
        let text = latencies.summary().to_string();
        assert!(text.starts_with("p50 12.0 ms"), "{text}");
    }
}
