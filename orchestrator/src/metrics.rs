//! Prometheus metrics at `GET /metrics`: counters of what this process
//! did, and, counted in the database every few seconds, how many sagas are
//! in each status and how many commands wait in the outbox (the same truth
//! whichever instance is scraped).

use std::fmt::Write;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::listener::Waiters;

use crate::saga::{SagaStatus, Transition};

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
/// API requests answered `503 overloaded`: no pooled connection came free.
pub const API_OVERLOADED: &str = "checkout_api_overloaded_total";
const SAGAS: &str = "checkout_sagas";
const OUTBOX_PENDING: &str = "checkout_outbox_pending";
const LONG_POLLS: &str = "checkout_long_polls_waiting";
/// Commands the broker refused at least once and that are still unsent.
const OUTBOX_STUCK: &str = "checkout_outbox_stuck";

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

/// How often the saga and outbox gauges are re-counted.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// The database gauges as last counted. A scrape reads this, never the
/// tables: counting whole tables at every scrape of every instance is a
/// load the database should not carry.
#[derive(Debug, Clone, Default)]
pub struct DatabaseGauges {
    counted: Arc<RwLock<Option<Counted>>>,
}

#[derive(Debug, Clone)]
struct Counted {
    sagas: Vec<(SagaStatus, i64)>,
    outbox_pending: i64,
    outbox_stuck: i64,
}

impl DatabaseGauges {
    fn set(&self, counted: Counted) {
        *self
            .counted
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(counted);
    }

    /// Sagas by status as last counted; `None` before the first count.
    /// The console reads these too, so that every open console refreshing
    /// itself costs the database nothing more.
    pub fn saga_counts(&self) -> Option<Vec<(SagaStatus, i64)>> {
        self.get().map(|counted| counted.sagas)
    }

    fn get(&self) -> Option<Counted> {
        self.counted
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[tracing::instrument(skip_all)]
async fn count(pool: &PgPool) -> Result<Counted, sqlx::Error> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
            .fetch_all(pool)
            .await?;
    let (outbox_pending, outbox_stuck) =
        sqlx::query_as::<_, (i64, i64)>("SELECT count(*), count(first_failed_at) FROM outbox")
            .fetch_one(pool)
            .await?;
    let sagas = STATUSES
        .iter()
        .map(|status| {
            let n = counts
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            (*status, n)
        })
        .collect();
    Ok(Counted {
        sagas,
        outbox_pending,
        outbox_stuck,
    })
}

/// Re-counts the gauges every [`GAUGE_REFRESH`]; while the database does
/// not answer, the last counts stay.
pub async fn run_gauges_until_stopped(
    pool: PgPool,
    gauges: DatabaseGauges,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(GAUGE_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => break,
        }
        let counted = tokio::select! {
            counted = count(&pool) => counted,
            _ = stop.cancelled() => break,
        };
        match counted {
            Ok(counted) => gauges.set(counted),
            Err(error) => tracing::warn!(%error, "saga counts for /metrics not refreshed"),
        }
    }
}

/// The text a scrape gets: the process's counters, this instance's
/// long-polls, and the database gauges as last counted (left out until
/// counted once).
pub fn render(handle: &PrometheusHandle, gauges: &DatabaseGauges, waiters: &Waiters) -> String {
    let mut text = handle.render();
    // Written here rather than into the process-wide recorder: each
    // instance reports its own database and its own waiters.
    let _ = writeln!(
        text,
        "# TYPE {LONG_POLLS} gauge\n{LONG_POLLS} {}",
        waiters.waiting()
    );
    if let Some(counted) = gauges.get() {
        let _ = writeln!(text, "# TYPE {SAGAS} gauge");
        for (status, n) in &counted.sagas {
            let _ = writeln!(text, "{SAGAS}{{status=\"{}\"}} {n}", status.as_str());
        }
        let _ = writeln!(
            text,
            "# TYPE {OUTBOX_PENDING} gauge\n{OUTBOX_PENDING} {}",
            counted.outbox_pending
        );
        let _ = writeln!(
            text,
            "# TYPE {OUTBOX_STUCK} gauge\n{OUTBOX_STUCK} {}",
            counted.outbox_stuck
        );
    }
    text
}
