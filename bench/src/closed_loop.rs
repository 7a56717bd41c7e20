//! Closed loop: `concurrency` checkouts in flight, the next one sent as
//! soon as one ends. Measures what the system does flat out, and with a
//! concurrency of 1, what one checkout costs alone.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::checkout::{place_and_wait, CheckoutShape};
use crate::service_usage::{UsageSampler, WatchedProcess};
use crate::step::{progress, Load, StepReport, Tally};

pub async fn run(
    client: &reqwest::Client,
    shape: &CheckoutShape,
    count: u64,
    concurrency: usize,
    watched: &[WatchedProcess],
) -> StepReport {
    let concurrency = concurrency.max(1);
    let label = format!("closed {concurrency} in flight");
    let mut usage = UsageSampler::start(watched);
    let mut tally = Tally::new();
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut next = 0u64;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while next < count && in_flight.len() < concurrency {
            let n = next;
            in_flight.push(async move {
                let sent = Instant::now();
                (place_and_wait(client, shape, n).await, sent.elapsed())
            });
            next += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        tokio::select! {
            Some((result, latency)) = in_flight.next() => tally.finished(result, latency),
            _ = ticks.tick() => {
                usage.sample();
                progress(&label, started, &tally, count, in_flight.len());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    StepReport {
        load: Load::Closed { concurrency },
        offered: count,
        completed: tally.completed,
        errors: tally.errors,
        achieved_rate: tally.completed as f64 / elapsed,
        latency: tally.latencies.summary(),
        usage: usage.finish(),
        verdict: None,
        outcomes: tally.outcomes,
        first_error: tally.first_error,
    }
}
