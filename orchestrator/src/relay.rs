//! The outbox relay: publishes committed commands with confirms, then
//! deletes them. The instance that commits a transition wakes its own relay
//! right after the commit; the timed wake-up is the timer of delayed
//! retries and the fallback that picks up rows an instance that died left
//! behind (any instance's relay publishes any due row).

use std::sync::Arc;
use std::time::Duration;

use saga_shared::broker::{Backoff, Broker, Outgoing};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows published per transaction.
const BATCH: i64 = 256;
/// Longest sleep with nothing due: a safety net should a wake-up be lost.
const FALLBACK_POLL: Duration = Duration::from_secs(2);

#[derive(sqlx::FromRow)]
struct OutboxRow {
    message_id: Uuid,
    saga_id: Uuid,
    routing_key: String,
    message_type: String,
    body: String,
    traceparent: String,
    deadline_ms: Option<i64>,
}

pub async fn run_relay_until_stopped(
    pool: PgPool,
    broker: Arc<Broker>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let sleep_for = match relay_batch(&pool, &broker).await {
            Ok(published) if published as i64 == BATCH => continue,
            Ok(_) => {
                backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
                next_due(&pool).await.unwrap_or(FALLBACK_POLL)
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "outbox relay failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
            _ = stop.cancelled() => break,
        }
    }
    tracing::info!("outbox relay stopped");
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] saga_shared::broker::BrokerError),
}

/// Publishes the due rows this instance could lock. `SKIP LOCKED` lets
/// several orchestrators relay at once without publishing a row twice; a
/// crash between confirm and delete republishes, and the worker inbox
/// absorbs the duplicate.
#[tracing::instrument(skip_all, fields(published))]
async fn relay_batch(pool: &PgPool, broker: &Broker) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    // Claim by deleting: the rows come back if publishing fails and the
    // transaction rolls back.
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM outbox WHERE not_before <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING message_id, saga_id, routing_key, message_type, body, traceparent,
                   -- Late: waited in the outbox well past its due time (the
                   -- broker was away), so the deadline set with it is too soon.
                   CASE WHEN not_before < now() - interval '1 second' THEN deadline_ms END
                       AS deadline_ms",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let exchange = broker.topology().command_exchange();
    let messages: Vec<Outgoing> = rows
        .iter()
        .map(|row| Outgoing {
            exchange: exchange.clone(),
            routing_key: row.routing_key.clone(),
            body: row.body.clone().into_bytes(),
            message_id: row.message_id,
            saga_id: row.saga_id,
            message_type: row.message_type.clone(),
            traceparent: row.traceparent.clone(),
        })
        .collect();
    broker.publish_all(&messages).await?;
    tx.commit().await?;
    tracing::Span::current().record("published", rows.len());
    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED).increment(rows.len() as u64);
    restart_deadlines(pool, &rows).await;
    Ok(rows.len())
}

/// An attempt's deadline counts from its publishing: a command that
/// waited in the outbox (the broker was away) still gets its whole
/// deadline. Only late rows carry a `deadline_ms` here; a row published on
/// time keeps the deadline set with its transition, and costs no statement.
/// Best effort, after the commit: should it fail, the deadline set with the
/// transition stands, and the deadline timer does not count a miss while
/// the command is still unsent anyway.
async fn restart_deadlines(pool: &PgPool, rows: &[OutboxRow]) {
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
    Ok(match ms {
        Some(ms) if ms > 0.0 => Duration::from_millis(ms as u64).min(FALLBACK_POLL),
        Some(_) => Duration::ZERO,
        None => FALLBACK_POLL,
    })
}
