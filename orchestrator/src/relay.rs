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

use chrono::{DateTime, Utc};
use futures::FutureExt;
use saga_shared::broker::{Backoff, Broker, BrokerError, Outgoing};
use saga_shared::messages::Command;
use saga_shared::{traceparent, Envelope, Step};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handoff::{Confirmed, Handed, LEASE};
use crate::saga::{Event, RetryPolicy};
use crate::store::{Store, StoreError};

/// Rows published per transaction.
const BATCH: i64 = 256;
/// Longest sleep with nothing due: a safety net should a wake-up be lost.
const FALLBACK_POLL: Duration = Duration::from_secs(2);
/// How long a batch waits for its confirms. A queue without a leader (its
/// quorum lost) may never confirm; its messages count as refused rather
/// than holding every other command back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);
/// A handed command whose lease ends within this is left to the claiming
/// path: the lease must outlast its publish and confirm.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    /// As stored, to put back a row that was claimed but not published.
    not_before: DateTime<Utc>,
    first_failed_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    stored_deadline_ms: Option<i64>,
    /// Milliseconds until the first row this batch did not claim is due,
    /// the same in every row (`None` when no other row is there).
    next_due_ms: Option<f64>,
    message_id: Uuid,
    saga_id: Uuid,
    routing_key: String,
    message_type: String,
    body: String,
    traceparent: String,
    /// `None` in a row an instance of the previous build wrote.
    attempt: Option<i32>,
    publish_attempts: i32,
    /// Milliseconds since the broker first refused this row, if it has.
    refused_ms: Option<f64>,
    deadline_ms: Option<i64>,
}

impl OutboxRow {
    fn step(&self) -> Option<Step> {
        Step::from_routing_key(&self.routing_key)
    }

    /// The saga attempt the command carries.
    fn attempt(&self) -> Option<u32> {
        match self.attempt {
            Some(attempt) => u32::try_from(attempt).ok(),
            None => Envelope::<Command>::decode(self.body.as_bytes())
                .ok()
                .map(|envelope| envelope.attempt),
        }
    }
}

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
                delete_published(store.pool(), &rows).await;
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
                next_due(store.pool()).await.unwrap_or(FALLBACK_POLL)
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
    delete_published(store.pool(), &rows).await;
    tracing::info!("outbox relay stopped");
}

/// Deletes the rows of handed commands the broker confirmed, in one
/// statement however many commits they came from.
///
/// Found through the saga index: a message id belongs to one saga, so the
/// two lists select exactly the pairs. A join with the pairs was planned
/// as a scan of the whole table, which under load is mostly rows deleted
/// since the last vacuum (0.60 ms a delete, against 0.25 ms now).
async fn delete_published(pool: &PgPool, rows: &[Handed]) {
    if rows.is_empty() {
        return;
    }
    let deleted =
        sqlx::query("DELETE FROM outbox WHERE saga_id = ANY($1) AND message_id = ANY($2)")
            .bind(rows.iter().map(|c| c.saga_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.message_id).collect::<Vec<_>>())
            .execute(pool)
            .await;
    if let Err(error) = deleted {
        // Published all the same: once their lease ends a relay sends
        // them again, and the workers' inboxes answer the duplicates.
        tracing::warn!(%error, commands = rows.len(), "cannot delete published commands");
    }
}

/// What became of commands handed over by their commit.
pub struct HandedPublish {
    /// Published and confirmed: their rows are to be deleted.
    pub confirmed: Vec<Handed>,
    /// Some were left to the claiming path (not confirmed, or their lease
    /// about to end): it should look now.
    pub left_to_relay: bool,
}

/// Publishes commands handed over by the transition that committed them,
/// from memory. The rows of commands not confirmed are released to the
/// claiming path (due at once), which backs off, parks or waits out an
/// outage as for any row.
#[tracing::instrument(level = "debug", skip_all, fields(published, released))]
pub async fn publish_handed(
    pool: &PgPool,
    broker: &Broker,
    commands: Vec<Handed>,
    committed_at: Instant,
) -> HandedPublish {
    // Close to its lease's end a row may be claimed by any relay at any
    // moment: leave it to them rather than publish it twice. Under a
    // resource alarm the claiming path holds every row until it clears.
    if committed_at + LEASE - LEASE_MARGIN <= Instant::now() || broker.blocked().is_some() {
        return left_to_relay(pool, commands).await;
    }
    let exchange = broker.topology().command_exchange();
    let spans: Vec<tracing::Span> = commands.iter().map(handed_span).collect();
    let messages: Vec<Outgoing> = commands
        .iter()
        .zip(&spans)
        .map(|(command, span)| Outgoing {
            exchange: exchange.clone(),
            routing_key: command.routing_key.clone(),
            body: command.body.clone().into_bytes(),
            message_id: command.message_id,
            saga_id: command.saga_id,
            message_type: command.message_type.clone(),
            traceparent: traceparent::of(span).unwrap_or_else(|| command.traceparent.clone()),
        })
        .collect();
    let publishing = std::time::Instant::now();
    let results = broker.publish_all(&messages, CONFIRM_WITHIN).await;
    metrics::histogram!(crate::metrics::RELAY_PUBLISH).record(publishing.elapsed().as_secs_f64());
    let (mut confirmed, mut unsent) = (Vec::new(), Vec::new());
    for ((command, result), span) in commands.into_iter().zip(results).zip(spans) {
        match result {
            Ok(()) => {
                span.record("outcome", "confirmed");
                confirmed.push(command);
            }
            Err(error) => {
                span.record("outcome", "released");
                span.record("error", tracing::field::display(&error));
                unsent.push(command);
            }
        }
    }
    let span = tracing::Span::current();
    span.record("published", confirmed.len());
    span.record("released", unsent.len());
    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED).increment(confirmed.len() as u64);
    if unsent.is_empty() {
        return HandedPublish {
            confirmed,
            left_to_relay: false,
        };
    }
    tracing::warn!(
        commands = unsent.len(),
        "handed commands not confirmed; the outbox relay takes them over"
    );
    HandedPublish {
        confirmed,
        left_to_relay: left_to_relay(pool, unsent).await.left_to_relay,
    }
}

/// Leaves `commands` to the claiming path: released when they can be,
/// else (the database away) once their lease ends.
async fn left_to_relay(pool: &PgPool, commands: Vec<Handed>) -> HandedPublish {
    if let Err(error) = release(pool, &commands).await {
        tracing::warn!(%error, commands = commands.len(), "cannot release handed commands; they wait out their lease");
    }
    HandedPublish {
        confirmed: Vec::new(),
        left_to_relay: true,
    }
}

/// Makes handed rows due at once, for whichever relay claims first.
async fn release(pool: &PgPool, commands: &[Handed]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET not_before = now()
         WHERE saga_id = ANY($1) AND message_id = ANY($2)",
    )
    .bind(commands.iter().map(|c| c.saga_id).collect::<Vec<_>>())
    .bind(commands.iter().map(|c| c.message_id).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// A handed command's publish span: a child of the transition that wrote
/// it, as for a claimed row.
fn handed_span(command: &Handed) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        saga_id = %command.saga_id,
        routing_key = %command.routing_key,
        attempt = command.attempt,
        publish_attempts = 0,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    traceparent::continue_from(&span, Some(&command.traceparent));
    span
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
    let pool = store.pool();
    let mut tx = pool.begin().await?;
    // The statement does not see its own deletes: the next due row is
    // looked for among the rows it did not claim.
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "WITH claimed AS (
             DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox WHERE not_before <= now()
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING *
         )
         SELECT id, message_id, saga_id, routing_key, message_type, body, traceparent, attempt,
                publish_attempts, not_before, first_failed_at, last_error, created_at,
                deadline_ms AS stored_deadline_ms,
                (EXTRACT(EPOCH FROM (now() - first_failed_at)) * 1000)::float8 AS refused_ms,
                -- Late: it waited in the outbox well past its due time (the
                -- broker was away, or refused it), so the deadline set with
                -- it is too soon.
                -- A row handed to the instance that wrote it is claimed
                -- here only after its lease, so late by then.
                CASE WHEN publish_attempts > 0 OR not_before < now() - interval '1 second'
                          OR created_at < now() - interval '1 second'
                     THEN deadline_ms END AS deadline_ms,
                (SELECT (EXTRACT(EPOCH FROM (min(o.not_before) - now())) * 1000)::float8
                 FROM outbox o WHERE o.id NOT IN (SELECT id FROM claimed)) AS next_due_ms
         FROM claimed ORDER BY id",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(Relayed {
            rows: 0,
            next_due: None,
        });
    }
    let exchange = broker.topology().command_exchange();
    let spans: Vec<tracing::Span> = rows.iter().map(publish_span).collect();
    let messages: Vec<Outgoing> = rows
        .iter()
        .zip(&spans)
        .map(|(row, span)| Outgoing {
            exchange: exchange.clone(),
            routing_key: row.routing_key.clone(),
            body: row.body.clone().into_bytes(),
            message_id: row.message_id,
            saga_id: row.saga_id,
            message_type: row.message_type.clone(),
            // The worker's span becomes a child of this publish.
            traceparent: traceparent::of(span).unwrap_or_else(|| row.traceparent.clone()),
        })
        .collect();
    let publishing = std::time::Instant::now();
    let results = broker.publish_all(&messages, CONFIRM_WITHIN).await;
    metrics::histogram!(crate::metrics::RELAY_PUBLISH).record(publishing.elapsed().as_secs_f64());

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
    put_back(&mut tx, store, &refused, &unsent).await?;
    tx.commit().await?;
    // Whatever was put back may be due before the rows the claim saw.
    let next_due =
        (refused.is_empty() && unsent.is_empty()).then(|| until_due(rows[0].next_due_ms));

    let span = tracing::Span::current();
    span.record("published", sent.len());
    span.record("refused", refused.len());
    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED).increment(sent.len() as u64);
    for r in &refused {
        tracing::warn!(saga_id = %r.row.saga_id, routing_key = %r.row.routing_key, error = %r.error, "command refused by the broker; backing off");
        metrics::counter!(crate::metrics::OUTBOX_REFUSED, "routing_key" => r.row.routing_key.clone())
            .increment(1);
    }
    restart_deadlines(pool, &sent).await;
    for r in refused.iter().filter(|r| r.park) {
        if let Err(error) = park(store, r).await {
            tracing::error!(%error, saga_id = %r.row.saga_id, "cannot park the saga of a refused command; it stays in the outbox");
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

/// One command's publish, from the pipelined send to its confirm: a child
/// of the transition that wrote the row (its context is stored with the
/// row), whichever instance and task publish it, however much later.
fn publish_span(row: &OutboxRow) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        saga_id = %row.saga_id,
        routing_key = %row.routing_key,
        attempt = row.attempt(),
        publish_attempts = row.publish_attempts,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    traceparent::continue_from(&span, Some(&row.traceparent));
    span
}

fn policy_for(store: &Store, row: &OutboxRow) -> RetryPolicy {
    row.step()
        .map(|step| *store.policies().for_step(step))
        .unwrap_or_default()
}

/// Puts the claimed rows that were not confirmed back, in one statement,
/// under their own ids: a row a broken connection never sent as it was; a
/// refused row after its own backoff, grown with its own refusals, keeping
/// the time of the first refusal and the text of the last.
async fn put_back(
    tx: &mut sqlx::PgConnection,
    store: &Store,
    refused: &[Refused<'_>],
    unsent: &[&OutboxRow],
) -> Result<(), sqlx::Error> {
    if refused.is_empty() && unsent.is_empty() {
        return Ok(());
    }
    let mut back = Back::default();
    for r in refused {
        let refusals = u32::try_from(r.row.publish_attempts).unwrap_or(0) + 1;
        let wait = policy_for(store, r.row).publish_backoff(refusals, rand::random::<f64>());
        back.push(r.row, Some((r.error.to_string(), wait.as_millis() as i64)));
    }
    for row in unsent {
        back.push(row, None);
    }
    sqlx::query(
        "INSERT INTO outbox (id, message_id, saga_id, routing_key, message_type, body, traceparent,
                             not_before, created_at, deadline_ms, attempt, publish_attempts,
                             first_failed_at, last_error)
         SELECT b.id, b.message_id, b.saga_id, b.routing_key, b.message_type, b.body, b.traceparent,
                CASE WHEN b.refused THEN now() + b.wait_ms * interval '1 millisecond'
                     ELSE b.not_before END,
                b.created_at, b.deadline_ms, b.attempt,
                b.publish_attempts + CASE WHEN b.refused THEN 1 ELSE 0 END,
                CASE WHEN b.refused THEN coalesce(b.first_failed_at, now())
                     ELSE b.first_failed_at END,
                CASE WHEN b.refused THEN b.error ELSE b.last_error END
         FROM unnest($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::timestamptz[], $9::timestamptz[], $10::int8[], $11::int4[],
                     $12::int4[], $13::timestamptz[], $14::text[], $15::bool[], $16::text[],
                     $17::int8[])
              AS b(id, message_id, saga_id, routing_key, message_type, body, traceparent,
                   not_before, created_at, deadline_ms, attempt, publish_attempts,
                   first_failed_at, last_error, refused, error, wait_ms)",
    )
    .bind(back.id)
    .bind(back.message_id)
    .bind(back.saga_id)
    .bind(back.routing_key)
    .bind(back.message_type)
    .bind(back.body)
    .bind(back.traceparent)
    .bind(back.not_before)
    .bind(back.created_at)
    .bind(back.deadline_ms)
    .bind(back.attempt)
    .bind(back.publish_attempts)
    .bind(back.first_failed_at)
    .bind(back.last_error)
    .bind(back.refused)
    .bind(back.error)
    .bind(back.wait_ms)
    .execute(tx)
    .await?;
    Ok(())
}

/// The columns of the rows [`put_back`] writes, one array each.
#[derive(Default)]
struct Back {
    id: Vec<i64>,
    message_id: Vec<Uuid>,
    saga_id: Vec<Uuid>,
    routing_key: Vec<String>,
    message_type: Vec<String>,
    body: Vec<String>,
    traceparent: Vec<String>,
    not_before: Vec<DateTime<Utc>>,
    created_at: Vec<DateTime<Utc>>,
    deadline_ms: Vec<Option<i64>>,
    attempt: Vec<Option<i32>>,
    publish_attempts: Vec<i32>,
    first_failed_at: Vec<Option<DateTime<Utc>>>,
    last_error: Vec<Option<String>>,
    refused: Vec<bool>,
    error: Vec<Option<String>>,
    wait_ms: Vec<i64>,
}

impl Back {
    /// `refusal`: the broker's error and the backoff, for a refused row.
    fn push(&mut self, row: &OutboxRow, refusal: Option<(String, i64)>) {
        self.id.push(row.id);
        self.message_id.push(row.message_id);
        self.saga_id.push(row.saga_id);
        self.routing_key.push(row.routing_key.clone());
        self.message_type.push(row.message_type.clone());
        self.body.push(row.body.clone());
        self.traceparent.push(row.traceparent.clone());
        self.not_before.push(row.not_before);
        self.created_at.push(row.created_at);
        self.deadline_ms.push(row.stored_deadline_ms);
        self.attempt.push(row.attempt);
        self.publish_attempts.push(row.publish_attempts);
        self.first_failed_at.push(row.first_failed_at);
        self.last_error.push(row.last_error.clone());
        self.refused.push(refusal.is_some());
        let (error, wait_ms) = refusal.map_or((None, 0), |(error, ms)| (Some(error), ms));
        self.error.push(error);
        self.wait_ms.push(wait_ms);
    }
}

/// Parks the saga of a command refused for longer than its step allows
/// and drops the command, in one transaction: a parked saga awaits
/// nothing, and support's retry sends the command anew.
async fn park(store: &Store, refused: &Refused<'_>) -> Result<(), RelayError> {
    let row = refused.row;
    let (Some(step), Some(attempt)) = (row.step(), row.attempt()) else {
        return Ok(());
    };
    let mut tx = store.pool().begin().await?;
    // Another instance may have published it since this batch committed.
    let still: Option<i32> = sqlx::query_scalar(
        "SELECT publish_attempts FROM outbox
         WHERE id = $1 AND first_failed_at IS NOT NULL FOR UPDATE SKIP LOCKED",
    )
    .bind(row.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(tries) = still else {
        return Ok(());
    };
    let event = Event::PublishFailed {
        step,
        attempt,
        error: refused.error.to_string(),
        tries: u32::try_from(tries).unwrap_or(0),
        refused_for: Duration::from_millis(row.refused_ms.unwrap_or(0.0) as u64),
    };
    let parked = store
        .park_unpublishable(&mut tx, row.saga_id, event)
        .await?;
    sqlx::query("DELETE FROM outbox WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if parked {
        metrics::counter!(crate::metrics::OUTBOX_PARKED, "routing_key" => row.routing_key.clone())
            .increment(1);
        tracing::warn!(saga_id = %row.saga_id, routing_key = %row.routing_key, error = %refused.error, "saga parked: its command cannot be published");
    } else {
        tracing::warn!(saga_id = %row.saga_id, routing_key = %row.routing_key, "dropped a refused command its saga no longer awaits");
    }
    Ok(())
}

/// An attempt's deadline counts from its publishing: a command that
/// waited in the outbox (the broker was away, or refused it) still gets its
/// whole deadline. Only late rows carry a `deadline_ms` here; a row
/// published on time keeps the deadline set with its transition, and costs
/// no statement. Best effort, after the commit: should it fail, the
/// deadline set with the transition stands, and the deadline timer does not
/// count a miss while the command is still unsent anyway.
async fn restart_deadlines(pool: &PgPool, rows: &[&OutboxRow]) {
    let (ids, waits): (Vec<Uuid>, Vec<i64>) = rows
        .iter()
        .filter_map(|row| Some((row.saga_id, row.deadline_ms?)))
        .unzip();
    if ids.is_empty() {
        return;
    }
    let moved = sqlx::query(
        "UPDATE sagas s SET deadline_at = greatest(s.deadline_at, now() + d.ms * interval '1 millisecond')
         FROM unnest($1::uuid[], $2::int8[]) AS d(id, ms)
         WHERE s.id = d.id AND s.deadline_at IS NOT NULL",
    )
    .bind(&ids)
    .bind(&waits)
    .execute(pool)
    .await;
    if let Err(error) = moved {
        tracing::warn!(%error, "could not restart reply deadlines from publish time");
    }
}

/// How long until the next delayed row is due (capped by the fallback poll).
async fn next_due(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let ms: Option<f64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM (min(not_before) - now())) * 1000)::float8 FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(until_due(ms))
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

/// A command the broker refused and that is still unsent, for support.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RefusedCommand {
    /// The outbox row; also the cursor of the next page.
    pub id: i64,
    pub saga_id: Uuid,
    pub routing_key: String,
    /// The saga's attempt of the step this command carries (`null` for a
    /// row an instance of the previous build wrote).
    pub attempt: Option<i32>,
    /// How many times the broker refused it.
    pub publish_attempts: i32,
    pub last_error: Option<String>,
    /// The first refusal.
    pub since: DateTime<Utc>,
    /// When the relay publishes it again.
    pub next_attempt_at: DateTime<Utc>,
}

/// Refused, still unsent commands, oldest first, after `cursor`.
#[tracing::instrument(skip_all, fields(limit))]
pub async fn refused(
    pool: &PgPool,
    limit: i64,
    cursor: Option<i64>,
) -> Result<Vec<RefusedCommand>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, saga_id, routing_key, attempt, publish_attempts, last_error,
                first_failed_at AS since, not_before AS next_attempt_at
         FROM outbox WHERE first_failed_at IS NOT NULL AND id > coalesce($2, 0)
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .bind(cursor)
    .fetch_all(pool)
    .await
}
