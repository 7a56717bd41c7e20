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
use crate::http::problem::{ApiError, Problem};
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

/// What both actions answer: they differ only in what they do to the saga.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    clippy::large_enum_variant,
    reason = "never built: it only documents the answers, the handlers build them"
)]
enum ActionAnswers {
    #[response(status = 200, description = "Done: the saga as it is now")]
    Done(SagaDetail),
    #[response(
        status = 409,
        description = "The saga is in a state this action does not apply to",
        content_type = "application/problem+json"
    )]
    NotApplicable(Problem<'static>),
    #[response(
        status = 422,
        description = "The reason is missing or too long",
        content_type = "application/problem+json"
    )]
    Invalid(Problem<'static>),
}

/// One route per action: utoipa documents a handler by its attribute, so
/// the two are written once here and differ in their path, their
/// description and the [`Action`] they take.
macro_rules! action_route {
    ($name:ident, $path:tt, $description:tt, $action:expr) => {
        #[utoipa::path(post, path = $path, description = $description, tag = "support", security(("bearer" = [])), params(SagaId), request_body = ActionBody, responses(ActionAnswers))]
        pub async fn $name(
            actor: Actor,
            State(state): State<AppState>,
            SagaId(id): SagaId,
            JsonBody(body): JsonBody<ActionBody>,
        ) -> Result<Json<SagaDetail>, ApiError> {
            act(&state, actor, id, body, $action).await
        }
    };
}

action_route!(
    retry,
    "/v1/admin/sagas/{id}/retry",
    "Re-run the parked action.",
    Action::Retry
);
action_route!(
    cancel,
    "/v1/admin/sagas/{id}/cancel",
    "Compensate everything done, then cancelled.",
    Action::Cancel
);
