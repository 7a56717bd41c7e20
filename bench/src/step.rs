//! What one measured stretch of load (a closed-loop run or an open-loop
//! step) reports, and how its results are tallied while it runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::service_usage::StepUsage;
use crate::verdict::Verdict;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// A fixed number of checkouts in flight, the next sent when one ends.
    Closed { concurrency: usize },
    /// Checkouts sent at a fixed rate per second, whatever the answers.
    Open { rate: f64 },
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub load: Load,
    /// Checkouts the step meant to send.
    pub offered: u64,
    /// Checkouts that ended `completed`.
    pub completed: u64,
    /// Failed requests, other final statuses, checkouts not sent (in-flight
    /// cap) or not final by the drain deadline.
    pub errors: u64,
    /// Completed checkouts per second of the step.
    pub achieved_rate: f64,
    pub latency: LatencySummary,
    pub usage: StepUsage,
    /// Open-loop steps only.
    pub verdict: Option<Verdict>,
    pub outcomes: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

/// Counts what comes back while a step runs.
pub struct Tally {
    pub latencies: Latencies,
    pub completed: u64,
    pub errors: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub first_completion: Option<Instant>,
    pub last_completion: Option<Instant>,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            latencies: Latencies::default(),
            completed: 0,
            errors: 0,
            outcomes: BTreeMap::new(),
            first_error: None,
            first_completion: None,
            last_completion: None,
        }
    }

    /// A checkout that ended, after `latency`. Only `completed` counts as
    /// a success: the bench's catalogue and payment method never reject.
    pub fn finished(&mut self, result: Result<String, BenchError>, latency: Duration) {
        match result {
            Ok(status) => {
                self.latencies.record(latency);
                if status == "completed" {
                    self.completed += 1;
                    let now = Instant::now();
                    self.first_completion.get_or_insert(now);
                    self.last_completion = Some(now);
                } else {
                    self.errors += 1;
                }
                *self.outcomes.entry(status).or_default() += 1;
            }
            Err(error) => self.failed(error.to_string()),
        }
    }

    pub fn failed(&mut self, error: String) {
        self.errors += 1;
        *self.outcomes.entry("error".into()).or_default() += 1;
        self.first_error.get_or_insert(error);
    }

    /// Completions per second over the span between the first and the last
    /// completion. An open loop that keeps up completes at the offered rate
    /// over that span whatever its latency; one that falls behind stretches
    /// it. Fewer than two completions: over `length`.
    pub fn completion_rate(&self, length: Duration) -> f64 {
        match (self.first_completion, self.last_completion) {
            (Some(first), Some(last)) if self.completed >= 2 && last > first => {
                (self.completed - 1) as f64 / (last - first).as_secs_f64()
            }
            _ => self.completed as f64 / length.as_secs_f64(),
        }
    }

    pub fn done(&self) -> u64 {
        self.completed + self.errors
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

pub fn progress(label: &str, since: Instant, tally: &Tally, offered: u64, in_flight: usize) {
    let summary = tally.latencies.summary();
    eprintln!(
        "  [{label}] {:>3.0} s: {}/{} final, {} in flight, {} errors, p99 so far {:.1} ms",
        since.elapsed().as_secs_f64(),
        tally.done(),
        offered,
        in_flight,
        tally.errors,
        summary.p99.as_secs_f64() * 1000.0
    );
}

impl std::fmt::Display for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.load {
            Load::Closed { concurrency } => write!(f, "closed, {concurrency} in flight")?,
            Load::Open { rate } => write!(f, "open, {rate:.0}/s offered")?,
        }
        writeln!(
            f,
            ": {} checkouts, achieved {:.1}/s, {} errors{}",
            self.offered,
            self.achieved_rate,
            self.errors,
            match &self.verdict {
                Some(Verdict::Broken(why)) => format!(", BROKEN ({why})"),
                Some(verdict) => format!(", {}", verdict.label()),
                None => String::new(),
            }
        )?;
        writeln!(f, "    latency: {}", self.latency)?;
        if let Some(error) = &self.first_error {
            writeln!(f, "    first error: {error}")?;
        }
        write!(f, "    usage: {}", self.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_up_completes_at_the_offered_rate_whatever_the_latency() {
        // 100 checkouts sent 10 ms apart, each taking 400 ms: completions
        // run from 0.4 s to 1.39 s.
        let start = Instant::now();
        let mut tally = Tally::new();
        tally.completed = 100;
        tally.first_completion = Some(start + Duration::from_millis(400));
        tally.last_completion = Some(start + Duration::from_millis(1390));
        let rate = tally.completion_rate(Duration::from_secs(1));
        assert!((rate - 100.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn falling_behind_stretches_the_completions() {
        let start = Instant::now();
        let mut tally = Tally::new();
        tally.completed = 100;
        tally.first_completion = Some(start);
        tally.last_completion = Some(start + Duration::from_millis(1980));
        let rate = tally.completion_rate(Duration::from_secs(1));
        assert!((rate - 50.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn one_completion_counts_over_the_step() {
        let mut tally = Tally::new();
        tally.finished(Ok("completed".into()), Duration::from_millis(5));
        tally.finished(Ok("rejected".into()), Duration::from_millis(5));
        assert_eq!((tally.completed, tally.errors), (1, 1));
        assert_eq!(tally.completion_rate(Duration::from_secs(2)), 0.5);
    }
}
