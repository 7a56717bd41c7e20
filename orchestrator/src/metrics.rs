//! Prometheus metrics at `GET /metrics`: counters of what this process
//! did, and, read from the database at each scrape, how many sagas are in
//! each status and how many commands wait in the outbox (the same truth
//! whichever instance is scraped).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::saga::{SagaStatus, Transition};

pub const SAGAS_STARTED: &str = "checkout_sagas_started_total";
pub const SAGAS_FINISHED: &str = "checkout_sagas_finished_total";
pub const SAGAS_SUSPENDED: &str = "checkout_sagas_suspended_total";
pub const DEADLINES_MISSED: &str = "checkout_deadlines_missed_total";
pub const OUTBOX_PUBLISHED: &str = "checkout_outbox_published_total";
pub const DEAD_LETTERS: &str = "checkout_dead_letters_total";
pub const SUPPORT_ACTIONS: &str = "checkout_support_actions_total";
/// API requests answered `503 overloaded`: no pooled connection came free.
pub const API_OVERLOADED: &str = "checkout_api_overloaded_total";
const SAGAS: &str = "checkout_sagas";
const OUTBOX_PENDING: &str = "checkout_outbox_pending";

const STATUSES: [SagaStatus; 6] = [
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Suspended,
    SagaStatus::Completed,
    SagaStatus::Compensated,
    SagaStatus::Cancelled,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use; a second instance in
/// the same process (as in tests) shares it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// What a committed transition did, counted.
pub fn record(before: SagaStatus, transition: &Transition) {
    let after = transition.saga.status;
    if after.is_final() && !before.is_final() {
        metrics::counter!(SAGAS_FINISHED, "status" => after.as_str()).increment(1);
    }
    if after == SagaStatus::Suspended && before != SagaStatus::Suspended {
        let step = transition.saga.current.map_or("none", |s| s.routing_key());
        metrics::counter!(SAGAS_SUSPENDED, "step" => step).increment(1);
    }
    for entry in &transition.history {
        if entry.event == "deadline_missed" {
            let step = entry.step.map_or("none", |s| s.routing_key());
            metrics::counter!(DEADLINES_MISSED, "step" => step).increment(1);
        }
    }
}

/// The text a scrape gets. The database gauges are left out (and the
/// counters still served) when the database does not answer.
pub async fn render(handle: &PrometheusHandle, pool: &PgPool) -> String {
    let counts: Result<Vec<(String, i64)>, sqlx::Error> =
        sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
            .fetch_all(pool)
            .await;
    match counts {
        Ok(counts) => {
            for status in STATUSES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(SAGAS, "status" => status.as_str()).set(n as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "saga counts unavailable for /metrics"),
    }
    if let Ok(pending) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
    {
        metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
    }
    handle.render()
}
