//! Commands the broker refused that still wait in the outbox.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::page::{page, page_cursor, page_size};
use crate::http::auth::Actor;
use crate::http::problem::ApiError;
use crate::http::{validation, AppState};
use crate::store::StoreError;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefusedCommandList {
    commands: Vec<crate::relay::RefusedCommand>,
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
    let commands = crate::relay::refused(state.store.pool(), i64::from(limit) + 1, cursor)
        .await
        .map_err(StoreError::from)?;
    let (commands, next_cursor) = page(commands, limit, |c| c.id);
    Ok(Json(RefusedCommandList {
        commands,
        next_cursor,
    }))
}
