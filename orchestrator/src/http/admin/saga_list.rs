//! The saga list: sagas found by their state, their last error, when they
//! were created, or what support has at hand when a customer calls.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::field::{
    all_or_errors, no_control_characters, non_empty, parse_phase, parse_status, parse_step,
    parse_time,
};
use super::page::{page_cursor, page_size};
use crate::http::auth::Actor;
use crate::http::problem::ApiError;
use crate::http::{validation, AppState};
use crate::store::{SagaFilter, SagaSummary};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    status: Option<String>,
    step: Option<String>,
    phase: Option<String>,
    error: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// A checkout id, a customer id or an idempotency key, matched exactly
    /// against all three (what support pastes when a customer calls).
    #[param(max_length = 255)]
    q: Option<String>,
    /// Only this customer's sagas (exact).
    #[param(max_length = 128)]
    customer_id: Option<String>,
    /// Only the saga created with this `Idempotency-Key` (exact, as the
    /// client sent it; with `client`, that client's alone).
    #[param(max_length = 255)]
    idempotency_key: Option<String>,
    /// Only this checkout client's sagas (exact).
    #[param(max_length = 64)]
    client: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SagaList {
    sagas: Vec<SagaSummary>,
    next_cursor: Option<Uuid>,
}

#[utoipa::path(
    get, path = "/v1/admin/sagas", tag = "support", security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of sagas, newest first", body = SagaList),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Actor,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SagaList>, ApiError> {
    let params = validation::query(params)?;
    let mut errors = Vec::new();
    no_control_characters(
        &mut errors,
        &[
            ("status", params.status.as_deref()),
            ("step", params.step.as_deref()),
            ("phase", params.phase.as_deref()),
            ("error", params.error.as_deref()),
            ("created_after", params.created_after.as_deref()),
            ("created_before", params.created_before.as_deref()),
            ("limit", params.limit.as_deref()),
            ("cursor", params.cursor.as_deref()),
            ("q", params.q.as_deref()),
            ("customer_id", params.customer_id.as_deref()),
            ("idempotency_key", params.idempotency_key.as_deref()),
            ("client", params.client.as_deref()),
        ],
    );
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let search = super::saga_search::terms(
        &mut errors,
        params.q,
        params.customer_id,
        params.idempotency_key,
        params.client,
    );
    let filter = SagaFilter {
        // Given empty, these are refused like any value outside their
        // set: the contract lists the values, and "" is not one of them.
        status: all_or_errors(&mut errors, params.status.map(|s| parse_status(s.trim()))),
        step: all_or_errors(&mut errors, params.step.map(|s| parse_step(s.trim()))),
        phase: all_or_errors(&mut errors, params.phase.map(|p| parse_phase(p.trim()))),
        error: non_empty(params.error),
        created_after: all_or_errors(
            &mut errors,
            params
                .created_after
                .map(|t| parse_time("created_after", t.trim())),
        ),
        created_before: all_or_errors(
            &mut errors,
            params
                .created_before
                .map(|t| parse_time("created_before", t.trim())),
        ),
        search: search.q,
        customer_id: search.customer_id,
        idempotency_key: search.idempotency_key,
        client: search.client,
    };
    let limit = page_size(&mut errors, params.limit);
    let cursor = page_cursor::<Uuid>(&mut errors, params.cursor);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let page = state.store.list(&filter, limit, cursor).await?;
    Ok(Json(SagaList {
        sagas: page.sagas,
        next_cursor: page.next_cursor,
    }))
}
