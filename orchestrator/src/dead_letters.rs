//! The dead-letter recorder: every message that could not be handled ends
//! in the dead-letter queue; the orchestrator instances consume it and keep
//! each one, with its saga and reason, in the `dead_letters` table that the
//! support API lists.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use saga_shared::broker::{header, Backoff, Broker, ERROR_HEADER};
use saga_shared::consumer::run_consumer_until_stopped;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Bytes of a dead letter's body kept for reading.
const PREVIEW_BYTES: usize = 2048;

pub async fn run_dead_letter_recorder_until_stopped(
    pool: PgPool,
    broker: Arc<Broker>,
    prefetch: u16,
    stop: CancellationToken,
) {
    let queue = broker.topology().dead_letter_queue();
    let tag = format!("dead-letters-{}", Uuid::new_v4().simple());
    let handle = |delivery| {
        let (pool, stop) = (pool.clone(), stop.clone());
        async move { record(&pool, delivery, &stop).await }
    };
    let _ = run_consumer_until_stopped(&broker, &queue, &tag, prefetch, &stop, handle).await;
}

/// Why RabbitMQ itself dead-lettered a message (`x-death`), when no
/// consumer said why: the delivery limit, a rejection, an expiry.
fn death_reason(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let field = |name: &str| match first.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let reason = field("reason")?;
    Some(match field("queue") {
        Some(queue) => format!("{reason} (queue {queue})"),
        None => reason,
    })
}

fn preview(body: &[u8]) -> String {
    let cut = &body[..body.len().min(PREVIEW_BYTES)];
    // Postgres text holds no NUL.
    String::from_utf8_lossy(cut).replace('\0', "\u{FFFD}")
}

async fn record(pool: &PgPool, delivery: Delivery, stop: &CancellationToken) {
    let reason = header(&delivery, ERROR_HEADER)
        .or_else(|| death_reason(&delivery))
        .unwrap_or_else(|| "unknown".to_owned());
    let properties = &delivery.properties;
    let saga_id = properties
        .correlation_id()
        .as_ref()
        .and_then(|id| id.as_str().parse::<Uuid>().ok());
    let text =
        |value: &Option<lapin::types::ShortString>| value.as_ref().map(|v| v.as_str().to_owned());
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let inserted = sqlx::query(
            "INSERT INTO dead_letters (saga_id, reason, message_id, message_type,
                 original_exchange, routing_key, body_bytes, body_preview)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (message_id, reason) WHERE message_id IS NOT NULL DO NOTHING",
        )
        .bind(saga_id)
        .bind(&reason)
        .bind(text(properties.message_id()))
        .bind(text(properties.kind()))
        .bind(header(&delivery, "x-original-exchange"))
        .bind(header(&delivery, "x-original-routing-key"))
        .bind(delivery.data.len() as i32)
        .bind(preview(&delivery.data))
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => break,
            Err(error) => {
                // Hold it while the database is away; it is the only copy.
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "dead letter not recorded; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {
                        let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                        return;
                    }
                }
            }
        }
    }
    tracing::warn!(?saga_id, %reason, "dead letter recorded");
    metrics::counter!(crate::metrics::DEAD_LETTERS).increment(1);
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub saga_id: Option<Uuid>,
    pub reason: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub original_exchange: Option<String>,
    pub routing_key: Option<String>,
    pub body_bytes: i32,
    pub body_preview: String,
}

/// Dead letters newest first, optionally of one saga, before `cursor`.
pub async fn list(
    pool: &PgPool,
    saga_id: Option<Uuid>,
    limit: u32,
    cursor: Option<i64>,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, saga_id, reason, message_id, message_type, original_exchange,
                routing_key, body_bytes, body_preview
         FROM dead_letters
         WHERE ($1::uuid IS NULL OR saga_id = $1) AND ($2::int8 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(saga_id)
    .bind(cursor)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}
