//! The orchestrator's PostgreSQL store: sagas, their timeline and the
//! outbox. A transition and the commands it emits commit together.

use chrono::{DateTime, Utc};
use saga_shared::messages::Outcome;
use saga_shared::{traceparent, Envelope};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::saga::{self, Effect, Event, RetryPolicy, Saga, Transition};

/// Channel the relay listens on: new outbox rows.
pub const OUTBOX_CHANNEL: &str = "outbox";
/// Channel long-polls listen on: a saga reached a final status.
pub const FINAL_CHANNEL: &str = "saga_final";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored saga {0} does not parse: {1}")]
    Corrupt(Uuid, serde_json::Error),
}

/// A stored saga with its bookkeeping columns.
#[derive(Debug, Clone)]
pub struct SagaRecord {
    pub saga: Saga,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub enum Created {
    New(SagaRecord),
    /// The same idempotency key and the same request: the earlier checkout.
    Existing(SagaRecord),
    /// The same idempotency key with another request.
    KeyReused,
}

pub enum Applied {
    Advanced,
    UnknownSaga,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    policy: RetryPolicy,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    state: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct KeyedRow {
    request_hash: String,
    #[sqlx(flatten)]
    row: Row,
}

impl Row {
    fn into_record(self) -> Result<SagaRecord, StoreError> {
        let saga =
            serde_json::from_value(self.state).map_err(|e| StoreError::Corrupt(self.id, e))?;
        Ok(SagaRecord {
            saga,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    pub fn new(pool: PgPool, policy: RetryPolicy) -> Self {
        Store { pool, policy }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates a checkout's saga with its first command, or finds the one
    /// an earlier request with the same idempotency key created.
    #[tracing::instrument(skip_all, fields(saga_id))]
    pub async fn create(
        &self,
        request: saga::CheckoutRequest,
        idempotency_key: Option<&str>,
        request_hash: &str,
    ) -> Result<Created, StoreError> {
        let id = Uuid::now_v7();
        tracing::Span::current().record("saga_id", tracing::field::display(id));
        let transition = saga::start(id, request);
        let mut tx = self.pool.begin().await?;
        // With a key, a concurrent twin blocks on the unique index until we
        // commit, then finds our row: one key, one checkout.
        let row: Option<Row> = sqlx::query_as(
            "INSERT INTO sagas (id, status, current_step, attempt, state, idempotency_key, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id, state, created_at, updated_at",
        )
        .bind(id)
        .bind(transition.saga.status.as_str())
        .bind(transition.saga.current.map(|s| s.routing_key()))
        .bind(transition.saga.attempt as i32)
        .bind(serde_json::to_value(&transition.saga).expect("saga serializes"))
        .bind(idempotency_key)
        .bind(request_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            let existing: Option<KeyedRow> = sqlx::query_as(
                "SELECT request_hash, id, state, created_at, updated_at
                 FROM sagas WHERE idempotency_key = $1",
            )
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await?;
            // Conflicted on the key yet gone cannot happen: sagas are never deleted.
            let KeyedRow {
                request_hash: hash,
                row,
            } = existing.ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
            return Ok(if hash == request_hash {
                Created::Existing(row.into_record()?)
            } else {
                Created::KeyReused
            });
        };
        record_transition(&mut tx, &transition, &self.policy, None).await?;
        tx.commit().await?;
        Ok(Created::New(row.into_record()?))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as("SELECT id, state, created_at, updated_at FROM sagas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Row::into_record).transpose()
    }

    /// Applies a worker's reply: lock the saga, run the engine, store the
    /// new state, its timeline and its commands, in one transaction.
    #[tracing::instrument(skip_all, fields(saga_id = %reply.saga_id, step = %reply.step, attempt = reply.attempt))]
    pub async fn apply_reply(&self, reply: &Envelope<Outcome>) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, state, created_at, updated_at FROM sagas WHERE id = $1 FOR UPDATE",
        )
        .bind(reply.saga_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Applied::UnknownSaga);
        };
        let saga = row.into_record()?.saga;
        let event = Event::Reply {
            step: reply.step,
            attempt: reply.attempt,
            outcome: reply.payload.clone(),
        };
        let transition = saga::handle(&saga, event, &self.policy);
        record_transition(&mut tx, &transition, &self.policy, Some(&saga)).await?;
        tx.commit().await?;
        Ok(Applied::Advanced)
    }
}

/// Writes a transition in one statement: the saga row (unless unchanged),
/// its timeline entries, its outbox rows, and the notifications that wake
/// the relays and the long-polls once the transaction commits.
async fn record_transition(
    conn: &mut PgConnection,
    t: &Transition,
    policy: &RetryPolicy,
    before: Option<&Saga>,
) -> Result<(), sqlx::Error> {
    let saga = &t.saga;
    let changed = before != Some(saga);
    let (mut h_step, mut h_attempt, mut h_event, mut h_detail) = (vec![], vec![], vec![], vec![]);
    for entry in &t.history {
        h_step.push(entry.step.map(|s| s.routing_key().to_owned()));
        h_attempt.push(entry.attempt as i32);
        h_event.push(entry.event.clone());
        h_detail.push(entry.detail.clone());
    }
    let (mut o_id, mut o_key, mut o_type, mut o_body, mut o_trace, mut o_delay_ms) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for Effect::Send {
        command,
        attempt,
        retry,
    } in &t.effects
    {
        let envelope = Envelope::command(saga.id, *attempt, command.clone());
        let delay = if *retry == 0 {
            std::time::Duration::ZERO
        } else {
            policy.delay(*retry, rand::random::<f64>())
        };
        o_id.push(envelope.message_id);
        o_key.push(envelope.step.routing_key().to_owned());
        o_type.push(envelope.message_type.clone());
        o_body.push(String::from_utf8(envelope.encode()).expect("JSON is UTF-8"));
        o_trace.push(traceparent::for_saga(saga.id));
        o_delay_ms.push(delay.as_millis() as i64);
    }
    let is_final = saga.status.is_final() && before.is_none_or(|b| !b.status.is_final());
    sqlx::query(
        "WITH saga AS (
             UPDATE sagas SET status = $2, current_step = $3, attempt = $4, state = $5,
                              last_error = $6, updated_at = now()
             WHERE id = $1 AND $7
         ), history AS (
             INSERT INTO saga_events (saga_id, step, attempt, event, detail)
             SELECT $1, * FROM unnest($8::text[], $9::int[], $10::text[], $11::text[])
         ), outbox AS (
             INSERT INTO outbox (message_id, saga_id, routing_key, message_type, body, traceparent, not_before)
             SELECT m, $1, k, t, b, tp, now() + d * interval '1 millisecond'
             FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[], $17::int8[])
                  AS o(m, k, t, b, tp, d)
         )
         SELECT
             CASE WHEN cardinality($12::uuid[]) > 0 THEN pg_notify($18, '') END,
             CASE WHEN $19 THEN pg_notify($20, $1::text) END",
    )
    .bind(saga.id)
    .bind(saga.status.as_str())
    .bind(saga.current.map(|s| s.routing_key()))
    .bind(saga.attempt as i32)
    .bind(serde_json::to_value(saga).expect("saga serializes"))
    .bind(saga.last_error.as_deref())
    .bind(changed && before.is_some())
    .bind(h_step)
    .bind(h_attempt)
    .bind(h_event)
    .bind(h_detail)
    .bind(o_id)
    .bind(o_key)
    .bind(o_type)
    .bind(o_body)
    .bind(o_trace)
    .bind(o_delay_ms)
    .bind(OUTBOX_CHANNEL)
    .bind(is_final)
    .bind(FINAL_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
