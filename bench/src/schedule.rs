//! When each checkout of an open-loop step is due. Latency is measured from
//! these times, not from when the request actually left: a bench that falls
//! behind (or a system that stalls it) shows up as latency instead of
//! silently sending less (no coordinated omission).

use std::time::Duration;

/// Evenly spaced arrivals at `rate` per second for `length`.
#[derive(Clone, Copy, Debug)]
pub struct ArrivalSchedule {
    rate: f64,
    count: u64,
}

impl ArrivalSchedule {
    /// `rate` must be positive and finite (the CLI checks it).
    pub fn new(rate: f64, length: Duration) -> Self {
        let count = (rate * length.as_secs_f64()).round().max(0.0) as u64;
        Self { rate, count }
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `index`th arrival, from the start of the step. Computed from the
    /// index, not accumulated, so rounding never drifts the rate.
    pub fn due(&self, index: u64) -> Duration {
        Duration::from_secs_f64(index as f64 / self.rate)
    }

    pub fn offsets(self) -> impl Iterator<Item = Duration> {
        (0..self.count).map(move |index| self.due(index))
    }
}

/// Parses `--rates`: positive arrival rates, strictly increasing, since the
/// bench steps up until the system breaks.
pub fn parse_rates(text: &str) -> Result<Vec<f64>, String> {
    let mut rates = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let rate: f64 = part
            .parse()
            .map_err(|_| format!("'{part}' is not a rate per second"))?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("rate {part} must be above 0"));
        }
        if rates.last().is_some_and(|&last| rate <= last) {
            return Err(format!("rates must increase, {part} does not"));
        }
        rates.push(rate);
    }
    if rates.is_empty() {
        return Err("no rates given".into());
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hundred_a_second_for_ten_seconds_is_two_thousand_five_ms_apart() {
        let schedule = ArrivalSchedule::new(200.0, Duration::from_secs(10));
        assert_eq!(schedule.len(), 2000);
        let offsets: Vec<_> = schedule.offsets().collect();
        assert_eq!(offsets[0], Duration::ZERO);
        assert_eq!(offsets[1], Duration::from_millis(5));
        assert_eq!(offsets[1999], Duration::from_millis(9995));
    }

    #[test]
    fn a_rate_that_does_not_divide_a_second_does_not_drift() {
        let schedule = ArrivalSchedule::new(3.0, Duration::from_secs(1000));
        assert_eq!(schedule.len(), 3000);
        let last = schedule.offsets().last().unwrap();
        // 2999 / 3 s, to the nanosecond rounding of one division.
        assert!((last.as_secs_f64() - 2999.0 / 3.0).abs() < 1e-6, "{last:?}");
    }

    #[test]
    fn a_slow_rate_in_a_short_step_may_send_nothing() {
        assert!(ArrivalSchedule::new(0.1, Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn rates_parse_in_increasing_order() {
        assert_eq!(
            parse_rates("50, 100,200").unwrap(),
            vec![50.0, 100.0, 200.0]
        );
        assert!(parse_rates("100,50").is_err());
        assert!(parse_rates("100,100").is_err());
        assert!(parse_rates("0").is_err());
        assert!(parse_rates("fast").is_err());
        assert!(parse_rates("").is_err());
    }
}
