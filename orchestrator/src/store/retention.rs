//! What retention reads and deletes: finished sagas past their retention,
//! each with its timeline and dead letters as one JSON record, and dead
//! letters no saga holds. Every read is a range of a primary key bounded
//! by the retention's cut-off, so what was archived before is never read
//! again; every delete is a short transaction of its own.

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::saga::SagaStatus;

/// Only one instance archives at a time: two would write the same day.
const RETENTION_LOCK: i64 = 0x7361_6761_5f72_6574; // "saga_ret"

fn finished() -> Vec<&'static str> {
    SagaStatus::ALL
        .into_iter()
        .filter(|status| status.is_final())
        .map(SagaStatus::as_str)
        .collect()
}

/// The instance's turn to archive: one pooled connection, holding the lock,
/// on which the whole run reads and deletes. Taking a second connection
/// while holding this one could wait on a pool that every other task
/// shares (a pool of two would starve), so the turn never does. It is
/// unlocked before it goes back to the pool; a turn dropped midway closes
/// its connection instead, and the session's end frees the lock.
pub struct RetentionTurn {
    connection: PoolConnection<Postgres>,
    unlocked: bool,
}

impl Drop for RetentionTurn {
    fn drop(&mut self) {
        if !self.unlocked {
            self.connection.close_on_drop();
        }
    }
}

impl RetentionTurn {
    pub async fn end(mut self) {
        self.unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(RETENTION_LOCK)
            .execute(&mut *self.connection)
            .await
            .is_ok();
    }

    /// Records how far this run may go, before it deletes anything; never
    /// moves back (a run with a longer retention changes nothing).
    pub async fn advance_retention_horizon(
        &mut self,
        archived_below: Uuid,
        finished_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO retention_horizon (id, archived_below, finished_before)
             VALUES (true, $1, $2)
             ON CONFLICT (id) DO UPDATE SET
                 archived_below = GREATEST(retention_horizon.archived_below, EXCLUDED.archived_below),
                 finished_before = GREATEST(retention_horizon.finished_before, EXCLUDED.finished_before),
                 updated_at = now()",
        )
        .bind(archived_below)
        .bind(finished_before)
        .execute(&mut *self.connection)
        .await?;
        Ok(())
    }

    /// The oldest saga created below `created_below` that finished before
    /// `finished_before`. Below the bound only sagas not archived yet are
    /// left: the few still live, and those past their retention.
    pub async fn oldest_archivable_saga(
        &mut self,
        created_below: Uuid,
        finished_before: DateTime<Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM sagas
             WHERE id < $1 AND status = ANY($2) AND updated_at < $3
             ORDER BY id LIMIT 1",
        )
        .bind(created_below)
        .bind(finished())
        .bind(finished_before)
        .fetch_optional(&mut *self.connection)
        .await?)
    }

    /// Up to `limit` archivable sagas with ids in `[from, below)` and above
    /// `after`, in id order, each as its archive record: the saga's row,
    /// its timeline and its dead letters.
    pub async fn archivable_sagas(
        &mut self,
        from: Uuid,
        below: Uuid,
        after: Uuid,
        finished_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id, jsonb_build_object(
                 'saga', to_jsonb(s),
                 'events', coalesce((SELECT jsonb_agg(to_jsonb(e) ORDER BY e.id)
                                     FROM saga_events e WHERE e.saga_id = s.id), '[]'),
                 'dead_letters', coalesce((SELECT jsonb_agg(to_jsonb(d) ORDER BY d.id)
                                           FROM dead_letters d WHERE d.saga_id = s.id), '[]'),
                 'archived_at', now())::text
             FROM sagas s
             WHERE s.id >= $1 AND s.id < $2 AND s.id > $3
               AND s.status = ANY($4) AND s.updated_at < $5
             ORDER BY s.id LIMIT $6",
        )
        .bind(from)
        .bind(below)
        .bind(after)
        .bind(finished())
        .bind(finished_before)
        .bind(limit)
        .fetch_all(&mut *self.connection)
        .await?)
    }

    /// Deletes archived sagas with their timelines and dead letters, and
    /// adds them to `archived_sagas` by status, in one statement (one round
    /// trip, one short transaction); how many sagas went. The ids are
    /// archived finished sagas, and a finished saga never changes again.
    /// The timeline's rows go in the same statement as their saga, so its
    /// foreign key, checked at the statement's end, finds none left.
    pub async fn delete_archived_sagas(&mut self, ids: &[Uuid]) -> Result<u64, StoreError> {
        let deleted: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM sagas WHERE id = ANY($1) AND status = ANY($2)
                           RETURNING status),
                  events AS (DELETE FROM saga_events WHERE saga_id = ANY($1)),
                  letters AS (DELETE FROM dead_letters WHERE saga_id = ANY($1)),
                  counted AS (SELECT status, count(*) AS n FROM gone GROUP BY status),
                  noted AS (INSERT INTO archived_sagas (status, sagas)
                            SELECT status, n FROM counted
                            ON CONFLICT (status) DO UPDATE
                            SET sagas = archived_sagas.sagas + EXCLUDED.sagas)
             SELECT coalesce(sum(n), 0)::bigint FROM counted",
        )
        .bind(ids)
        .bind(finished())
        .fetch_one(&mut *self.connection)
        .await?;
        Ok(deleted as u64)
    }

    /// Up to `limit` dead letters above `after`, in id order, each as its
    /// archive record, and whether a saga still here holds it (then it
    /// goes with its saga). Dead letters arrive in id order, so the caller
    /// reads the old end of the table and stops at the first one inside
    /// the retention: what retention keeps short is all it reads.
    pub async fn dead_letters_from_oldest(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetterRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT d.id AS key, d.at, to_jsonb(d)::text AS line,
                    EXISTS (SELECT 1 FROM sagas s WHERE s.id = d.saga_id) AS held
             FROM dead_letters d
             WHERE d.id > $1
             ORDER BY d.id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.connection)
        .await?)
    }

    pub async fn delete_dead_letters(&mut self, keys: &[i64]) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM dead_letters WHERE id = ANY($1)")
            .bind(keys)
            .execute(&mut *self.connection)
            .await?
            .rows_affected())
    }
}

/// A dead letter as the archive keeps it.
#[derive(sqlx::FromRow)]
pub struct DeadLetterRecord {
    pub key: i64,
    pub at: DateTime<Utc>,
    pub line: String,
    /// A saga still here holds it.
    pub held: bool,
}

impl Store {
    /// This instance's turn to archive, or `None` while another has it.
    pub async fn retention_turn(&self) -> Result<Option<RetentionTurn>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RETENTION_LOCK)
            .fetch_one(&mut *connection)
            .await?;
        Ok(got.then_some(RetentionTurn {
            connection,
            unlocked: false,
        }))
    }
}
