//! Commands the broker refused that still wait in the outbox.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::page::{page, PageRequest};
use super::query::{CheckedQuery, SupportQuery};
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    limit: Option<String>,
    cursor: Option<String>,
}

impl SupportQuery for OutboxParams {
    type Read = PageRequest<i64>;

    fn texts(&self) -> Vec<(&'static str, Option<&str>)> {
        // Both are numbers, read once trimmed: a control character is
        // either white space trimmed away or refused as not a number.
        Vec::new()
    }

    fn read(self, errors: &mut Vec<FieldError>) -> Self::Read {
        PageRequest::read(errors, self.limit, self.cursor)
    }
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
    )
)]
pub async fn outbox(
    _: Actor,
    State(state): State<AppState>,
    CheckedQuery(PageRequest { limit, cursor }): CheckedQuery<OutboxParams>,
) -> Result<Json<RefusedCommandList>, ApiError> {
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
