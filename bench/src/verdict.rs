//! Whether an open-loop step held its rate, and the one figure an operator
//! sizes a deployment by: the highest rate held.

use std::time::Duration;

use crate::latency::LatencySummary;

/// What a step must meet. A step over `held_p99` but under `broken_p99`
/// is still run past, so the plot shows the knee of the curve; a broken
/// step ends the run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub held_p99: Duration,
    pub broken_p99: Duration,
    /// Errors as a share of the checkouts offered.
    pub max_error_share: f64,
    /// Achieved throughput as a share of the offered rate.
    pub min_achieved_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            held_p99: Duration::from_millis(100),
            broken_p99: Duration::from_millis(1000),
            max_error_share: 0.01,
            min_achieved_share: 0.9,
        }
    }
}

/// What one open-loop step measured, as far as the verdict cares.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    pub offered_rate: f64,
    pub achieved_rate: f64,
    pub offered: u64,
    pub errors: u64,
    pub latency: LatencySummary,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Held,
    /// Kept up, without errors, but p99 over the held bound.
    Slow,
    Broken(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Slow => "slow",
            Verdict::Broken(_) => "broken",
        }
    }
}

pub fn judge(step: &StepOutcome, limits: &Limits) -> Verdict {
    let error_share = if step.offered == 0 {
        0.0
    } else {
        step.errors as f64 / step.offered as f64
    };
    if error_share > limits.max_error_share {
        return Verdict::Broken(format!(
            "errors {:.1}% > {:.1}%",
            error_share * 100.0,
            limits.max_error_share * 100.0
        ));
    }
    if step.achieved_rate < step.offered_rate * limits.min_achieved_share {
        return Verdict::Broken(format!(
            "achieved {:.0}/s < {:.0}% of {:.0}/s offered",
            step.achieved_rate,
            limits.min_achieved_share * 100.0,
            step.offered_rate
        ));
    }
    if step.latency.count == 0 {
        return Verdict::Broken("no checkout finished".into());
    }
    if step.latency.p99 > limits.broken_p99 {
        return Verdict::Broken(format!(
            "p99 {:.0} ms > {:.0} ms",
            step.latency.p99.as_secs_f64() * 1000.0,
            limits.broken_p99.as_secs_f64() * 1000.0
        ));
    }
    if step.latency.p99 > limits.held_p99 {
        return Verdict::Slow;
    }
    Verdict::Held
}

/// The highest offered rate whose step held. A lower step that did not
/// hold (a noisy second on a shared machine) does not cap it: each step
/// is judged on its own.
pub fn highest_held<'a>(steps: impl IntoIterator<Item = (f64, &'a Verdict)>) -> Option<f64> {
    steps
        .into_iter()
        .filter(|(_, verdict)| **verdict == Verdict::Held)
        .map(|(rate, _)| rate)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, achieved: f64, errors: u64, p99_ms: u64) -> StepOutcome {
        let offered = (rate * 10.0) as u64;
        StepOutcome {
            offered_rate: rate,
            achieved_rate: achieved,
            offered,
            errors,
            latency: LatencySummary {
                count: offered - errors,
                p99: Duration::from_millis(p99_ms),
                ..Default::default()
            },
        }
    }

    #[test]
    fn kept_up_with_p99_at_the_bound_holds() {
        assert_eq!(
            judge(&step(200.0, 199.0, 0, 100), &Limits::default()),
            Verdict::Held
        );
    }

    #[test]
    fn p99_over_the_bound_is_slow_and_far_over_is_broken() {
        let limits = Limits::default();
        assert_eq!(judge(&step(200.0, 199.0, 0, 101), &limits), Verdict::Slow);
        assert!(matches!(
            judge(&step(200.0, 199.0, 0, 1001), &limits),
            Verdict::Broken(_)
        ));
    }

    #[test]
    fn more_than_one_percent_errors_breaks() {
        let limits = Limits::default();
        // 20 of 2000 is exactly 1%: allowed; 21 is not.
        assert_eq!(judge(&step(200.0, 198.0, 20, 50), &limits), Verdict::Held);
        let verdict = judge(&step(200.0, 198.0, 21, 50), &limits);
        assert!(
            matches!(&verdict, Verdict::Broken(why) if why.contains("errors")),
            "{verdict:?}"
        );
    }

    #[test]
    fn falling_behind_the_offered_rate_breaks_even_with_fast_answers() {
        let verdict = judge(&step(400.0, 359.0, 0, 20), &Limits::default());
        assert!(
            matches!(&verdict, Verdict::Broken(why) if why.contains("achieved")),
            "{verdict:?}"
        );
        assert_eq!(
            judge(&step(400.0, 360.0, 0, 20), &Limits::default()),
            Verdict::Held
        );
    }

    #[test]
    fn the_highest_rate_held_skips_slow_and_broken_steps() {
        let verdicts = [
            (50.0, Verdict::Held),
            (100.0, Verdict::Slow),
            (200.0, Verdict::Held),
            (400.0, Verdict::Broken("errors".into())),
        ];
        assert_eq!(
            highest_held(verdicts.iter().map(|(rate, v)| (*rate, v))),
            Some(200.0)
        );
    }

    #[test]
    fn nothing_held_is_none() {
        let verdicts = [(50.0, Verdict::Slow)];
        assert_eq!(
            highest_held(verdicts.iter().map(|(rate, v)| (*rate, v))),
            None
        );
    }
}
