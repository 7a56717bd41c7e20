//! Parked sagas past their time limit (`PARKED_SAGA_TTL`), and support
//! extending the limit of one. Only suspended sagas are read, through the
//! partial index `sagas_parked`, never the finished history; rows are
//! taken `FOR UPDATE SKIP LOCKED`, so each expiry fires once across
//! instances and a support action racing with it waits, then finds the
//! saga moved on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{parse, Store, StoreError};
use crate::duration_text;
use crate::saga::{self, SagaStatus, WrongState};

/// When a park began: `parked_at`, or for a saga parked by a build older
/// than the column, its last update.
const PARKED_SINCE: &str = "coalesce(parked_at, updated_at)";

#[derive(sqlx::FromRow)]
struct Expired {
    id: Uuid,
    version: i64,
    state: serde_json::Value,
    traceparent: Option<String>,
}

impl Store {
    /// Ends up to `limit` parks older than `ttl` plus their extension; how
    /// many it took.
    #[tracing::instrument(level = "debug", skip_all, fields(expired))]
    pub async fn expire_parked(&self, ttl: Duration, limit: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let expired: Vec<Expired> = sqlx::query_as(&format!(
            "SELECT id, version, state, traceparent FROM sagas
             WHERE status = 'suspended'
               AND {PARKED_SINCE} + (coalesce(park_extension_ms, 0) + $1) * interval '1 millisecond'
                   <= now()
             ORDER BY parked_at NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ttl.as_millis() as i64)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let count = expired.len();
        let ttl_text = duration_text::format(ttl);
        for row in expired {
            let transition = parse(row.id, row.state).ok().and_then(|saga| {
                Some((saga::expire_park(&saga, &ttl_text, self.context())?, saga))
            });
            let Some((transition, saga)) = transition else {
                // Nothing this build can do with it (unreadable, or parked
                // with no step): looked at again a whole limit later, not
                // at every tick.
                tracing::warn!(saga_id = %row.id, "a parked saga past its time limit cannot be ended; left parked");
                sqlx::query("UPDATE sagas SET parked_at = now() WHERE id = $1")
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            };
            self.write_unleased(
                &mut tx,
                &saga,
                row.version,
                transition,
                row.traceparent.as_deref(),
            )
            .await?;
            tracing::warn!(saga_id = %row.id, ttl = %ttl_text, "parked saga past PARKED_SAGA_TTL: ended with compensation");
        }
        tx.commit().await?;
        tracing::Span::current().record("expired", count);
        Ok(count)
    }

    /// Adds `by` to the time limit of a parked saga, for `actor` and
    /// `reason` (in its timeline). When the park now ends, given `ttl`
    /// (`None`: parks never expire).
    #[tracing::instrument(skip_all, fields(saga_id = %id, actor))]
    pub async fn extend_park(
        &self,
        id: Uuid,
        by: Duration,
        ttl: Option<Duration>,
        actor: &str,
        reason: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        tracing::Span::current().record("actor", actor);
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let detail = format!("time limit extended by {}", duration_text::format(by));
        let extended: Option<(DateTime<Utc>, i64)> = sqlx::query_as(&format!(
            "WITH saga AS (
                 UPDATE sagas SET parked_at = {PARKED_SINCE},
                                  park_extension_ms = coalesce(park_extension_ms, 0) + $2
                 WHERE id = $1 AND status = 'suspended'
                 RETURNING id, current_step, attempt, parked_at, park_extension_ms
             ), history AS (
                 INSERT INTO saga_events (saga_id, step, attempt, event, detail, actor, reason)
                 SELECT id, current_step, attempt, 'park_extended', $3, $4, $5 FROM saga
             )
             SELECT parked_at, park_extension_ms FROM saga"
        ))
        .bind(id)
        .bind(by_ms)
        .bind(&detail)
        .bind(actor)
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?;
        let Some((parked_at, extension_ms)) = extended else {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            let status = status.ok_or(StoreError::UnknownSaga(id))?;
            let status: SagaStatus = serde_json::from_value(serde_json::Value::String(status))
                .map_err(|e| StoreError::Corrupt(id, e))?;
            return Err(StoreError::WrongState(WrongState {
                action: "extend the park of",
                status: status.as_str(),
                hint: "only a suspended saga has a park time limit",
            }));
        };
        tracing::info!(%detail, "park extended");
        Ok(ttl.map(|ttl| {
            parked_at
                + chrono::Duration::milliseconds(extension_ms)
                + chrono::Duration::milliseconds(ttl.as_millis() as i64)
        }))
    }
}
