//! Open loop: checkouts sent on a fixed schedule whatever the system
//! answers, each timed from its scheduled send time to its final status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::checkout::{place_and_wait, CheckoutShape};
use crate::schedule::ArrivalSchedule;
use crate::service_usage::{UsageSampler, WatchedProcess};
use crate::step::{progress, Load, StepReport, Tally};
use crate::verdict::{judge, Limits, StepOutcome};

#[derive(Clone, Copy, Debug)]
pub struct StepPlan {
    pub rate: f64,
    pub length: Duration,
    /// How long after the last scheduled send to wait for stragglers;
    /// those still pending then count as errors.
    pub drain: Duration,
    /// Checkouts in flight beyond which a due checkout is not sent but
    /// counted as an error: past it the system is far behind, and the
    /// bench must not exhaust its own sockets and memory.
    pub max_in_flight: usize,
}

/// Runs one step; `first` numbers its checkouts' customers after those of
/// earlier steps.
pub async fn run_step(
    client: &reqwest::Client,
    shape: &Arc<CheckoutShape>,
    plan: StepPlan,
    first: u64,
    watched: &[WatchedProcess],
    limits: &Limits,
) -> StepReport {
    let label = format!("open {:.0}/s", plan.rate);
    let schedule = ArrivalSchedule::new(plan.rate, plan.length);
    let mut usage = UsageSampler::start(watched);
    let mut tally = Tally::new();
    let started = Instant::now();
    let origin = tokio::time::Instant::from_std(started);
    let mut ticks =
        tokio::time::interval_at(origin + Duration::from_secs(1), Duration::from_secs(1));
    let mut in_flight = JoinSet::new();
    let mut next = 0u64;

    while next < schedule.len() {
        let due = origin + schedule.due(next);
        tokio::select! {
            // Sending on time comes first; answers wait a moment.
            biased;
            _ = tokio::time::sleep_until(due) => {
                if in_flight.len() >= plan.max_in_flight {
                    tally.failed(format!("not sent: {} checkouts already in flight", plan.max_in_flight));
                } else {
                    let client = client.clone();
                    let shape = shape.clone();
                    let n = first + next;
                    in_flight.spawn(async move {
                        let result = place_and_wait(&client, &shape, n).await;
                        (result, due.elapsed())
                    });
                }
                next += 1;
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => match joined {
                Ok((result, latency)) => tally.finished(result, latency),
                Err(error) => tally.failed(error.to_string()),
            },
            _ = ticks.tick() => {
                usage.sample();
                progress(&label, started, &tally, schedule.len(), in_flight.len());
            }
        }
    }
    let drain_until = origin + plan.length + plan.drain;
    while !in_flight.is_empty() {
        tokio::select! {
            Some(joined) = in_flight.join_next() => match joined {
                Ok((result, latency)) => tally.finished(result, latency),
                Err(error) => tally.failed(error.to_string()),
            },
            _ = ticks.tick() => {
                usage.sample();
                progress(&label, started, &tally, schedule.len(), in_flight.len());
            }
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    let unfinished = in_flight.len();
    in_flight.abort_all();
    for _ in 0..unfinished {
        tally.failed(format!(
            "not final {:?} after the step's last send",
            plan.drain
        ));
    }

    let achieved_rate = tally.completion_rate(plan.length);
    let latency = tally.latencies.summary();
    let verdict = judge(
        &StepOutcome {
            offered_rate: plan.rate,
            achieved_rate,
            offered: schedule.len(),
            errors: tally.errors,
            latency,
        },
        limits,
    );
    StepReport {
        load: Load::Open { rate: plan.rate },
        offered: schedule.len(),
        completed: tally.completed,
        errors: tally.errors,
        achieved_rate,
        latency,
        usage: usage.finish(),
        verdict: Some(verdict),
        outcomes: tally.outcomes,
        first_error: tally.first_error,
    }
}
