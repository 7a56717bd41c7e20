//! The outbox relay: publishes committed commands with confirms, then
//! deletes them. The instance that commits a transition wakes its own relay
//! right after the commit; the timed wake-up is the timer of delayed
//! retries and the fallback that picks up rows an instance that died left
//! behind (any instance's relay publishes any due row).
//!
//! Each publish is judged on its own: a command the broker refuses (nacks,
//! returns unroutable, never confirms) backs off alone while the rest of
//! its batch is sent and deleted, and once it has been refused for longer
//! than its step allows, its saga parks for support (here, or in the
//! deadline timer should it come first).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use saga_shared::broker::{Backoff, Broker, BrokerError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handoff::{publish_span, publish_with_confirms, Confirmed};
use crate::saga::{Event, RetryPolicy};
use crate::store::outbox::{Handed, OutboxRow, Parked, PutBack};
use crate::store::{Store, StoreError};

/// Rows published per transaction.
const BATCH: i64 = 256;
/// Longest sleep with nothing due: a safety net should a wake-up be lost.
const FALLBACK_POLL: Duration = Duration::from_secs(2);
pub async fn run_relay_until_stopped(
    store: Store,
    broker: Arc<Broker>,
    wake: Arc<Notify>,
    mut confirmed: Confirmed,
    stop: CancellationToken,
) {
    let fresh = Backoff::holding;
    let mut backoff = fresh();
    // When the outbox is to be claimed next; at start, at once: rows an
    // earlier run left.
    let mut next_claim = Instant::now();
    let mut published = Vec::new();
    loop {
        if broker.blocked().is_some() {
            // A publish now would wait for the alarm to clear inside the
            // batch's transaction, holding its rows locked and a pooled
            // connection for as long as the alarm lasts: hold the outbox
            // until it clears instead.
            tokio::select! {
                _ = broker.unblocked() => {}
                _ = stop.cancelled() => break,
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = confirmed.rows.recv_many(&mut published, BATCH as usize) => {
                let rows: Vec<Handed> = published.drain(..).flatten().collect();
                store.outbox().delete_published(&rows).await;
                // Under load confirmations keep coming: the claiming path
                // still gets its turn once woken or due.
                let woken = wake.notified().now_or_never().is_some();
                if !woken && Instant::now() < next_claim {
                    continue;
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(next_claim) => {}
        }
        if broker.blocked().is_some() {
            // Blocked while this waited: hold, as above.
            continue;
        }
        let sleep_for = match relay_batch(&store, &broker).await {
            Ok(Relayed { rows, .. }) if rows as i64 == BATCH => Duration::ZERO,
            Ok(Relayed {
                next_due: Some(next_due),
                ..
            }) => {
                backoff = fresh();
                next_due
            }
            Ok(Relayed { next_due: None, .. }) => {
                backoff = fresh();
                next_due(&store).await.unwrap_or(FALLBACK_POLL)
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "outbox relay failed; retrying");
                wait
            }
        };
        next_claim = Instant::now() + sleep_for;
    }
    // Publishes in flight finish (their confirms are awaited for a bounded
    // time), and what was confirmed is deleted, not published again.
    confirmed.publishing.close();
    confirmed.publishing.wait().await;
    confirmed.rows.close();
    let mut rows = Vec::new();
    while let Ok(more) = confirmed.rows.try_recv() {
        rows.extend(more);
    }
    store.outbox().delete_published(&rows).await;
    tracing::info!("outbox relay stopped");
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one batch did: the rows it claimed, and, when it could tell
/// without another statement, how long until the next row is due.
struct Relayed {
    rows: usize,
    next_due: Option<Duration>,
}

/// A row the broker refused, and what becomes of it.
struct Refused<'a> {
    row: &'a OutboxRow,
    error: BrokerError,
    /// Refused for longer than its step allows: its saga parks.
    park: bool,
}

/// Publishes the due rows this instance could lock and settles each on its
/// own: confirmed rows are deleted, refused rows back off (and park their
/// saga once refused for too long), and rows a broken connection never
/// sent stay as they were. `SKIP LOCKED` lets several orchestrators relay
/// at once without publishing a row twice; a crash between confirm and
/// commit republishes, and the worker inbox absorbs the duplicate.
///
/// The rows are claimed by deleting them in the batch's transaction, which
/// commits only after their confirms: the common batch, every row
/// confirmed, is one statement (which also tells when the next row is
/// due). A row not confirmed is put back in the same transaction, as it
/// was or with its backoff, under its own id.
// At debug: a poll that finds nothing must not be a trace of its own every
// few seconds; each row's publish has its own span in its checkout's trace.
#[tracing::instrument(level = "debug", skip_all, fields(published, refused))]
async fn relay_batch(store: &Store, broker: &Broker) -> Result<Relayed, RelayError> {
    let outbox = store.outbox();
    let (claim, rows) = outbox.claim(BATCH).await?;
    if rows.is_empty() {
        return Ok(Relayed {
            rows: 0,
            next_due: None,
        });
    }
    let spans: Vec<tracing::Span> = rows
        .iter()
        .map(|row| publish_span(&row.command, row.attempt(), row.publish_attempts))
        .collect();
    let results = publish_with_confirms(broker, rows.iter().map(|r| &r.command).zip(&spans)).await;

    let mut sent = Vec::new();
    let mut refused = Vec::new();
    let mut broken = None;
    for ((row, result), span) in rows.iter().zip(results).zip(spans) {
        match &result {
            Ok(()) => span.record("outcome", "confirmed"),
            Err(error) if error.is_refusal() => span.record("outcome", "refused"),
            Err(_) => span.record("outcome", "unsent"),
        };
        if let Err(error) = &result {
            span.record("error", tracing::field::display(error));
        }
        match result {
            Ok(()) => sent.push(row),
            // Under a resource alarm no refusal is the row's own doing.
            Err(error) if error.is_refusal() && broker.blocked().is_none() => {
                let policy = policy_for(store, row);
                let park =
                    row.refused_ms.unwrap_or(0.0) >= policy.publish_allowance().as_millis() as f64;
                refused.push(Refused { row, error, park });
            }
            // Not this row's doing: it stays as it was, for the next try.
            Err(error) => {
                broken.get_or_insert(error);
            }
        }
    }
    if refused
        .iter()
        .any(|r| matches!(r.error, BrokerError::Unroutable { .. }))
    {
        // A queue is gone (deleted by hand, or lost with its node):
        // declaring the topology again brings it back for the next try.
        match broker.redeclare().await {
            Ok(()) => tracing::warn!("a command was unroutable; topology declared again"),
            Err(error) => {
                tracing::warn!(%error, "a command was unroutable; cannot declare the topology")
            }
        }
    }

    let unsent: Vec<&OutboxRow> = if broken.is_some() {
        let settled: std::collections::HashSet<i64> = sent
            .iter()
            .map(|row| row.id)
            .chain(refused.iter().map(|r| r.row.id))
            .collect();
        rows.iter()
            .filter(|row| !settled.contains(&row.id))
            .collect()
    } else {
        Vec::new()
    };
    let back: Vec<PutBack> = refused
        .iter()
        .map(|r| {
            let refusals = u32::try_from(r.row.publish_attempts).unwrap_or(0) + 1;
            let wait = policy_for(store, r.row).publish_backoff(refusals, rand::random::<f64>());
            PutBack {
                row: r.row,
                refusal: Some((r.error.to_string(), wait)),
            }
        })
        .chain(unsent.iter().map(|row| PutBack { row, refusal: None }))
        .collect();
    claim.commit(&back).await?;
    // Whatever was put back may be due before the rows the claim saw.
    let next_due =
        (refused.is_empty() && unsent.is_empty()).then(|| until_due(rows[0].next_due_ms));

    let span = tracing::Span::current();
    span.record("published", sent.len());
    span.record("refused", refused.len());
    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED).increment(sent.len() as u64);
    for r in &refused {
        tracing::warn!(saga_id = %r.row.command.saga_id, routing_key = %r.row.command.routing_key, error = %r.error, "command refused by the broker; backing off");
        metrics::counter!(crate::metrics::OUTBOX_REFUSED, "routing_key" => r.row.command.routing_key.clone())
            .increment(1);
    }
    outbox.restart_deadlines(&sent).await;
    for r in refused.iter().filter(|r| r.park) {
        if let Err(error) = park(store, r).await {
            tracing::error!(%error, saga_id = %r.row.command.saga_id, "cannot park the saga of a refused command; it stays in the outbox");
        }
    }
    match broken {
        // The confirmed rows are deleted all the same; the relay as a
        // whole backs off.
        Some(error) => Err(error.into()),
        None => Ok(Relayed {
            rows: rows.len(),
            next_due,
        }),
    }
}

fn policy_for(store: &Store, row: &OutboxRow) -> RetryPolicy {
    row.step()
        .map(|step| *store.policies().for_step(step))
        .unwrap_or_default()
}

/// Parks the saga of a command refused for longer than its step allows,
/// and drops the command ([`Store::park_refused`]).
async fn park(store: &Store, refused: &Refused<'_>) -> Result<(), RelayError> {
    let row = refused.row;
    let (Some(step), Some(attempt)) = (row.step(), row.attempt()) else {
        return Ok(());
    };
    let parked = store
        .park_refused(row, |tries| Event::PublishFailed {
            step,
            attempt,
            error: refused.error.to_string(),
            tries,
            refused_for: Duration::from_millis(row.refused_ms.unwrap_or(0.0) as u64),
        })
        .await?;
    match parked {
        Parked::Gone => {}
        Parked::Parked => {
            metrics::counter!(crate::metrics::OUTBOX_PARKED, "routing_key" => row.command.routing_key.clone())
                .increment(1);
            tracing::warn!(saga_id = %row.command.saga_id, routing_key = %row.command.routing_key, error = %refused.error, "saga parked: its command cannot be published");
        }
        Parked::Dropped => {
            tracing::warn!(saga_id = %row.command.saga_id, routing_key = %row.command.routing_key, "dropped a refused command its saga no longer awaits");
        }
    }
    Ok(())
}

/// How long until the next delayed row is due (capped by the fallback poll).
async fn next_due(store: &Store) -> Result<Duration, sqlx::Error> {
    Ok(until_due(store.outbox().next_due_ms().await?))
}

/// The sleep before a row due in `ms` (none: no row), capped by the
/// fallback poll.
fn until_due(ms: Option<f64>) -> Duration {
    match ms {
        Some(ms) if ms > 0.0 => Duration::from_millis(ms as u64).min(FALLBACK_POLL),
        Some(_) => Duration::ZERO,
        None => FALLBACK_POLL,
    }
}
