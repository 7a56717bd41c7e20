//! The orchestrator's PostgreSQL store: sagas, their timeline and the
//! outbox. A transition and the commands it emits commit together.

use chrono::{DateTime, Utc};
use saga_shared::messages::Outcome;
use saga_shared::{traceparent, Envelope};
use sqlx::PgPool;
use uuid::Uuid;

use crate::saga::{self, Effect, Event, RetryPolicy, Saga, Transition};

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

/// The timeline and outbox inserts of a transition, as CTEs after a `saga`
/// CTE that returns the saga's id: when it returns no row (a lost race, a
/// reused idempotency key) nothing is written. Parameters $9..$18, bound by
/// [`TransitionRows::bind_effects`].
macro_rules! transition_writes {
    () => {
        "history AS (
             INSERT INTO saga_events (saga_id, step, attempt, event, detail)
             SELECT saga.id, h.* FROM saga, unnest($9::text[], $10::int[], $11::text[], $12::text[]) AS h
         ), outbox AS (
             INSERT INTO outbox (message_id, saga_id, routing_key, message_type, body, traceparent, not_before)
             SELECT o.m, saga.id, o.k, o.t, o.b, o.tp, now() + o.d * interval '1 millisecond'
             FROM saga, unnest($13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[], $18::int8[])
                  AS o(m, k, t, b, tp, d)
         )"
    };
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
    /// an earlier request with the same idempotency key created. One
    /// statement: saga, timeline and outbox rows commit together.
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
        let rows = TransitionRows::new(&transition, &self.policy);
        // With a key, a concurrent twin blocks on the unique index until we
        // commit, then finds our row: one key, one checkout.
        let query = sqlx::query_as::<_, Row>(concat!(
            "WITH saga AS (
                 INSERT INTO sagas (id, status, current_step, attempt, state, last_error, idempotency_key, request_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING id, state, created_at, updated_at
             ), ",
            transition_writes!(),
            " SELECT * FROM saga"
        ));
        let row = rows
            .bind_to(query.bind(id), &transition.saga)
            .bind(idempotency_key)
            .bind(request_hash);
        let row = rows.bind_effects(row).fetch_optional(&self.pool).await?;
        if let Some(row) = row {
            return Ok(Created::New(row.into_record()?));
        }
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
        Ok(if hash == request_hash {
            Created::Existing(row.into_record()?)
        } else {
            Created::KeyReused
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as("SELECT id, state, created_at, updated_at FROM sagas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Row::into_record).transpose()
    }

    /// Applies a worker's reply: read the saga, run the engine, and write
    /// the new state, its timeline and its commands in one statement that
    /// succeeds only if nobody advanced the saga meanwhile (else re-read).
    #[tracing::instrument(skip_all, fields(saga_id = %reply.saga_id, step = %reply.step, attempt = reply.attempt))]
    pub async fn apply_reply(&self, reply: &Envelope<Outcome>) -> Result<Applied, StoreError> {
        loop {
            let current: Option<(i64, serde_json::Value)> =
                sqlx::query_as("SELECT version, state FROM sagas WHERE id = $1")
                    .bind(reply.saga_id)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some((version, state)) = current else {
                return Ok(Applied::UnknownSaga);
            };
            let saga: Saga =
                serde_json::from_value(state).map_err(|e| StoreError::Corrupt(reply.saga_id, e))?;
            let event = Event::Reply {
                step: reply.step,
                attempt: reply.attempt,
                outcome: reply.payload.clone(),
            };
            let transition = saga::handle(&saga, event, &self.policy);
            let finished = transition.saga.status.is_final() && !saga.status.is_final();
            let rows = TransitionRows::new(&transition, &self.policy);
            let query = sqlx::query_as::<_, (i32,)>(concat!(
                "WITH saga AS (
                     UPDATE sagas SET status = $2, current_step = $3, attempt = $4, state = $5,
                                      last_error = $6, version = version + 1, updated_at = now()
                     WHERE id = $1 AND version = $7
                     RETURNING id
                 ), ",
                transition_writes!(),
                // Long-polls on every instance learn of a final status on commit.
                " SELECT 1, CASE WHEN $8 THEN pg_notify($19, $1::text) END FROM saga"
            ));
            let query = rows
                .bind_to(query.bind(reply.saga_id), &transition.saga)
                .bind(version)
                .bind(finished);
            let written = rows
                .bind_effects(query)
                .bind(FINAL_CHANNEL)
                .fetch_optional(&self.pool)
                .await?;
            if written.is_some() {
                return Ok(Applied::Advanced);
            }
            tracing::debug!("saga advanced concurrently; re-reading");
        }
    }
}

/// A transition as the array parameters of one statement.
struct TransitionRows {
    h_step: Vec<Option<String>>,
    h_attempt: Vec<i32>,
    h_event: Vec<String>,
    h_detail: Vec<Option<String>>,
    o_id: Vec<Uuid>,
    o_key: Vec<String>,
    o_type: Vec<String>,
    o_body: Vec<String>,
    o_trace: Vec<String>,
    o_delay_ms: Vec<i64>,
}

type PgArgs = sqlx::postgres::PgArguments;

impl TransitionRows {
    fn new(t: &Transition, policy: &RetryPolicy) -> Self {
        let mut rows = TransitionRows {
            h_step: vec![],
            h_attempt: vec![],
            h_event: vec![],
            h_detail: vec![],
            o_id: vec![],
            o_key: vec![],
            o_type: vec![],
            o_body: vec![],
            o_trace: vec![],
            o_delay_ms: vec![],
        };
        for entry in &t.history {
            rows.h_step
                .push(entry.step.map(|s| s.routing_key().to_owned()));
            rows.h_attempt.push(entry.attempt as i32);
            rows.h_event.push(entry.event.clone());
            rows.h_detail.push(entry.detail.clone());
        }
        for Effect::Send {
            command,
            attempt,
            retry,
        } in &t.effects
        {
            let envelope = Envelope::command(t.saga.id, *attempt, command.clone());
            let delay = if *retry == 0 {
                std::time::Duration::ZERO
            } else {
                policy.delay(*retry, rand::random::<f64>())
            };
            rows.o_id.push(envelope.message_id);
            rows.o_key.push(envelope.step.routing_key().to_owned());
            rows.o_type.push(envelope.message_type.clone());
            rows.o_body
                .push(String::from_utf8(envelope.encode()).expect("JSON is UTF-8"));
            rows.o_trace.push(traceparent::for_saga(t.saga.id));
            rows.o_delay_ms.push(delay.as_millis() as i64);
        }
        rows
    }

    /// Binds $2..$6: the saga's queryable columns and its state.
    fn bind_to<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, PgArgs>,
        saga: &Saga,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, PgArgs> {
        query
            .bind(saga.status.as_str())
            .bind(saga.current.map(|s| s.routing_key()))
            .bind(saga.attempt as i32)
            .bind(serde_json::to_value(saga).expect("saga serializes"))
            .bind(saga.last_error.clone())
    }

    /// Binds $9..$18: timeline entries and outbox rows.
    fn bind_effects<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, PgArgs>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, PgArgs> {
        query
            .bind(self.h_step)
            .bind(self.h_attempt)
            .bind(self.h_event)
            .bind(self.h_detail)
            .bind(self.o_id)
            .bind(self.o_key)
            .bind(self.o_type)
            .bind(self.o_body)
            .bind(self.o_trace)
            .bind(self.o_delay_ms)
    }
}
