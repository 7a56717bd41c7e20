//! Messages that could never be handled, kept for support to read.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::field::{all_or_errors, no_control_characters};
use super::page::{page, page_cursor, page_size};
use crate::dead_letters::DeadLetter;
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::{validation, AppState};
use crate::store::StoreError;

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
                .map_err(|_| FieldError::new("saga_id", "must be a saga id (a UUID)"))
        }),
    );
    let limit = page_size(&mut errors, params.limit);
    let cursor = page_cursor::<i64>(&mut errors, params.cursor);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let rows = crate::dead_letters::list(state.store.pool(), saga_id, limit + 1, cursor)
        .await
        .map_err(StoreError::from)?;
    let (rows, next_cursor) = page(rows, limit, |r| r.id);
    Ok(Json(DeadLetterList {
        dead_letters: rows,
        next_cursor,
    }))
}
