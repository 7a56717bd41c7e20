//! One saga as support sees it: its state, amounts, what may be done to
//! it, each step's attempts and its whole timeline.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use saga_protocol::values::Cents;
use saga_protocol::Step;
use serde::Serialize;
use uuid::Uuid;

use super::saga_id::SagaId;
use crate::http::auth::Actor;
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::saga::{Action, CheckoutRequest};
use crate::store::{SagaRecord, SagaSummary, StoreError, TimelineEntry};

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

pub(super) async fn detail_of(state: &AppState, id: Uuid) -> Result<SagaDetail, ApiError> {
    let record: SagaRecord = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| state.not_found(id, || StoreError::UnknownSaga(id).into()))?;
    let (timeline, deadline_at) =
        tokio::try_join!(state.store.timeline(id), state.store.deadline_of(id))?;
    let saga = &record.saga;
    Ok(SagaDetail {
        summary: SagaSummary::from(&record),
        request: saga.request.clone(),
        reason: saga.reason.clone(),
        detail: saga.detail.clone(),
        subtotal_cents: saga.subtotal_cents().map(Cents::get),
        tax_cents: saga.tax_cents().map(Cents::get),
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

#[utoipa::path(
    get, path = "/v1/admin/sagas/{id}", tag = "support", security(("bearer" = [])),
    params(SagaId),
    responses(
        (status = 200, description = "The saga, its steps and its timeline", body = SagaDetail),
    )
)]
pub async fn detail(
    _: Actor,
    State(state): State<AppState>,
    SagaId(id): SagaId,
) -> Result<Json<SagaDetail>, ApiError> {
    Ok(Json(detail_of(&state, id).await?))
}
