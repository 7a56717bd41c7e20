//! The support API, one file per resource: find sagas, read their
//! timelines, retry or cancel them, alone or in bulk; the failures, dead
//! letters and refused commands behind them; the console's numbers; the
//! checkout clients. Every route needs a support bearer token
//! ([`Actor`](super::auth::Actor)).

pub mod bulk_retry;
pub mod clients;
pub mod dead_letters;
pub mod failures;
pub mod json_body;
pub mod outbox;
pub mod park_extension;
pub mod reason;
pub mod saga_actions;
pub mod saga_detail;
pub mod saga_id;
pub mod saga_list;
pub mod saga_search;
pub mod stats;

pub mod page;
pub mod query;

mod field;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};
use axum::Router;

use super::AppState;

/// The support API's routes, but for [`unbounded_routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/sagas", get(saga_list::list))
        .route("/v1/admin/sagas/{id}", get(saga_detail::detail))
        .route("/v1/admin/sagas/{id}/retry", post(saga_actions::retry))
        .route("/v1/admin/sagas/{id}/cancel", post(saga_actions::cancel))
        .route(
            "/v1/admin/sagas/{id}/extend-park",
            post(park_extension::extend_park),
        )
        .route("/v1/admin/failures", get(failures::failures))
        .route("/v1/admin/dead-letters", get(dead_letters::dead_letters))
        .route("/v1/admin/outbox", get(outbox::outbox))
        .route("/v1/admin/stats/statuses", get(stats::statuses))
        .route("/v1/admin/stats/minutes", get(stats::minutes))
        .route("/v1/admin/clients", get(clients::list).post(clients::add))
        .route("/v1/admin/clients/{name}", patch(clients::set_limits))
        .route("/v1/admin/clients/{name}/revoke", post(clients::revoke))
}

/// The routes the request timeout must not cut off (see [`super::router`]).
pub(super) fn unbounded_routes() -> Router<AppState> {
    Router::new().route(
        "/v1/admin/sagas/retry",
        post(bulk_retry::bulk_retry).layer(DefaultBodyLimit::max(bulk_retry::BULK_BODY_BYTES)),
    )
}
