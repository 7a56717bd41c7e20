//! The checkout client API.

use std::pin::pin;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::client_auth::CheckoutClient;
use super::problem::{ApiError, FieldError};
use super::validation;
use super::AppState;
use crate::checkout_view::CheckoutView;
use crate::saga::ClientStatus;
use crate::store::{Created, Owner};

/// The longest `?wait=` a client may ask for.
pub const MAX_WAIT_SECONDS: u64 = 30;

fn location(id: Uuid) -> String {
    format!("/v1/checkouts/{id}")
}

#[utoipa::path(
    post, path = "/v1/checkouts", tag = "checkouts", security(("client_key" = [])),
    request_body = crate::http::validation::Body,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replaying the same key and body returns the same checkout")),
    responses(
        (status = 202, description = "Accepted: the checkout runs", body = CheckoutView),
        (status = 200, description = "The same key and body as before: that checkout", body = CheckoutView),
        (status = 429, description = "Over the client's rate (`rate-limited`) or its checkouts in flight (`too-many-in-flight`): retry after `Retry-After` seconds", body = crate::http::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait before retrying"), ("RateLimit-Limit" = u64, description = "The limit reached: the client's burst, or its checkouts in flight"), ("RateLimit-Remaining" = u64, description = "Always 0 on a 429"), ("RateLimit-Reset" = u64, description = "Seconds until the limit allows a checkout again"))),
        (status = 400, description = "Not JSON", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or the key was used with another body", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable (`unavailable`), or no database connection came free in time (`overloaded`: retry after `Retry-After` seconds)", body = crate::http::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u16, description = "With `overloaded`: seconds to wait before retrying"))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    CheckoutClient(client): CheckoutClient,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Err(refused) = state.clients.admit(&client) {
        metrics::counter!(crate::metrics::CLIENT_REFUSED, "limit" => "rate").increment(1);
        return Err(ApiError::RateLimited(refused));
    }
    let body = validation::json_body(&headers, body)?;
    let key = validation::idempotency_key(headers.get("idempotency-key"))?;
    let request = validation::parse_checkout(&body)?;
    let hash = hex(&Sha256::digest(
        serde_json::to_vec(&request).expect("request serializes"),
    ));
    let owner = Owner {
        client: &client.name,
        max_in_flight: client.limits.max_in_flight,
    };
    let created = state
        .store
        .create(request, owner, key.as_deref(), &hash)
        .await?;
    let (status, record) = match created {
        // The store handed its first command to the relay.
        Created::New(record) => (StatusCode::ACCEPTED, record),
        Created::Existing(record) => (StatusCode::OK, record),
        Created::KeyReused => return Err(ApiError::IdempotencyKeyReused),
        Created::TooManyInFlight => {
            metrics::counter!(crate::metrics::CLIENT_REFUSED, "limit" => "in_flight").increment(1);
            return Err(ApiError::TooManyInFlight(client.limits.max_in_flight));
        }
    };
    let view = CheckoutView::from(&record);
    Ok((
        status,
        [(header::LOCATION, location(view.checkout_id))],
        Json(view),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Seconds (0 to 30) to wait for a final status before answering.
    wait: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/checkouts/{id}", tag = "checkouts", security(("client_key" = [])),
    params(("id" = String, Path, description = "The checkout id"), GetParams),
    responses(
        (status = 200, description = "The checkout", body = CheckoutView),
        (status = 404, description = "No such checkout (or another client's): `not-found`; or `past-retention`: the id is older than the retention (`RETENTION_DAYS`), so the checkout, if it existed and finished, was archived", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`wait` out of range", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable (`unavailable`), no database connection came free in time (`overloaded`: retry after `Retry-After` seconds), too many long-polls wait already (`too-many-waiters`, with `Retry-After`), or the request timed out (`timeout`)", body = crate::http::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u16, description = "With `overloaded` or `too-many-waiters`: seconds to wait before retrying"))),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    CheckoutClient(client): CheckoutClient,
    Path(id): Path<String>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<CheckoutView>, ApiError> {
    let params = validation::query(params)?;
    let not_found = || ApiError::NotFound(format!("no checkout with id `{id}`"));
    let saga_id: Uuid = id.parse().map_err(|_| not_found())?;
    let wait = match params.wait.as_deref() {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(s) if s <= MAX_WAIT_SECONDS => s,
            _ => {
                return Err(ApiError::Invalid(vec![FieldError::new(
                    "wait",
                    format!("must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"),
                )]))
            }
        },
    };
    let budget = state.limits.request_timeout + Duration::from_secs(wait);
    tokio::time::timeout(budget, read_or_wait(&state, &client.name, saga_id, wait))
        .await
        .map_err(|_| ApiError::TimedOut(budget))?
        .map(Json)
}

/// The checkout now, or once final, or when `wait` seconds are over,
/// whichever comes first.
#[tracing::instrument(skip_all, fields(saga_id = %saga_id, wait))]
async fn read_or_wait(
    state: &AppState,
    client: &str,
    saga_id: Uuid,
    wait: u64,
) -> Result<CheckoutView, ApiError> {
    let read = || async {
        let record = state
            .store
            .get_for_client(saga_id, client)
            .await?
            .ok_or_else(|| {
                state.not_found(saga_id, || {
                    ApiError::NotFound(format!("no checkout with id `{saga_id}`"))
                })
            })?;
        Ok::<_, ApiError>(CheckoutView::from(&record))
    };
    if wait == 0 {
        return read().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Registered before the first read, so one read is enough: a finish
    // after it wakes us, with the answer in the notification.
    let waiter = match state.waiters.register(saga_id) {
        Ok(waiter) => waiter,
        // Full: only a poll that would really wait is turned away.
        Err(full) => {
            let view = read().await?;
            return match view.status {
                ClientStatus::Pending => Err(ApiError::TooManyWaiters(full.max)),
                _ => Ok(view),
            };
        }
    };
    // A notification carries any checkout's answer: it is taken only once
    // a read has shown the checkout to be this client's.
    let mut owned = false;
    loop {
        let mut woken = pin!(waiter.notified());
        woken.as_mut().enable();
        if let Some(view) = waiter.answer().filter(|_| owned) {
            return Ok(view);
        }
        let view = read().await?;
        owned = true;
        // Stopping: answer now, the client polls again elsewhere.
        if view.status != ClientStatus::Pending || state.waiters.is_closing() {
            return Ok(view);
        }
        let _asleep = waiter.sleeping();
        tokio::select! {
            // With the answer, or a re-check (the listener reconnected,
            // the notice was too large to carry it): read again.
            _ = woken => continue,
            // A notification can be lost (a listener between connections):
            // the answer at the deadline is read, not remembered.
            _ = tokio::time::sleep_until(deadline) => return read().await,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
