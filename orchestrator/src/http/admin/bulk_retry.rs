//! Retry many suspended sagas at once: one failure group, or the ids a dry
//! run listed.

use axum::extract::State;
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::field::{all_or_errors, no_control_characters, parse_phase, parse_step};
use super::json_body::JsonBody;
use super::reason::reason_of;
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;
use crate::saga::Action;
use crate::store::{BulkSelection, StoreError, MAX_BULK};

/// Sagas retried at once by a bulk retry.
const BULK_CONCURRENCY: usize = 8;
/// A bulk retry's body holds up to [`MAX_BULK`] saga ids (39 bytes each
/// in JSON), beyond the API's usual body limit.
pub const BULK_BODY_BYTES: usize = 512 * 1024;

/// Either one failure group (`step`, `phase` and `error` exactly as
/// `GET /v1/admin/failures` shows them) or `saga_ids` (as a dry run
/// returned them), not both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryBody {
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
            errors.push(FieldError::new(
                "saga_ids",
                "give either saga_ids or a group (step, phase, error), not both",
            ));
        } else if ids.is_empty() || ids.len() > MAX_BULK as usize {
            errors.push(FieldError::new(
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
        FieldError::new(
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
        (status = 422, description = "No group or ids, both, a field invalid, or the reason missing", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_retry(
    Actor(actor): Actor,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BulkRetryBody>,
) -> Result<Json<BulkRetried>, ApiError> {
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
