//! Read queries for support staff: lists, timelines, failure groups.

use chrono::{DateTime, Utc};
use saga_protocol::values::{Cents, Currency};
use saga_protocol::Step;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{id_time, Row, SagaRecord, Store, StoreError};
use crate::saga::{ClientStatus, Phase, SagaStatus};

/// The largest page a list returns.
pub const MAX_PAGE: u32 = 500;
/// The most sagas one bulk retry touches; a larger group takes several calls.
pub const MAX_BULK: i64 = 10_000;

/// Which sagas a list selects. Every field narrows.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub status: Option<SagaStatus>,
    pub step: Option<Step>,
    /// A suspended saga counts in the phase it parked in.
    pub phase: Option<Phase>,
    /// A case-insensitive substring of the last error (for finding; a
    /// bulk retry takes a [`BulkSelection`], never a substring).
    pub error: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// What support pastes when a customer calls: a checkout id, a
    /// customer id or an idempotency key, matched exactly against all three.
    pub search: Option<String>,
    pub customer_id: Option<String>,
    /// As the client sent it: matched under any client's scope, unless
    /// `client` narrows it to one.
    pub idempotency_key: Option<String>,
    /// Only this checkout client's sagas (exact).
    pub client: Option<String>,
}

/// Exactly which suspended sagas a bulk retry takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkSelection {
    /// One failure group as [`Store::failures`] shows it: its step, phase
    /// and error text, each matched exactly (an empty error is the group of
    /// sagas parked without one, never "any error").
    Group {
        step: Step,
        phase: Phase,
        error: String,
    },
    /// These sagas, those of them still suspended (what a dry run listed).
    Ids(Vec<Uuid>),
}

/// The phase a suspended saga parked in, as `failures` groups it and a
/// bulk retry of a group matches it.
const PARKED_PHASE: &str =
    "CASE WHEN state->>'suspended_from' = 'compensating' THEN 'compensating' ELSE 'forward' END";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub saga_id: Uuid,
    pub status: SagaStatus,
    pub checkout_status: ClientStatus,
    pub phase: Option<Phase>,
    pub step: Option<Step>,
    pub attempt: u32,
    pub last_error: Option<String>,
    pub customer_id: String,
    /// The checkout client it was created for (none before clients existed).
    pub client: Option<String>,
    /// Subtotal plus tax, once tax is known.
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&SagaRecord> for SagaSummary {
    fn from(record: &SagaRecord) -> Self {
        let saga = &record.saga;
        SagaSummary {
            saga_id: saga.id,
            status: saga.status,
            checkout_status: saga.status.client_status(),
            phase: saga.phase(),
            step: saga.current,
            attempt: saga.attempt,
            last_error: saga.last_error.clone(),
            customer_id: saga.request.customer_id.to_string(),
            client: record.client.clone(),
            total_cents: saga.total_cents().map(Cents::get),
            currency: saga.currency().map(Currency::to_string),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

pub struct SagaPage {
    pub sagas: Vec<SagaSummary>,
    /// The id to pass as the cursor of the next page, if there is one.
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub step: Option<String>,
    pub attempt: i32,
    pub event: String,
    pub detail: Option<String>,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailureGroup {
    pub step: Option<String>,
    pub phase: String,
    pub error: String,
    pub count: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

/// `LIKE` treats `%`, `_` and `\` specially; a filter means them literally.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn push_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &SagaFilter) {
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(step) = filter.step {
        query
            .push(" AND current_step = ")
            .push_bind(step.routing_key());
    }
    if let Some(phase) = filter.phase {
        let status = match phase {
            Phase::Forward => "running",
            Phase::Compensating => "compensating",
        };
        query
            .push(
                " AND CASE WHEN status = 'suspended' \
                 THEN coalesce(state->>'suspended_from', 'running') ELSE status END = ",
            )
            .push_bind(status);
    }
    if let Some(error) = &filter.error {
        query
            .push(" AND last_error ILIKE ")
            .push_bind(like_pattern(error));
    }
    // Each time bound is also a bound on ids (UUIDv7), which the primary
    // key answers: the history outside the window is never read.
    if let Some(after) = filter.created_after {
        query
            .push(" AND created_at >= ")
            .push_bind(after)
            .push(" AND id >= ")
            .push_bind(id_time::lowest_id_created_from(after));
    }
    if let Some(before) = filter.created_before {
        query
            .push(" AND created_at < ")
            .push_bind(before)
            .push(" AND id < ")
            .push_bind(id_time::id_above_created_before(before));
    }
    if let Some(text) = &filter.search {
        query
            .push(" AND (customer_id = ")
            .push_bind(text.clone())
            .push(" OR client = ")
            .push_bind(text.clone())
            .push(" OR ");
        push_key_match(query, text);
        // Only a UUID can be a checkout id; anything else would be a
        // cast error in the query.
        if let Ok(id) = text.parse::<Uuid>() {
            query.push(" OR id = ").push_bind(id);
        }
        query.push(")");
    }
    if let Some(customer) = &filter.customer_id {
        query
            .push(" AND customer_id = ")
            .push_bind(customer.clone());
    }
    if let Some(client) = &filter.client {
        query.push(" AND client = ").push_bind(client.clone());
    }
    if let Some(key) = &filter.idempotency_key {
        query.push(" AND ");
        push_key_match(query, key);
    }
}

/// An idempotency key as a client sent it: stored as `<client>:<key>` since
/// clients exist, bare before. The candidates (as many as clients, plus
/// the bare key) are computed once into an array, so the match is one
/// lookup each on the unique index, also inside an `OR` with other
/// indexed conditions; a subquery there would make it a walk of the table.
fn push_key_match(query: &mut QueryBuilder<'_, Postgres>, key: &str) {
    query
        .push("idempotency_key = ANY(ARRAY(SELECT name || ':' || ")
        .push_bind(key.to_owned())
        .push("::text FROM checkout_clients) || ")
        .push_bind(key.to_owned())
        .push("::text)");
}

impl Store {
    /// Sagas matching `filter`, newest first, `limit` per page, after the
    /// `cursor` of the previous page. Ids are UUIDv7: id order is time order.
    pub async fn list(
        &self,
        filter: &SagaFilter,
        limit: u32,
        cursor: Option<Uuid>,
    ) -> Result<SagaPage, StoreError> {
        let mut query = QueryBuilder::new(
            "SELECT id, state, client, created_at, updated_at FROM sagas WHERE true",
        );
        push_filter(&mut query, filter);
        if let Some(cursor) = cursor {
            query.push(" AND id < ").push_bind(cursor);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<Row> = query.build_query_as().fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let sagas = rows
            .into_iter()
            .take(limit as usize)
            .map(|row| row.into_record().map(|r| SagaSummary::from(&r)))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = more.then(|| sagas.last().map(|s| s.saga_id)).flatten();
        Ok(SagaPage { sagas, next_cursor })
    }

    /// Ids of the suspended sagas `selection` names, oldest first, at most
    /// [`MAX_BULK`].
    #[tracing::instrument(skip_all)]
    pub async fn suspended_ids(&self, selection: &BulkSelection) -> Result<Vec<Uuid>, StoreError> {
        let mut query = QueryBuilder::new("SELECT id FROM sagas WHERE status = 'suspended'");
        match selection {
            BulkSelection::Group { step, phase, error } => {
                let phase = match phase {
                    Phase::Forward => "forward",
                    Phase::Compensating => "compensating",
                };
                query
                    .push(" AND current_step = ")
                    .push_bind(step.routing_key())
                    .push(format!(" AND {PARKED_PHASE} = "))
                    .push_bind(phase)
                    .push(" AND COALESCE(last_error, '') = ")
                    .push_bind(error.clone());
            }
            BulkSelection::Ids(ids) => {
                query
                    .push(" AND id = ANY(")
                    .push_bind(ids.clone())
                    .push(")");
            }
        }
        query.push(" ORDER BY id LIMIT ").push_bind(MAX_BULK);
        Ok(query.build_query_scalar().fetch_all(&self.pool).await?)
    }

    pub async fn timeline(&self, id: Uuid) -> Result<Vec<TimelineEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, step, attempt, event, detail, actor, reason
             FROM saga_events WHERE saga_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn deadline_of(&self, id: Uuid) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT deadline_at FROM sagas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Suspended sagas grouped by where and why they parked, largest first.
    pub async fn failures(&self) -> Result<Vec<FailureGroup>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT current_step AS step, {PARKED_PHASE} AS phase,
                    COALESCE(last_error, '') AS error,
                    count(*) AS count, min(updated_at) AS oldest, max(updated_at) AS newest
             FROM sagas WHERE status = 'suspended'
             GROUP BY 1, 2, 3 ORDER BY count DESC, step, error"
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Sagas in each status, every status named (0 when none).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    pub running: i64,
    pub compensating: i64,
    pub suspended: i64,
    pub completed: i64,
    pub compensated: i64,
    pub cancelled: i64,
    pub total: i64,
}

impl FromIterator<(SagaStatus, i64)> for StatusCounts {
    fn from_iter<I: IntoIterator<Item = (SagaStatus, i64)>>(counts: I) -> Self {
        let mut all = StatusCounts::default();
        for (status, n) in counts {
            let slot = match status {
                SagaStatus::Running => &mut all.running,
                SagaStatus::Compensating => &mut all.compensating,
                SagaStatus::Suspended => &mut all.suspended,
                SagaStatus::Completed => &mut all.completed,
                SagaStatus::Compensated => &mut all.compensated,
                SagaStatus::Cancelled => &mut all.cancelled,
            };
            *slot += n;
            all.total += n;
        }
        all
    }
}

/// How many checkouts ended, or parked, in one minute.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MinuteOutcomes {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    /// Compensated: what the checkout client sees as `rejected`.
    pub rejected: i64,
    /// Times a saga was parked for support (one saga parked again after a
    /// retry counts again).
    pub suspended: i64,
}

/// The longest stretch the per-minute outcomes cover: a day.
pub const MAX_MINUTES: u32 = 24 * 60;

impl Store {
    /// Checkouts completed, rejected and parked in each of the last
    /// `minutes` minutes (the current one so far included), oldest first,
    /// every minute present.
    #[tracing::instrument(skip_all, fields(minutes))]
    pub async fn outcomes_per_minute(
        &self,
        minutes: u32,
    ) -> Result<Vec<MinuteOutcomes>, StoreError> {
        // The event list is the `saga_events_outcomes` index's predicate;
        // the lower bound is written out (not read from `span`) so that the
        // planner sees how few rows it leaves and stays on that index.
        Ok(sqlx::query_as(
            "WITH span AS (
                 SELECT date_trunc('minute', now()) - ($1::int - 1) * interval '1 minute' AS since
             ), outcomes AS (
                 SELECT date_trunc('minute', at) AS minute,
                        count(*) FILTER (WHERE event = 'completed') AS completed,
                        count(*) FILTER (WHERE event = 'compensated') AS rejected,
                        count(*) FILTER (WHERE event = 'suspended') AS suspended
                 FROM saga_events
                 WHERE event IN ('completed', 'compensated', 'suspended')
                   AND at >= date_trunc('minute', now()) - ($1::int - 1) * interval '1 minute'
                 GROUP BY 1
             )
             SELECT m.minute, coalesce(o.completed, 0) AS completed,
                    coalesce(o.rejected, 0) AS rejected, coalesce(o.suspended, 0) AS suspended
             FROM span, generate_series(span.since, date_trunc('minute', now()), interval '1 minute')
                  AS m(minute)
             LEFT JOIN outcomes o USING (minute)
             ORDER BY m.minute",
        )
        .bind(minutes.clamp(1, MAX_MINUTES) as i32)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_wildcards_in_a_filter_are_literal() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
