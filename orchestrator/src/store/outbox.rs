//! The outbox table: commands written with the transition that emits them
//! (see `transition.rs`), and every statement that claims, puts back,
//! releases or deletes them. The relay and the hand-off decide when; the
//! SQL is here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_protocol::messages::Command;
use saga_protocol::{Envelope, Step};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::saga::Event;

/// How long a handed row is left to the instance that wrote it: long
/// enough for a publish and its confirm under load, short enough that a
/// command an instance died holding is sent soon by another.
pub const LEASE: Duration = Duration::from_secs(3);

/// A command as its outbox row holds it and the broker receives it, the
/// same whether handed over by its commit or claimed by the relay.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredCommand {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub routing_key: String,
    pub message_type: String,
    pub body: String,
    /// The writing span's context, which the publish span continues.
    pub traceparent: String,
}

/// A command committed with its transition, as the relay publishes it.
#[derive(Debug, Clone)]
pub struct Handed {
    pub command: StoredCommand,
    pub attempt: u32,
}

/// What one committed transition (or batch of them) leaves the relay.
#[derive(Debug)]
pub struct HandOff {
    /// Leased rows, to publish now.
    pub commands: Vec<Handed>,
    /// When the earliest row written unleased (a delayed retry) is due:
    /// the relay's timer must not sleep past it.
    pub due_in: Option<Duration>,
    /// When the rows were committed: their lease counts from here.
    pub committed_at: Instant,
}

impl HandOff {
    /// Adds what another transition of the same commit left.
    pub fn merge(&mut self, other: HandOff) {
        self.commands.extend(other.commands);
        self.due_in = match (self.due_in, other.due_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn empty() -> Self {
        HandOff {
            commands: Vec::new(),
            due_in: None,
            committed_at: Instant::now(),
        }
    }
}

/// Where the store hands each commit's commands (this instance's relay,
/// the hand-off's lane): the store knows only that someone publishes
/// them, so it stands below whoever does.
pub trait Hand: Send + Sync {
    fn hand(&self, handoff: HandOff);
}

/// A row the relay claimed.
#[derive(sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    /// As stored, to put back a row that was claimed but not published.
    pub not_before: DateTime<Utc>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub stored_deadline_ms: Option<i64>,
    /// Milliseconds until the first row this batch did not claim is due,
    /// the same in every row (`None` when no other row is there).
    pub next_due_ms: Option<f64>,
    #[sqlx(flatten)]
    pub command: StoredCommand,
    /// `None` in a row an instance of the previous build wrote.
    pub attempt: Option<i32>,
    pub publish_attempts: i32,
    /// Milliseconds since the broker first refused this row, if it has.
    pub refused_ms: Option<f64>,
    pub deadline_ms: Option<i64>,
}

impl OutboxRow {
    pub fn step(&self) -> Option<Step> {
        Step::from_routing_key(&self.command.routing_key)
    }

    /// The saga attempt the command carries.
    pub fn attempt(&self) -> Option<u32> {
        match self.attempt {
            Some(attempt) => u32::try_from(attempt).ok(),
            None => Envelope::<Command>::decode(self.command.body.as_bytes())
                .ok()
                .map(|envelope| envelope.attempt),
        }
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

/// What waits in the outbox, for the gauges.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub pending: i64,
    pub stuck: i64,
    pub oldest_due_seconds: f64,
}

/// The outbox's statements, on the store's pool.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
}

impl Store {
    pub fn outbox(&self) -> Outbox {
        Outbox {
            pool: self.pool.clone(),
        }
    }
}

impl Outbox {
    /// Claims up to `limit` due rows this instance could lock, by deleting
    /// them in a transaction that commits only after their confirms
    /// ([`Claim::commit`]): the common batch, every row confirmed, is one
    /// statement (which also tells when the next row is due). `SKIP LOCKED`
    /// lets several orchestrators relay at once without publishing a row
    /// twice.
    pub async fn claim(&self, limit: i64) -> Result<(Claim, Vec<OutboxRow>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
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
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        Ok((Claim { tx }, rows))
    }

    /// Deletes the rows of handed commands the broker confirmed, in one
    /// statement however many commits they came from.
    ///
    /// Found through the saga index: a message id belongs to one saga, so
    /// the two lists select exactly the pairs. A join with the pairs was
    /// planned as a scan of the whole table, which under load is mostly
    /// rows deleted since the last vacuum (0.60 ms a delete, against 0.25
    /// ms now).
    pub async fn delete_published(&self, rows: &[Handed]) {
        if rows.is_empty() {
            return;
        }
        let deleted =
            sqlx::query("DELETE FROM outbox WHERE saga_id = ANY($1) AND message_id = ANY($2)")
                .bind(rows.iter().map(|c| c.command.saga_id).collect::<Vec<_>>())
                .bind(
                    rows.iter()
                        .map(|c| c.command.message_id)
                        .collect::<Vec<_>>(),
                )
                .execute(&self.pool)
                .await;
        if let Err(error) = deleted {
            // Published all the same: once their lease ends a relay sends
            // them again, and the workers' inboxes answer the duplicates.
            tracing::warn!(%error, commands = rows.len(), "cannot delete published commands");
        }
    }

    /// Makes handed rows due at once, for whichever relay claims first.
    pub async fn release(&self, commands: &[Handed]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbox SET not_before = now()
             WHERE saga_id = ANY($1) AND message_id = ANY($2)",
        )
        .bind(
            commands
                .iter()
                .map(|c| c.command.saga_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|c| c.command.message_id)
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An attempt's deadline counts from its publishing: a command that
    /// waited in the outbox (the broker was away, or refused it) still gets
    /// its whole deadline. Only late rows carry a `deadline_ms` here; a row
    /// published on time keeps the deadline set with its transition, and
    /// costs no statement. Best effort, after the commit: should it fail,
    /// the deadline set with the transition stands, and the deadline timer
    /// does not count a miss while the command is still unsent anyway.
    pub async fn restart_deadlines(&self, rows: &[&OutboxRow]) {
        let (ids, waits): (Vec<Uuid>, Vec<i64>) = rows
            .iter()
            .filter_map(|row| Some((row.command.saga_id, row.deadline_ms?)))
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
        .execute(&self.pool)
        .await;
        if let Err(error) = moved {
            tracing::warn!(%error, "could not restart reply deadlines from publish time");
        }
    }

    /// Milliseconds until the next delayed row is due (`None`: no row).
    pub async fn next_due_ms(&self) -> Result<Option<f64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM (min(not_before) - now())) * 1000)::float8 FROM outbox",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Refused, still unsent commands, oldest first, after `cursor`.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn refused(
        &self,
        limit: i64,
        cursor: Option<i64>,
    ) -> Result<Vec<RefusedCommand>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, saga_id, routing_key, attempt, publish_attempts, last_error,
                    first_failed_at AS since, not_before AS next_attempt_at
             FROM outbox WHERE first_failed_at IS NOT NULL AND id > coalesce($2, 0)
             ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .bind(cursor)
        .fetch_all(&self.pool)
        .await?)
    }

    /// What waits, counted for the gauges. Age from the due time, not the
    /// insert: a retry waiting out its backoff is not late.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let (pending, stuck, oldest_due_seconds) = sqlx::query_as::<_, (i64, i64, f64)>(
            "SELECT count(*), count(first_failed_at),
                    coalesce(EXTRACT(EPOCH FROM now() - min(not_before) FILTER (WHERE not_before <= now())), 0)::float8
             FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending,
            stuck,
            oldest_due_seconds,
        })
    }
}

/// A claimed batch's transaction, in which its rows are deleted, still open
/// while they are published.
pub struct Claim {
    tx: Transaction<'static, Postgres>,
}

/// A claimed row that goes back into the outbox. `refusal`: the broker's
/// error and the backoff before the next try, for a refused row; `None`
/// for a row a broken connection never sent (it goes back as it was).
pub struct PutBack<'a> {
    pub row: &'a OutboxRow,
    pub refusal: Option<(String, Duration)>,
}

impl Claim {
    /// Puts the rows that were not confirmed back, in one statement, under
    /// their own ids, then commits: the confirmed rows are gone for good.
    /// A refused row comes back after its backoff, with its refusals
    /// counted, the time of the first kept and the text of the last.
    pub async fn commit(mut self, back: &[PutBack<'_>]) -> Result<(), sqlx::Error> {
        if !back.is_empty() {
            let mut columns = Back::default();
            for b in back {
                columns.push(
                    b.row,
                    b.refusal
                        .as_ref()
                        .map(|(error, wait)| (error.clone(), wait.as_millis() as i64)),
                );
            }
            columns.insert(&mut self.tx).await?;
        }
        self.tx.commit().await
    }
}

/// The columns of the rows [`Claim::commit`] puts back, one array each.
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
        let command = &row.command;
        self.message_id.push(command.message_id);
        self.saga_id.push(command.saga_id);
        self.routing_key.push(command.routing_key.clone());
        self.message_type.push(command.message_type.clone());
        self.body.push(command.body.clone());
        self.traceparent.push(command.traceparent.clone());
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

    async fn insert(self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
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
        .bind(self.id)
        .bind(self.message_id)
        .bind(self.saga_id)
        .bind(self.routing_key)
        .bind(self.message_type)
        .bind(self.body)
        .bind(self.traceparent)
        .bind(self.not_before)
        .bind(self.created_at)
        .bind(self.deadline_ms)
        .bind(self.attempt)
        .bind(self.publish_attempts)
        .bind(self.first_failed_at)
        .bind(self.last_error)
        .bind(self.refused)
        .bind(self.error)
        .bind(self.wait_ms)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// What became of a refused row's saga.
pub enum Parked {
    /// Another instance published (or dropped) the row since.
    Gone,
    /// The saga parked, the row dropped.
    Parked,
    /// The saga no longer awaited the command: the row dropped.
    Dropped,
}

impl Store {
    /// Parks the saga of a command refused for longer than its step allows
    /// and drops the command, in one transaction: a parked saga awaits
    /// nothing, and support's retry sends the command anew. `event` is
    /// built from how many times the broker refused it, as locked now.
    pub async fn park_refused(
        &self,
        row: &OutboxRow,
        event: impl FnOnce(u32) -> Event,
    ) -> Result<Parked, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Another instance may have published it since its batch committed.
        let still: Option<i32> = sqlx::query_scalar(
            "SELECT publish_attempts FROM outbox
             WHERE id = $1 AND first_failed_at IS NOT NULL FOR UPDATE SKIP LOCKED",
        )
        .bind(row.id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(tries) = still else {
            return Ok(Parked::Gone);
        };
        let parked = self
            .park_unpublishable(
                &mut tx,
                row.command.saga_id,
                event(u32::try_from(tries).unwrap_or(0)),
            )
            .await?;
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(if parked {
            Parked::Parked
        } else {
            Parked::Dropped
        })
    }
}
