//! The failures board: suspended sagas grouped by where and why they parked.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::http::auth::Actor;
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::store::FailureGroup;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Failures {
    total: i64,
    groups: Vec<FailureGroup>,
}

#[utoipa::path(
    get, path = "/v1/admin/failures", tag = "support", security(("bearer" = [])),
    responses(
        (status = 200, description = "Suspended sagas grouped by step, phase and error", body = Failures),
    )
)]
pub async fn failures(_: Actor, State(state): State<AppState>) -> Result<Json<Failures>, ApiError> {
    let groups = state.store.failures().await?;
    Ok(Json(Failures {
        total: groups.iter().map(|g| g.count).sum(),
        groups,
    }))
}
