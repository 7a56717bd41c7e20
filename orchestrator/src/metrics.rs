//! Prometheus metrics at `GET /metrics`: the counters and latency
//! histograms of what this process did, recorded where it happens (the
//! database gauges written beside them are in `gauges.rs`).
//!
//! Every duration is measured from times the database keeps (a saga's
//! `created_at`, the deadline its awaited attempt was given), never from an
//! instant one process remembers: the instance that finishes a saga, or
//! receives a reply, is often not the one that started it, and may have
//! been restarted in between.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use saga_protocol::Step;

use crate::saga::{Action, Saga, SagaStatus, StepPolicies, Transition};

pub const SAGAS_STARTED: &str = "checkout_sagas_started_total";
pub const SAGAS_FINISHED: &str = "checkout_sagas_finished_total";
pub const SAGAS_SUSPENDED: &str = "checkout_sagas_suspended_total";
pub const DEADLINES_MISSED: &str = "checkout_deadlines_missed_total";
pub const OUTBOX_PUBLISHED: &str = "checkout_outbox_published_total";
pub const DEAD_LETTERS: &str = "checkout_dead_letters_total";
pub const SUPPORT_ACTIONS: &str = "checkout_support_actions_total";
/// Publishes the broker refused (nacked, unroutable, unconfirmed), by routing key.
pub const OUTBOX_REFUSED: &str = "checkout_outbox_refused_total";
/// Sagas parked because their command could not be published, by routing key.
pub const OUTBOX_PARKED: &str = "checkout_outbox_parked_total";
/// Checkouts refused over a client's limit, by limit (`rate`, `in_flight`).
pub const CLIENT_REFUSED: &str = "checkout_client_limited_total";
/// API requests answered `503 overloaded`: no pooled connection came free.
pub const API_OVERLOADED: &str = "checkout_api_overloaded_total";
/// Seconds from a checkout's POST to its final status, by that status.
pub const CHECKOUT_DURATION: &str = "checkout_duration_seconds";
/// Seconds from a step's command going out to its reply being applied, by step.
pub const STEP_ROUND_TRIP: &str = "checkout_step_round_trip_seconds";
/// Seconds one relay batch took to publish and have its confirms.
pub const RELAY_PUBLISH: &str = "checkout_relay_publish_seconds";
/// Worker replies applied, by step and outcome (`ok`, `rejected`, `transient`).
pub const REPLIES: &str = "checkout_replies_total";
/// Replies dead-lettered unapplied because another RabbitMQ user than the
/// step's worker sent them (WORKER_USERS), by step.
pub const REPLIES_REFUSED: &str = "checkout_replies_refused_total";
/// Commits that applied worker replies: a batch of replies commits once.
pub const REPLY_COMMITS: &str = "checkout_reply_commits_total";
/// Awaited `ok` replies not applied because a field did not match what the
/// saga expects (a forged or wrong reply), by step and field.
pub const REPLY_MISMATCHES: &str = "checkout_reply_mismatches_total";

/// A checkout takes tens of milliseconds when all is well, seconds when a
/// step retries, and up to minutes when support resolves a parked saga.
pub const CHECKOUT_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// A worker answers in milliseconds; a deadline is 10 s by default.
pub const STEP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// A confirm takes about a millisecond; the relay gives up after 5 s.
pub const PUBLISH_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

const REPLY_OUTCOMES: [&str; 3] = ["ok", "rejected", "transient"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use; a second instance in
/// the same process (as in tests) shares it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHECKOUT_DURATION.into()), &CHECKOUT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STEP_ROUND_TRIP.into()), &STEP_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(RELAY_PUBLISH.into()), &PUBLISH_BUCKETS)
                })
                .expect("the bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe_and_zero();
            handle
        })
        .clone()
}

/// Every series an alert or the dashboard reads exists from the start, at
/// zero: `increase()` over a series that appears with its first event
/// misses that event, and an absent series looks like a broken scrape.
fn describe_and_zero() {
    metrics::describe_histogram!(
        CHECKOUT_DURATION,
        Unit::Seconds,
        "From a checkout's POST to its final status (completed, compensated, cancelled)"
    );
    metrics::describe_histogram!(
        STEP_ROUND_TRIP,
        Unit::Seconds,
        "From a step's command going out to its reply being applied"
    );
    metrics::describe_histogram!(
        RELAY_PUBLISH,
        Unit::Seconds,
        "One outbox relay batch: its publishes and their confirms"
    );
    metrics::describe_counter!(REPLIES, "Worker replies applied, by step and outcome");
    metrics::describe_counter!(
        REPLIES_REFUSED,
        "Replies dead-lettered unapplied: sent by another RabbitMQ user than the step's worker (WORKER_USERS), by step"
    );
    metrics::describe_counter!(
        REPLY_COMMITS,
        "Commits that applied worker replies (replies ready together commit once)"
    );
    metrics::describe_counter!(
        REPLY_MISMATCHES,
        "Worker replies refused (the saga parked) because a field did not match what the saga expects, by step and field"
    );
    for (step, field) in crate::saga::expectations::FIELDS {
        metrics::counter!(REPLY_MISMATCHES, "step" => step.routing_key(), "field" => field)
            .absolute(0);
    }
    for counter in [
        SAGAS_STARTED,
        REPLY_COMMITS,
        OUTBOX_PUBLISHED,
        DEAD_LETTERS,
        API_OVERLOADED,
    ] {
        metrics::counter!(counter).absolute(0);
    }
    metrics::describe_counter!(
        CLIENT_REFUSED,
        "Checkouts answered 429 over a client's limit, by limit (rate, in_flight)"
    );
    for limit in ["rate", "in_flight"] {
        metrics::counter!(CLIENT_REFUSED, "limit" => limit).absolute(0);
    }
    for action in [Action::Retry, Action::Cancel] {
        metrics::counter!(SUPPORT_ACTIONS, "action" => action.as_str()).absolute(0);
    }
    for status in SagaStatus::ALL.iter().filter(|s| s.is_final()) {
        metrics::counter!(SAGAS_FINISHED, "status" => status.as_str()).absolute(0);
    }
    for step in Step::ALL {
        let step = step.routing_key();
        metrics::counter!(SAGAS_SUSPENDED, "step" => step).absolute(0);
        metrics::counter!(REPLIES_REFUSED, "step" => step).absolute(0);
        metrics::counter!(DEADLINES_MISSED, "step" => step).absolute(0);
        metrics::counter!(OUTBOX_REFUSED, "routing_key" => step).absolute(0);
        metrics::counter!(OUTBOX_PARKED, "routing_key" => step).absolute(0);
        for outcome in REPLY_OUTCOMES {
            metrics::counter!(REPLIES, "step" => step, "outcome" => outcome).absolute(0);
        }
    }
}

/// When a written transition happened, as the database saw it.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// Seconds from the saga's creation to this transition.
    pub since_created: f64,
    /// Milliseconds the awaited reply still had before its deadline when
    /// this transition was written (negative: past it).
    pub deadline_in_ms: Option<f64>,
}

/// What a committed transition did, counted and timed.
pub fn record(before: &Saga, transition: &Transition, clocks: Clocks, policies: &StepPolicies) {
    let after = transition.saga.status;
    if after.is_final() && !before.status.is_final() {
        metrics::counter!(SAGAS_FINISHED, "status" => after.as_str()).increment(1);
        metrics::histogram!(CHECKOUT_DURATION, "status" => after.as_str())
            .record(clocks.since_created.max(0.0));
    }
    if let Some((step, round_trip)) = round_trip(before, transition, clocks, policies) {
        metrics::histogram!(STEP_ROUND_TRIP, "step" => step.routing_key())
            .record(round_trip.as_secs_f64());
    }
    let before = before.status;
    if after == SagaStatus::Suspended && before != SagaStatus::Suspended {
        let step = transition.saga.current.map_or("none", |s| s.routing_key());
        metrics::counter!(SAGAS_SUSPENDED, "step" => step).increment(1);
    }
    if let Some(mismatch) = &transition.mismatch {
        metrics::counter!(REPLY_MISMATCHES, "step" => mismatch.step.routing_key(), "field" => mismatch.field)
            .increment(1);
        tracing::warn!(saga_id = %transition.saga.id, %mismatch, "reply does not match the saga: not applied, saga parked");
    }
    for entry in &transition.history {
        if entry.event == "deadline_missed" {
            let step = entry.step.map_or("none", |s| s.routing_key());
            metrics::counter!(DEADLINES_MISSED, "step" => step).increment(1);
        }
    }
}

/// The round trip of the awaited attempt this transition answered, if it
/// answered one. The attempt's deadline was set to its send time plus the
/// step's deadline (and moved to its publish time when it left the outbox
/// late), so what is left of it tells when the command went out.
fn round_trip(
    before: &Saga,
    transition: &Transition,
    clocks: Clocks,
    policies: &StepPolicies,
) -> Option<(Step, Duration)> {
    let step = before.current?;
    if !matches!(
        before.status,
        SagaStatus::Running | SagaStatus::Compensating
    ) {
        return None;
    }
    // A reply to the awaited attempt is the one timeline entry named after
    // its outcome; a late or duplicate reply is `late_*` and not timed.
    let replied = transition.history.iter().any(|entry| {
        entry.step == Some(step)
            && entry.attempt == before.attempt
            && REPLY_OUTCOMES.contains(&entry.event.as_str())
    });
    if !replied {
        return None;
    }
    let deadline_ms = policies.for_step(step).deadline.as_millis() as f64;
    let elapsed_ms = deadline_ms - clocks.deadline_in_ms?;
    Some((step, Duration::from_secs_f64(elapsed_ms.max(0.0) / 1000.0)))
}

#[cfg(test)]
mod tests {
    use saga_protocol::messages::Outcome;
    use uuid::Uuid;

    use super::*;
    use crate::saga::{self, CheckoutRequest, Context, Event};

    fn awaiting_reserve(policies: &StepPolicies) -> Saga {
        let ctx = Context {
            policies,
            jitter: 0.5,
        };
        saga::start(Uuid::now_v7(), CheckoutRequest::example(), ctx).saga
    }

    fn reply(saga: &Saga, attempt: u32, policies: &StepPolicies) -> Transition {
        let event = Event::Reply {
            step: Step::Reserve,
            attempt,
            outcome: Outcome::Transient {
                error: "busy".into(),
            },
        };
        let ctx = Context {
            policies,
            jitter: 0.5,
        };
        saga::handle(saga, event, ctx)
    }

    fn clocks(deadline_in_ms: f64) -> Clocks {
        Clocks {
            since_created: 1.0,
            deadline_in_ms: Some(deadline_in_ms),
        }
    }

    #[test]
    fn a_reply_to_the_awaited_attempt_is_timed_from_what_was_left_of_its_deadline() {
        let policies = StepPolicies::default();
        let before = awaiting_reserve(&policies);
        let deadline = policies.for_step(Step::Reserve).deadline.as_millis() as f64;
        let t = reply(&before, before.attempt, &policies);
        let (step, took) = round_trip(&before, &t, clocks(deadline - 250.0), &policies).unwrap();
        assert_eq!(step, Step::Reserve);
        assert_eq!(took, Duration::from_millis(250));
        // A reply after its deadline (the timer had not fired yet) is
        // timed in full, never negative.
        let (_, late) = round_trip(&before, &t, clocks(-1_000.0), &policies).unwrap();
        assert_eq!(late, Duration::from_millis(deadline as u64 + 1_000));
        let (_, clamped) = round_trip(&before, &t, clocks(deadline * 2.0), &policies).unwrap();
        assert_eq!(clamped, Duration::ZERO);
    }

    #[test]
    fn late_replies_and_missed_deadlines_are_not_timed() {
        let policies = StepPolicies::default();
        let before = awaiting_reserve(&policies);
        let stale = reply(&before, before.attempt + 7, &policies);
        assert_eq!(
            round_trip(&before, &stale, clocks(5_000.0), &policies),
            None
        );
        let missed = saga::handle(
            &before,
            Event::DeadlineMissed {
                step: Step::Reserve,
                attempt: before.attempt,
            },
            Context {
                policies: &policies,
                jitter: 0.5,
            },
        );
        assert_eq!(round_trip(&before, &missed, clocks(-5.0), &policies), None);
    }
}
