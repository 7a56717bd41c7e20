//! The support API: find sagas, read their timelines, retry or cancel them,
//! alone or in bulk. Every route needs a support bearer token ([`Actor`]).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use saga_shared::Step;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Actor;
use super::problem::{ApiError, FieldError};
use super::validation;
use super::AppState;
use crate::saga::{Action, CheckoutRequest, Phase, SagaStatus};
use crate::store::dead_letters::DeadLetter;
use crate::store::{
    BulkSelection, FailureGroup, SagaFilter, SagaRecord, SagaSummary, StoreError, TimelineEntry,
    MAX_BULK, MAX_PAGE,
};

const DEFAULT_PAGE: u32 = 50;
pub(crate) const MAX_REASON_CHARS: usize = 500;
/// Sagas retried at once by a bulk retry.
const BULK_CONCURRENCY: usize = 8;
/// A bulk retry's body holds up to [`MAX_BULK`] saga ids (39 bytes each
/// in JSON), beyond the API's usual body limit.
pub const BULK_BODY_BYTES: usize = 512 * 1024;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    status: Option<String>,
    step: Option<String>,
    phase: Option<String>,
    error: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// A checkout id, a customer id or an idempotency key, matched exactly
    /// against all three (what support pastes when a customer calls).
    #[param(max_length = 255)]
    q: Option<String>,
    /// Only this customer's sagas (exact).
    #[param(max_length = 128)]
    customer_id: Option<String>,
    /// Only the saga created with this `Idempotency-Key` (exact, as the
    /// client sent it; with `client`, that client's alone).
    #[param(max_length = 255)]
    idempotency_key: Option<String>,
    /// Only this checkout client's sagas (exact).
    #[param(max_length = 64)]
    client: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SagaList {
    sagas: Vec<SagaSummary>,
    next_cursor: Option<Uuid>,
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

fn parse_status(text: &str) -> Result<SagaStatus, FieldError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        invalid(
            "status",
            "must be one of running, compensating, suspended, completed, compensated, cancelled",
        )
    })
}

fn parse_step(text: &str) -> Result<Step, FieldError> {
    Step::from_routing_key(text).ok_or_else(|| {
        let known: Vec<&str> = Step::ALL.iter().map(|s| s.routing_key()).collect();
        invalid("step", format!("must be one of {}", known.join(", ")))
    })
}

fn parse_phase(text: &str) -> Result<Phase, FieldError> {
    match text {
        "forward" => Ok(Phase::Forward),
        "compensating" => Ok(Phase::Compensating),
        _ => Err(invalid("phase", "must be forward or compensating")),
    }
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(field, "must be an RFC 3339 time, like 2026-11-25T10:00:00Z"))
}

/// Collects every field error rather than stopping at the first.
fn all_or_errors<T>(
    errors: &mut Vec<FieldError>,
    value: Option<Result<T, FieldError>>,
) -> Option<T> {
    match value? {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// `limit` of a page: 1..=MAX_PAGE, [`DEFAULT_PAGE`] when absent.
fn page_size(errors: &mut Vec<FieldError>, limit: Option<String>) -> u32 {
    all_or_errors(
        errors,
        limit.map(|l| match l.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(invalid(
                "limit",
                format!("must be a number from 1 to {MAX_PAGE}"),
            )),
        }),
    )
    .unwrap_or(DEFAULT_PAGE)
}

/// `cursor` of a page: what the previous page gave as `next_cursor`.
fn page_cursor<T: std::str::FromStr>(
    errors: &mut Vec<FieldError>,
    cursor: Option<String>,
) -> Option<T> {
    all_or_errors(
        errors,
        cursor.map(|c| {
            c.trim()
                .parse::<T>()
                .map_err(|_| invalid("cursor", "must be a `next_cursor` from an earlier page"))
        }),
    )
}

/// Every text a support user sends ends up in a query or in the timeline:
/// a control character (NUL above all, which PostgreSQL refuses in text)
/// is their mistake to hear about, never a 500.
pub(super) fn no_control_characters(errors: &mut Vec<FieldError>, fields: &[(&str, Option<&str>)]) {
    for (field, value) in fields {
        if value.is_some_and(|v| v.chars().any(char::is_control)) {
            errors.push(invalid(field, "must not contain control characters"));
        }
    }
}

pub(super) fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

#[utoipa::path(
    get, path = "/v1/admin/sagas", tag = "support", security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of sagas, newest first", body = SagaList),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Actor,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SagaList>, ApiError> {
    let params = validation::query(params)?;
    let mut errors = Vec::new();
    no_control_characters(
        &mut errors,
        &[
            ("status", params.status.as_deref()),
            ("step", params.step.as_deref()),
            ("phase", params.phase.as_deref()),
            ("error", params.error.as_deref()),
            ("created_after", params.created_after.as_deref()),
            ("created_before", params.created_before.as_deref()),
            ("limit", params.limit.as_deref()),
            ("cursor", params.cursor.as_deref()),
            ("q", params.q.as_deref()),
            ("customer_id", params.customer_id.as_deref()),
            ("idempotency_key", params.idempotency_key.as_deref()),
            ("client", params.client.as_deref()),
        ],
    );
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let search = super::search::terms(
        &mut errors,
        params.q,
        params.customer_id,
        params.idempotency_key,
        params.client,
    );
    let filter = SagaFilter {
        // Given empty, these are refused like any value outside their
        // set: the contract lists the values, and "" is not one of them.
        status: all_or_errors(&mut errors, params.status.map(|s| parse_status(s.trim()))),
        step: all_or_errors(&mut errors, params.step.map(|s| parse_step(s.trim()))),
        phase: all_or_errors(&mut errors, params.phase.map(|p| parse_phase(p.trim()))),
        error: non_empty(params.error),
        created_after: all_or_errors(
            &mut errors,
            params
                .created_after
                .map(|t| parse_time("created_after", t.trim())),
        ),
        created_before: all_or_errors(
            &mut errors,
            params
                .created_before
                .map(|t| parse_time("created_before", t.trim())),
        ),
        search: search.q,
        customer_id: search.customer_id,
        idempotency_key: search.idempotency_key,
        client: search.client,
    };
    let limit = page_size(&mut errors, params.limit);
    let cursor = page_cursor::<Uuid>(&mut errors, params.cursor);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let page = state.store.list(&filter, limit, cursor).await?;
    Ok(Json(SagaList {
        sagas: page.sagas,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StepView {
    step: String,
    attempts: usize,
    last_event: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    summary: SagaSummary,
    request: CheckoutRequest,
    reason: Option<String>,
    detail: Option<String>,
    subtotal_cents: Option<i64>,
    tax_cents: Option<i64>,
    completed_steps: Vec<Step>,
    pending_compensations: Vec<Step>,
    deadline_at: Option<DateTime<Utc>>,
    actions: Vec<&'static str>,
    steps: Vec<StepView>,
    timeline: Vec<TimelineEntry>,
}

/// Each step that was tried, in order: its attempts and how the last ended.
fn steps_of(timeline: &[TimelineEntry]) -> Vec<StepView> {
    let mut steps: Vec<StepView> = Vec::new();
    for entry in timeline {
        let Some(step) = &entry.step else { continue };
        let index = match steps.iter().position(|s| &s.step == step) {
            Some(i) => i,
            None => {
                steps.push(StepView {
                    step: step.clone(),
                    attempts: 0,
                    last_event: None,
                });
                steps.len() - 1
            }
        };
        let view = &mut steps[index];
        if entry.event == "sent" {
            view.attempts += 1;
        } else if !entry.event.starts_with("late_") {
            view.last_event = Some(entry.event.clone());
        }
    }
    steps
}

async fn detail_of(state: &AppState, id: Uuid) -> Result<SagaDetail, ApiError> {
    let record: SagaRecord = state
        .store
        .get(id)
        .await?
        .ok_or(StoreError::UnknownSaga(id))?;
    let (timeline, deadline_at) =
        tokio::try_join!(state.store.timeline(id), state.store.deadline_of(id))?;
    let saga = &record.saga;
    Ok(SagaDetail {
        summary: SagaSummary::from(&record),
        request: saga.request.clone(),
        reason: saga.reason.clone(),
        detail: saga.detail.clone(),
        subtotal_cents: saga.subtotal_cents(),
        tax_cents: saga.tax_cents(),
        completed_steps: saga.completed.clone(),
        pending_compensations: saga.compensations.clone(),
        deadline_at,
        actions: [Action::Retry, Action::Cancel]
            .into_iter()
            .filter(|a| a.allowed(saga))
            .map(Action::as_str)
            .collect(),
        steps: steps_of(&timeline),
        timeline,
    })
}

fn saga_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no saga with id `{text}`")))
}

#[utoipa::path(
    get, path = "/v1/admin/sagas/{id}", tag = "support", security(("bearer" = [])),
    params(("id" = String, Path, description = "The saga (checkout) id")),
    responses(
        (status = 200, description = "The saga, its steps and its timeline", body = SagaDetail),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    _: Actor,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, ApiError> {
    Ok(Json(detail_of(&state, saga_id(&id)?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    reason: Option<String>,
}

fn reason_of(reason: Option<String>) -> Result<String, ApiError> {
    let refused = |message: String| Err(ApiError::Invalid(vec![invalid("reason", message)]));
    let Some(reason) = reason else {
        return refused("is required: say why, for the timeline".to_owned());
    };
    match reason.trim() {
        "" => refused("must not be empty: say why, for the timeline".to_owned()),
        r if r.chars().any(char::is_control) => {
            refused("must not contain control characters".to_owned())
        }
        r if r.chars().count() > MAX_REASON_CHARS => {
            refused(format!("must be at most {MAX_REASON_CHARS} characters"))
        }
        r => Ok(r.to_owned()),
    }
}

async fn act(
    state: &AppState,
    Actor(actor): Actor,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    action: Action,
) -> Result<Json<SagaDetail>, ApiError> {
    let id = saga_id(id)?;
    let body: ActionBody = validation::parse_json(&validation::json_body(headers, body)?)?;
    let reason = reason_of(body.reason)?;
    state.store.act(id, action, &actor, &reason).await?;
    state.relay.notify_one();
    Ok(Json(detail_of(state, id).await?))
}

#[utoipa::path(
    post, path = "/v1/admin/sagas/{id}/retry", tag = "support", security(("bearer" = [])),
    description = "Re-run the parked action.",
    params(("id" = String, Path, description = "The saga (checkout) id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Done: the saga as it is now", body = SagaDetail),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is in a state this action does not apply to", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is missing or too long", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    actor: Actor,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SagaDetail>, ApiError> {
    act(&state, actor, &id, &headers, body, Action::Retry).await
}

#[utoipa::path(
    post, path = "/v1/admin/sagas/{id}/cancel", tag = "support", security(("bearer" = [])),
    description = "Compensate everything done, then cancelled.",
    params(("id" = String, Path, description = "The saga (checkout) id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Done: the saga as it is now", body = SagaDetail),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is in a state this action does not apply to", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is missing or too long", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    actor: Actor,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SagaDetail>, ApiError> {
    act(&state, actor, &id, &headers, body, Action::Cancel).await
}

/// How much longer a parked saga may stay parked, and why.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendParkBody {
    /// Added to its time limit: a whole number and a unit (ms, s, m, h,
    /// d), e.g. `24h`.
    by: Option<String>,
    reason: Option<String>,
}

/// The longest one extension: a week, then a person looks again.
const MAX_EXTENSION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Serialize, utoipa::ToSchema)]
pub struct ParkExtended {
    pub saga_id: Uuid,
    /// When the park now ends (cancelled with compensation) unless someone
    /// acts; absent when parks never expire (`PARKED_SAGA_TTL=0`).
    pub park_expires_at: Option<DateTime<Utc>>,
    pub saga: SagaDetail,
}

#[utoipa::path(
    post, path = "/v1/admin/sagas/{id}/extend-park", tag = "support", security(("bearer" = [])),
    description = "Give a parked saga more time before PARKED_SAGA_TTL cancels it with compensation.",
    params(("id" = String, Path, description = "The saga (checkout) id")),
    request_body = ExtendParkBody,
    responses(
        (status = 200, description = "Extended: when the park now ends, and the saga", body = ParkExtended),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is not parked", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The duration or the reason is missing or invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn extend_park(
    Actor(actor): Actor,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ParkExtended>, ApiError> {
    let id = saga_id(&id)?;
    let body: ExtendParkBody = validation::parse_json(&validation::json_body(&headers, body)?)?;
    let mut errors = Vec::new();
    let by = match body.by.as_deref().map(crate::duration_text::parse) {
        None => {
            errors.push(invalid(
                "by",
                "is required: how much longer, e.g. 24h".to_owned(),
            ));
            None
        }
        Some(Err(why)) => {
            errors.push(invalid("by", why));
            None
        }
        Some(Ok(by)) if by.is_zero() || by > MAX_EXTENSION => {
            errors.push(invalid(
                "by",
                "must be more than 0 and at most 7d".to_owned(),
            ));
            None
        }
        Some(Ok(by)) => Some(by),
    };
    let reason = match reason_of(body.reason) {
        Ok(reason) => Some(reason),
        Err(ApiError::Invalid(mut more)) => {
            errors.append(&mut more);
            None
        }
        Err(other) => return Err(other),
    };
    let (Some(by), Some(reason)) = (by, reason) else {
        return Err(ApiError::Invalid(errors));
    };
    let park_expires_at = state
        .store
        .extend_park(id, by, state.parked_saga_ttl, &actor, &reason)
        .await?;
    Ok(Json(ParkExtended {
        saga_id: id,
        park_expires_at,
        saga: detail_of(&state, id).await?,
    }))
}

/// Either one failure group (`step`, `phase` and `error` exactly as
/// `GET /v1/admin/failures` shows them) or `saga_ids` (as a dry run
/// returned them), not both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRetryBody {
    step: Option<String>,
    phase: Option<String>,
    /// The group's error text, exactly; `""` is the group parked without one.
    error: Option<String>,
    saga_ids: Option<Vec<Uuid>>,
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// What a bulk retry body selects, every field error at once.
fn bulk_selection(body: &BulkRetryBody) -> Result<BulkSelection, ApiError> {
    let mut errors = Vec::new();
    no_control_characters(
        &mut errors,
        &[
            ("step", body.step.as_deref()),
            ("phase", body.phase.as_deref()),
            ("error", body.error.as_deref()),
            ("reason", body.reason.as_deref()),
        ],
    );
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let group_given = body.step.is_some() || body.phase.is_some() || body.error.is_some();
    if let Some(ids) = &body.saga_ids {
        if group_given {
            errors.push(invalid(
                "saga_ids",
                "give either saga_ids or a group (step, phase, error), not both",
            ));
        } else if ids.is_empty() || ids.len() > MAX_BULK as usize {
            errors.push(invalid(
                "saga_ids",
                format!("must hold from 1 to {MAX_BULK} saga ids"),
            ));
        }
        return match errors.is_empty() {
            true => Ok(BulkSelection::Ids(ids.clone())),
            false => Err(ApiError::Invalid(errors)),
        };
    }
    let required = |field: &str| {
        invalid(
            field,
            "is required: a bulk retry takes one failure group (step, phase and error exactly as the failures list shows them) or saga_ids",
        )
    };
    let step = match body.step.as_deref().map(str::trim) {
        Some(step) if !step.is_empty() => all_or_errors(&mut errors, Some(parse_step(step))),
        _ => {
            errors.push(required("step"));
            None
        }
    };
    let phase = match body.phase.as_deref().map(str::trim) {
        Some(phase) if !phase.is_empty() => all_or_errors(&mut errors, Some(parse_phase(phase))),
        _ => {
            errors.push(required("phase"));
            None
        }
    };
    // Not trimmed: the group's text, byte for byte.
    let error = body.error.clone();
    if error.is_none() {
        errors.push(required("error"));
    }
    match (step, phase, error) {
        (Some(step), Some(phase), Some(error)) if errors.is_empty() => {
            Ok(BulkSelection::Group { step, phase, error })
        }
        _ => Err(ApiError::Invalid(errors)),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkRetried {
    dry_run: bool,
    count: usize,
    saga_ids: Vec<Uuid>,
    /// Selected but not retried because of an error (a database hiccup):
    /// still suspended, for another try.
    failed: Vec<Uuid>,
}

#[utoipa::path(
    post, path = "/v1/admin/sagas/retry", tag = "support", security(("bearer" = [])),
    request_body = BulkRetryBody,
    responses(
        (status = 200, description = "The sagas retried (or, with dry_run, that would be)", body = BulkRetried),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No group or ids, both, a field invalid, or the reason missing", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_retry(
    Actor(actor): Actor,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkRetried>, ApiError> {
    let body: BulkRetryBody = validation::parse_json(&validation::json_body(&headers, body)?)?;
    let selection = bulk_selection(&body)?;
    // A dry run needs no reason; one given anyway is held to the same rules,
    // so a body that passes its dry run passes for real too.
    let reason = match (body.dry_run, body.reason) {
        (true, None) => None,
        (_, reason) => Some(reason_of(reason)?),
    };
    let ids = state.store.suspended_ids(&selection).await?;
    let Some(reason) = reason.filter(|_| !body.dry_run) else {
        return Ok(Json(BulkRetried {
            dry_run: true,
            count: ids.len(),
            saga_ids: ids,
            failed: Vec::new(),
        }));
    };
    let store = &state.store;
    let (actor, reason) = (actor.as_str(), reason.as_str());
    let outcomes: Vec<(Uuid, Result<(), StoreError>)> = futures::stream::iter(ids)
        .map(|id| async move { (id, store.act(id, Action::Retry, actor, reason).await) })
        .buffer_unordered(BULK_CONCURRENCY)
        .collect()
        .await;
    state.relay.notify_one();
    let (mut saga_ids, mut failed, mut first_error) = (Vec::new(), Vec::new(), None);
    for (id, outcome) in outcomes {
        match outcome {
            Ok(()) => saga_ids.push(id),
            // Moved on since it was selected (another support user, a
            // concurrent bulk retry): not ours to retry any more.
            Err(StoreError::WrongState(_) | StoreError::UnknownSaga(_)) => {}
            Err(error) => {
                failed.push(id);
                first_error.get_or_insert(error);
            }
        }
    }
    // Nothing done at all: the error says why (a database that is down is a 503).
    if let (true, Some(error)) = (saga_ids.is_empty(), first_error) {
        return Err(error.into());
    }
    saga_ids.sort();
    failed.sort();
    tracing::info!(
        actor,
        count = saga_ids.len(),
        failed = failed.len(),
        "bulk retry"
    );
    Ok(Json(BulkRetried {
        dry_run: false,
        count: saga_ids.len(),
        saga_ids,
        failed,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Failures {
    total: i64,
    groups: Vec<FailureGroup>,
}

#[utoipa::path(
    get, path = "/v1/admin/failures", tag = "support", security(("bearer" = [])),
    responses(
        (status = 200, description = "Suspended sagas grouped by step, phase and error", body = Failures),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn failures(_: Actor, State(state): State<AppState>) -> Result<Json<Failures>, ApiError> {
    let groups = state.store.failures().await?;
    Ok(Json(Failures {
        total: groups.iter().map(|g| g.count).sum(),
        groups,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    saga_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    next_cursor: Option<String>,
}

/// Messages that could not be handled, newest first.
#[utoipa::path(
    get, path = "/v1/admin/dead-letters", tag = "support", security(("bearer" = [])),
    params(DeadLetterParams),
    responses(
        (status = 200, description = "Messages that could never be handled, newest first", body = DeadLetterList),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn dead_letters(
    _: Actor,
    State(state): State<AppState>,
    params: Result<Query<DeadLetterParams>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let params = validation::query(params)?;
    let mut errors = Vec::new();
    no_control_characters(
        &mut errors,
        &[
            ("saga_id", params.saga_id.as_deref()),
            ("limit", params.limit.as_deref()),
            ("cursor", params.cursor.as_deref()),
        ],
    );
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let saga_id = all_or_errors(
        &mut errors,
        params.saga_id.map(|id| {
            id.trim()
                .parse::<Uuid>()
                .map_err(|_| invalid("saga_id", "must be a saga id (a UUID)"))
        }),
    );
    let limit = page_size(&mut errors, params.limit);
    let cursor = page_cursor::<i64>(&mut errors, params.cursor);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let rows = state.store.dead_letters(saga_id, limit + 1, cursor).await?;
    let (rows, next_cursor) = page(rows, limit, |r| r.id);
    Ok(Json(DeadLetterList {
        dead_letters: rows,
        next_cursor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefusedCommandList {
    commands: Vec<crate::store::outbox::RefusedCommand>,
    next_cursor: Option<String>,
}

/// Commands the broker refused and that are still unsent, oldest first.
#[utoipa::path(
    get, path = "/v1/admin/outbox", tag = "support", security(("bearer" = [])),
    params(OutboxParams),
    responses(
        (status = 200, description = "Commands the broker refused (nacked, returned unroutable or never confirmed) that still wait in the outbox, oldest first", body = RefusedCommandList),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn outbox(
    _: Actor,
    State(state): State<AppState>,
    params: Result<Query<OutboxParams>, QueryRejection>,
) -> Result<Json<RefusedCommandList>, ApiError> {
    let params = validation::query(params)?;
    let mut errors = Vec::new();
    let limit = page_size(&mut errors, params.limit);
    let cursor = page_cursor::<i64>(&mut errors, params.cursor);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let commands = state
        .store
        .outbox()
        .refused(i64::from(limit) + 1, cursor)
        .await?;
    let (commands, next_cursor) = page(commands, limit, |c| c.id);
    Ok(Json(RefusedCommandList {
        commands,
        next_cursor,
    }))
}

/// A page of `rows`, fetched with one row more than `limit` to learn
/// whether another page follows, and the cursor of that page if so.
fn page<T>(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| id(r).to_string()))
        .flatten();
    (rows, next_cursor)
}
