//! The saga list: sagas found by their state, their last error, when they
//! were created, or what support has at hand when a customer calls.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::field::{all_or_errors, non_empty, parse_phase, parse_status, parse_step, parse_time};
use super::page::PageRequest;
use super::query::{CheckedQuery, SupportQuery};
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;
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

impl SupportQuery for ListParams {
    type Read = (SagaFilter, PageRequest<Uuid>);

    fn texts(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("status", self.status.as_deref()),
            ("step", self.step.as_deref()),
            ("phase", self.phase.as_deref()),
            ("error", self.error.as_deref()),
            ("created_after", self.created_after.as_deref()),
            ("created_before", self.created_before.as_deref()),
            ("limit", self.limit.as_deref()),
            ("cursor", self.cursor.as_deref()),
            ("q", self.q.as_deref()),
            ("customer_id", self.customer_id.as_deref()),
            ("idempotency_key", self.idempotency_key.as_deref()),
            ("client", self.client.as_deref()),
        ]
    }

    fn read(self, errors: &mut Vec<FieldError>) -> Self::Read {
        let search = super::saga_search::terms(
            errors,
            self.q,
            self.customer_id,
            self.idempotency_key,
            self.client,
        );
        let filter = SagaFilter {
            // Given empty, these are refused like any value outside their
            // set: the contract lists the values, and "" is not one of them.
            status: all_or_errors(errors, self.status.map(|s| parse_status(s.trim()))),
            step: all_or_errors(errors, self.step.map(|s| parse_step(s.trim()))),
            phase: all_or_errors(errors, self.phase.map(|p| parse_phase(p.trim()))),
            error: non_empty(self.error),
            created_after: all_or_errors(
                errors,
                self.created_after
                    .map(|t| parse_time("created_after", t.trim())),
            ),
            created_before: all_or_errors(
                errors,
                self.created_before
                    .map(|t| parse_time("created_before", t.trim())),
            ),
            search: search.q,
            customer_id: search.customer_id,
            idempotency_key: search.idempotency_key,
            client: search.client,
        };
        (filter, PageRequest::read(errors, self.limit, self.cursor))
    }
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
        (status = 422, description = "A filter is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Actor,
    State(state): State<AppState>,
    CheckedQuery((filter, page)): CheckedQuery<ListParams>,
) -> Result<Json<SagaList>, ApiError> {
    let page = state.store.list(&filter, page.limit, page.cursor).await?;
    Ok(Json(SagaList {
        sagas: page.sagas,
        next_cursor: page.next_cursor,
    }))
}
