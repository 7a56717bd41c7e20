//! Retry or cancel one saga, saying why.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::json_body::JsonBody;
use super::reason::reason_of;
use super::saga_detail::{detail_of, SagaDetail};
use super::saga_id::SagaId;
use crate::http::auth::Actor;
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::saga::Action;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    reason: Option<String>,
}

async fn act(
    state: &AppState,
    Actor(actor): Actor,
    id: Uuid,
    body: ActionBody,
    action: Action,
) -> Result<Json<SagaDetail>, ApiError> {
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
        (status = 409, description = "The saga is in a state this action does not apply to", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is missing or too long", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    actor: Actor,
    State(state): State<AppState>,
    SagaId(id): SagaId,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Json<SagaDetail>, ApiError> {
    act(&state, actor, id, body, Action::Retry).await
}

#[utoipa::path(
    post, path = "/v1/admin/sagas/{id}/cancel", tag = "support", security(("bearer" = [])),
    description = "Compensate everything done, then cancelled.",
    params(("id" = String, Path, description = "The saga (checkout) id")),
    request_body = ActionBody,
    responses(
        (status = 200, description = "Done: the saga as it is now", body = SagaDetail),
        (status = 409, description = "The saga is in a state this action does not apply to", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is missing or too long", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    actor: Actor,
    State(state): State<AppState>,
    SagaId(id): SagaId,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Json<SagaDetail>, ApiError> {
    act(&state, actor, id, body, Action::Cancel).await
}
