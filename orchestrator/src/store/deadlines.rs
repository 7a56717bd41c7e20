//! Reply deadlines: the timer's statements. A saga whose awaited reply is
//! overdue gets a `DeadlineMissed` event, once across instances.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{parse, Store, StoreError};
use crate::saga::{self, Event, Transition};

impl Store {
    /// Fires due deadlines: each saga whose awaited reply is overdue gets a
    /// `DeadlineMissed` event. The rows stay locked until commit, so every
    /// timer fires once across instances, and a reply racing with it waits
    /// and then finds its attempt no longer current.
    // At debug: it runs every half second, and a poll must not be a trace
    // of its own; each saga's transition has its own span.
    #[tracing::instrument(level = "debug", skip_all, fields(fired))]
    pub async fn fire_deadlines(&self, limit: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        // `unsent`: the awaited command is still in the outbox (the broker
        // is away, or refuses it). The clock of an attempt starts when it is
        // sent, so such a deadline is pushed back rather than counted as a
        // miss; but not for ever: a command refused past its step's
        // allowance parks the saga (here, or in the relay if it gets there
        // first), which then awaits no deadline. Only the awaited attempt's
        // row counts: a stale command left behind must not hold back the
        // deadline of one already sent.
        let due: Vec<DueSaga> = sqlx::query_as(
            "SELECT s.id, s.version, s.state, s.traceparent, o.id AS unsent, o.refused_ms,
                    o.publish_attempts, o.last_error
             FROM sagas s
             LEFT JOIN LATERAL (
                 SELECT o.id, o.publish_attempts, o.last_error,
                        (EXTRACT(EPOCH FROM (now() - o.first_failed_at)) * 1000)::float8
                            AS refused_ms
                 FROM outbox o
                 WHERE o.saga_id = s.id AND o.routing_key = s.current_step
                   AND coalesce(o.attempt, s.attempt) = s.attempt
                 ORDER BY o.id LIMIT 1) o ON true
             WHERE s.status IN ('running', 'compensating') AND s.deadline_at <= now()
             ORDER BY s.deadline_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let fired = due.len();
        for due in due {
            let (id, version) = (due.id, due.version);
            let saga = match parse(id, due.state) {
                Ok(saga) => saga,
                Err(error) => {
                    // Never let one bad row stall every timer behind it.
                    tracing::error!(%error, saga_id = %id, "cannot fire the deadline of a saga that does not parse");
                    clear_deadline(&mut tx, id).await?;
                    continue;
                }
            };
            if let (Some(row), Some(step)) = (due.unsent, saga.current) {
                let policy = self.policies.for_step(step);
                let allowance = policy.publish_allowance();
                let refused_for = due
                    .refused_ms
                    .map(|ms| Duration::from_millis(ms.max(0.0) as u64));
                if refused_for.is_some_and(|refused| refused >= allowance)
                    && take_unsent(&mut tx, row).await?
                {
                    let event = Event::PublishFailed {
                        step,
                        attempt: saga.attempt,
                        error: due
                            .last_error
                            .unwrap_or_else(|| "refused by the broker".to_owned()),
                        tries: u32::try_from(due.publish_attempts.unwrap_or(0)).unwrap_or(0),
                        refused_for: refused_for.unwrap_or_default(),
                    };
                    let transition = saga::handle(&saga, event, self.context());
                    if self
                        .write_unleased(
                            &mut tx,
                            &saga,
                            version,
                            transition,
                            due.traceparent.as_deref(),
                        )
                        .await?
                        .is_some()
                    {
                        metrics::counter!(crate::metrics::OUTBOX_PARKED, "routing_key" => step.routing_key())
                            .increment(1);
                        tracing::warn!(saga_id = %id, routing_key = step.routing_key(), "saga parked: its command cannot be published");
                    }
                    continue;
                }
                // The whole deadline again, but a refused command is looked
                // at again when its allowance runs out (or soon, when the
                // relay held its row just now).
                let wait = match refused_for {
                    Some(refused) => allowance
                        .saturating_sub(refused)
                        .clamp(RECHECK_REFUSED, policy.deadline),
                    None => policy.deadline,
                };
                sqlx::query(
                    "UPDATE sagas SET deadline_at = now() + $2 * interval '1 millisecond' WHERE id = $1",
                )
                .bind(id)
                .bind(wait.as_millis() as i64)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            let transition = match saga.current {
                Some(step) => {
                    let event = Event::DeadlineMissed {
                        step,
                        attempt: saga.attempt,
                    };
                    saga::handle(&saga, event, self.context())
                }
                None => Transition {
                    saga: saga.clone(),
                    effects: vec![],
                    history: vec![],
                    mismatch: None,
                },
            };
            if transition.history.is_empty() {
                tracing::warn!(saga_id = %id, status = saga.status.as_str(), "deadline on a saga awaiting nothing; cleared");
                clear_deadline(&mut tx, id).await?;
                continue;
            }
            self.write_unleased(
                &mut tx,
                &saga,
                version,
                transition,
                due.traceparent.as_deref(),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::Span::current().record("fired", fired);
        Ok(fired)
    }

    /// How long until the next deadline is due, if any saga awaits one.
    pub async fn next_deadline(&self) -> Result<Option<Duration>, StoreError> {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM (min(deadline_at) - now())) * 1000)::float8
             FROM sagas WHERE status IN ('running', 'compensating')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64)))
    }
}

/// The shortest wait before the deadline timer looks again at a saga whose
/// command was refused past its allowance but whose row the relay held.
const RECHECK_REFUSED: Duration = Duration::from_millis(200);

/// A saga whose reply deadline is due, and its awaited command if unsent.
#[derive(sqlx::FromRow)]
struct DueSaga {
    id: Uuid,
    version: i64,
    state: serde_json::Value,
    traceparent: Option<String>,
    /// The awaited command's outbox row, while it is unsent.
    unsent: Option<i64>,
    /// Milliseconds since the broker first refused that command, if it has.
    refused_ms: Option<f64>,
    publish_attempts: Option<i32>,
    last_error: Option<String>,
}

/// Deletes the unsent command `row` unless the relay holds it right now
/// (it may be publishing it); true when deleted.
/// Leaves a saga no deadline: what cannot be fired is not looked at again
/// at every tick.
async fn clear_deadline(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sagas SET deadline_at = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn take_unsent(conn: &mut PgConnection, row: i64) -> Result<bool, sqlx::Error> {
    let taken: Option<i64> = sqlx::query_scalar(
        "DELETE FROM outbox WHERE id = (SELECT id FROM outbox WHERE id = $1 FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(row)
    .fetch_optional(conn)
    .await?;
    Ok(taken.is_some())
}
