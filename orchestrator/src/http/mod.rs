//! The HTTP API: routes, shared state, health.

pub mod admin;
pub mod auth;
pub mod checkouts;
pub mod client_auth;
pub mod console;
pub mod openapi;
pub mod problem;
pub mod server;
pub mod validation;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_shared::broker::Broker;
use saga_shared::traceparent;
use serde_json::json;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

use crate::clients::Clients;
use crate::config::HttpLimits;
use crate::gauges::DatabaseGauges;
use crate::listener::Waiters;
use crate::store::Store;
use auth::AdminTokens;
use problem::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub broker: Arc<Broker>,
    /// Wakes this instance's relay right after a commit.
    pub relay: Arc<Notify>,
    /// The long-polls waiting for their saga to finish.
    pub waiters: Arc<Waiters>,
    pub admin_tokens: Arc<AdminTokens>,
    pub clients: Clients,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub gauges: DatabaseGauges,
    pub limits: HttpLimits,
    /// `PARKED_SAGA_TTL`; `None`: parks never expire.
    pub parked_saga_ttl: Option<std::time::Duration>,
    /// `RETENTION_DAYS`: a saga missing and older than this was archived.
    pub retention: crate::retention::RetentionConfig,
}

impl AppState {
    /// Why saga `id` is not found: past the retention, or simply unknown.
    pub fn not_found(&self, id: uuid::Uuid, unknown: impl FnOnce() -> ApiError) -> ApiError {
        match (
            saga_protocol::saga_id::drawn_at(id).filter(|created| self.retention.is_past(*created)),
            self.retention.days,
        ) {
            (Some(_), Some(days)) => ApiError::PastRetention { id, days },
            _ => unknown(),
        }
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything: one listener for all (no `ADMIN_HTTP_ADDR`).
    All,
    /// The checkout API, the OpenAPI document and the health checks.
    Public,
    /// The support API, console and `/metrics`, with the health checks.
    Admin,
}

pub fn router(state: AppState, routes: Routes) -> Router {
    let public = routes != Routes::Admin;
    let admin = routes != Routes::Public;
    // The long-poll bounds itself: its `wait` plus the request timeout.
    // A bulk retry acts on up to MAX_BULK sagas one after the other, each
    // committed as it goes: cut off by the request timeout, it would
    // answer 503 having retried some of them, and report none.
    let mut unbounded = Router::new();
    let mut bounded = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if public {
        unbounded = unbounded.route("/v1/checkouts/{id}", get(checkouts::get));
        bounded = bounded
            .route("/v1/checkouts", post(checkouts::create))
            .route("/openapi.json", get(openapi::document));
    }
    if admin {
        unbounded = unbounded.merge(admin::unbounded_routes());
        bounded = bounded
            .merge(admin::routes())
            .route("/admin", get(console::page))
            .route("/metrics", get(metrics));
    }
    bounded
        .route_layer(axum::middleware::from_fn_with_state(
            state.limits.request_timeout,
            within_request_timeout,
        ))
        .merge(unbounded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(validation::MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The request's span (as tower-http's default one), made a child of the
/// client's span when the request carries a W3C `traceparent`: a storefront
/// that traces its own requests finds the whole saga inside its trace.
fn request_span(request: &Request) -> tracing::Span {
    // INFO, not tower-http's DEBUG: the trace filter keeps this crate's
    // spans from INFO on.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
    );
    let parent = request
        .headers()
        .get(traceparent::HEADER)
        .and_then(|value| value.to_str().ok());
    traceparent::continue_from(&span, parent);
    span
}

/// A request still running after the timeout is answered `503`; what it
/// was doing is dropped (a transaction in flight rolls back).
async fn within_request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut(timeout).into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// Prometheus text format.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = crate::gauges::render(
        &state.metrics,
        &state.gauges,
        &state.waiters,
        state.broker.blocked().is_some(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when both the database and the broker answer; says which is down.
/// A broker that blocks publishing (a resource alarm) leaves the instance
/// ready: checkouts are still accepted, their commands wait in the outbox
/// and go out once the alarm clears; the body says `blocked` and why.
/// Likewise a broker that refuses every publish (a cluster whose queues
/// lost their majority): `degraded`. `broker_node` names the node in use.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // Answer promptly even when the database hangs: a probe that waits
    // for the pool's acquire timeout is itself a problem.
    let database = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.answers())
        .await
        .unwrap_or(false);
    let broker = state.broker.is_connected();
    let blocked = state.broker.blocked().filter(|_| broker);
    let refusing = state.broker.refusing_since().filter(|_| broker);
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "checks": {
            "database": word(database),
            "broker": match (&blocked, refusing) {
                (Some(_), _) => "blocked",
                (None, Some(_)) => "degraded",
                (None, None) => word(broker),
            },
        },
    });
    if let Some(node) = state.broker.node() {
        body["broker_node"] = json!(node);
    }
    if let Some(since) = refusing {
        body["broker_degraded"] =
            json!({"reason": "publishes are nacked or unconfirmed", "since": since});
    }
    if let Some(blocked) = blocked {
        body["broker_blocked"] = json!({"reason": blocked.reason, "since": blocked.since});
    }
    (status, Json(body))
}
