//! More time for a parked saga before `PARKED_SAGA_TTL` cancels it.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::json_body::JsonBody;
use super::reason::reason_of;
use super::saga_detail::{detail_of, SagaDetail};
use super::saga_id::SagaId;
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;

/// How much longer a parked saga may stay parked, and why.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendParkBody {
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
    params(SagaId),
    request_body = ExtendParkBody,
    responses(
        (status = 200, description = "Extended: when the park now ends, and the saga", body = ParkExtended),
        (status = 409, description = "The saga is not parked", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The duration or the reason is missing or invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn extend_park(
    Actor(actor): Actor,
    State(state): State<AppState>,
    SagaId(id): SagaId,
    JsonBody(body): JsonBody<ExtendParkBody>,
) -> Result<Json<ParkExtended>, ApiError> {
    let mut errors = Vec::new();
    let by = match body.by.as_deref().map(crate::duration_text::parse) {
        None => {
            errors.push(FieldError::new(
                "by",
                "is required: how much longer, e.g. 24h".to_owned(),
            ));
            None
        }
        Some(Err(why)) => {
            errors.push(FieldError::new("by", why));
            None
        }
        Some(Ok(by)) if by.is_zero() || by > MAX_EXTENSION => {
            errors.push(FieldError::new(
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
