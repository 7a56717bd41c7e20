//! Messages that could never be handled, kept for support to read.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::field::all_or_errors;
use super::page::{page, PageRequest};
use super::query::{CheckedQuery, SupportQuery};
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::dead_letters::DeadLetter;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    saga_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl SupportQuery for DeadLetterParams {
    type Read = (Option<Uuid>, PageRequest<i64>);

    fn texts(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("saga_id", self.saga_id.as_deref()),
            ("limit", self.limit.as_deref()),
            ("cursor", self.cursor.as_deref()),
        ]
    }

    fn read(self, errors: &mut Vec<FieldError>) -> Self::Read {
        let saga_id = all_or_errors(
            errors,
            self.saga_id.map(|id| {
                id.trim()
                    .parse::<Uuid>()
                    .map_err(|_| FieldError::new("saga_id", "must be a saga id (a UUID)"))
            }),
        );
        (saga_id, PageRequest::read(errors, self.limit, self.cursor))
    }
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
    )
)]
pub async fn dead_letters(
    _: Actor,
    State(state): State<AppState>,
    CheckedQuery((saga_id, request)): CheckedQuery<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let PageRequest { limit, cursor } = request;
    let rows = state.store.dead_letters(saga_id, limit + 1, cursor).await?;
    let (rows, next_cursor) = page(rows, limit, |r| r.id);
    Ok(Json(DeadLetterList {
        dead_letters: rows,
        next_cursor,
    }))
}
