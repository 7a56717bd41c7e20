//! Numbers for the console's header: sagas by status now, and checkouts
//! completed, rejected and parked per minute. Support bearer token needed.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::field::{all_or_errors, parse_count};
use super::query::{CheckedQuery, SupportQuery};
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::{MinuteOutcomes, StatusCounts, MAX_MINUTES};

/// The console's chart: the last hour.
const DEFAULT_MINUTES: u32 = 60;

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusStats {
    counts: StatusCounts,
}

#[utoipa::path(
    get, path = "/v1/admin/stats/statuses", tag = "support", security(("bearer" = [])),
    description = "Sagas in each status. Counted every few seconds (the same counts as \
                   the `checkout_sagas` gauge on /metrics), so refreshing it often costs \
                   the database nothing.",
    responses(
        (status = 200, description = "Sagas in each status", body = StatusStats),
    )
)]
pub async fn statuses(
    _: Actor,
    State(state): State<AppState>,
) -> Result<Json<StatusStats>, ApiError> {
    // Only in the moment after start is there no count yet: the request
    // waits for the first (bounded by the request timeout) rather than
    // count the whole table once more.
    let counts = state
        .gauges
        .saga_counts_once_counted()
        .await
        .into_iter()
        .collect();
    Ok(Json(StatusStats { counts }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MinuteParams {
    /// How many minutes back, the current one included (1 to 1440, default 60).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1440)]
    minutes: Option<String>,
}

impl SupportQuery for MinuteParams {
    type Read = u32;

    fn texts(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![("minutes", self.minutes.as_deref())]
    }

    fn read(self, errors: &mut Vec<FieldError>) -> u32 {
        // Given empty, it is refused like any other filter: only an absent
        // `minutes` means the default.
        all_or_errors(
            errors,
            self.minutes
                .map(|m| parse_count("minutes", &m, MAX_MINUTES)),
        )
        .unwrap_or(DEFAULT_MINUTES)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MinuteStats {
    /// Oldest first, one entry per minute (zeros included); the last is
    /// the current minute so far.
    minutes: Vec<MinuteOutcomes>,
}

#[utoipa::path(
    get, path = "/v1/admin/stats/minutes", tag = "support", security(("bearer" = [])),
    params(MinuteParams),
    responses(
        (status = 200, description = "Checkouts completed, rejected and suspended per minute", body = MinuteStats),
        (status = 422, description = "`minutes` is not a number from 1 to 1440", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn minutes(
    _: Actor,
    State(state): State<AppState>,
    CheckedQuery(minutes): CheckedQuery<MinuteParams>,
) -> Result<Json<MinuteStats>, ApiError> {
    Ok(Json(MinuteStats {
        minutes: state.store.outcomes_per_minute(minutes).await?,
    }))
}
