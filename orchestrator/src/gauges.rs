//! The database gauges at `GET /metrics`: counted in the database every
//! few seconds, how many sagas are in each status and how many commands
//! wait in the outbox, and for how long (the same truth whichever instance
//! is scraped), with this instance's long polls and broker state, written
//! after the process's counters and histograms ([`crate::metrics`]).

use std::fmt::Write;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::listener::Waiters;
use crate::saga::SagaStatus;
use crate::store::saga_tally::SagaTally;
use crate::store::{Store, StoreError};

const SAGAS: &str = "checkout_sagas";
const OUTBOX_PENDING: &str = "checkout_outbox_pending";
const LONG_POLLS: &str = "checkout_long_polls_waiting";
/// Commands the broker refused at least once and that are still unsent.
const OUTBOX_STUCK: &str = "checkout_outbox_stuck";
/// How long the oldest due, unsent command has waited past its due time.
const OUTBOX_OLDEST: &str = "checkout_outbox_oldest_due_seconds";
/// 1 while RabbitMQ blocks this instance's publishing connection.
const BROKER_BLOCKED: &str = "checkout_broker_blocked";

/// How often the saga and outbox gauges are re-counted.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// The database gauges as last counted. A scrape reads this, never the
/// tables: counting whole tables at every scrape of every instance is a
/// load the database should not carry.
#[derive(Debug, Clone, Default)]
pub struct DatabaseGauges {
    counted: Arc<RwLock<Option<Counted>>>,
    /// Each count, for whoever waits for the first.
    recounted: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Clone)]
struct Counted {
    sagas: Vec<(SagaStatus, i64)>,
    outbox_pending: i64,
    outbox_stuck: i64,
    outbox_oldest_due_seconds: f64,
}

impl DatabaseGauges {
    fn set(&self, counted: Counted) {
        *self
            .counted
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(counted);
        self.recounted.notify_waiters();
    }

    /// Sagas by status as last counted, once counted: right after start,
    /// the first count is awaited rather than made again here.
    pub async fn saga_counts_once_counted(&self) -> Vec<(SagaStatus, i64)> {
        loop {
            let mut recounted = std::pin::pin!(self.recounted.notified());
            recounted.as_mut().enable();
            if let Some(counts) = self.saga_counts() {
                return counts;
            }
            recounted.await;
        }
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
async fn count(store: &Store, tally: &mut SagaTally) -> Result<Counted, StoreError> {
    let sagas = store.count_sagas(tally).await?;
    let backlog = store.outbox().backlog().await?;
    Ok(Counted {
        sagas,
        outbox_pending: backlog.pending,
        outbox_stuck: backlog.stuck,
        outbox_oldest_due_seconds: backlog.oldest_due_seconds,
    })
}

/// Re-counts the gauges every [`GAUGE_REFRESH`]; while the database does
/// not answer, the last counts stay.
pub async fn run_gauges_until_stopped(
    store: Store,
    gauges: DatabaseGauges,
    stop: CancellationToken,
) {
    let mut tally = SagaTally::default();
    let mut every = tokio::time::interval(GAUGE_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => break,
        }
        let counted = tokio::select! {
            counted = count(&store, &mut tally) => counted,
            _ = stop.cancelled() => break,
        };
        match counted {
            Ok(counted) => gauges.set(counted),
            Err(error) => tracing::warn!(%error, "saga counts for /metrics not refreshed"),
        }
    }
}

/// The text a scrape gets: the process's counters and histograms, this
/// instance's long-polls and broker state, and the database gauges as last
/// counted (left out until counted once).
pub fn render(
    handle: &PrometheusHandle,
    gauges: &DatabaseGauges,
    waiters: &Waiters,
    broker_blocked: bool,
) -> String {
    let mut text = handle.render();
    // Written here rather than into the process-wide recorder: each
    // instance reports its own database, its own waiters and its own
    // connection.
    let _ = writeln!(
        text,
        "# TYPE {LONG_POLLS} gauge\n{LONG_POLLS} {}",
        waiters.waiting()
    );
    let _ = writeln!(
        text,
        "# HELP {BROKER_BLOCKED} 1 while RabbitMQ blocks publishing (a memory or disk alarm)\n# TYPE {BROKER_BLOCKED} gauge\n{BROKER_BLOCKED} {}",
        u8::from(broker_blocked)
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
        let _ = writeln!(
            text,
            "# TYPE {OUTBOX_OLDEST} gauge\n{OUTBOX_OLDEST} {:.3}",
            counted.outbox_oldest_due_seconds
        );
    }
    text
}
