//! Every API error, mapped to an RFC 9457 problem body in one place.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::clients::RateRefused;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`items[1].quantity`), or a header name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    NotFound(String),
    /// Not here, and created before the retention: if it finished, it was
    /// archived. Said from the id alone, so it tells no one whether it was
    /// theirs, or existed at all.
    #[error("no checkout with id `{id}` is kept: finished checkouts are archived {days} days after they were created, and this id is older; support can read it back from the archive")]
    PastRetention { id: uuid::Uuid, days: u32 },
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("over this client's rate of checkouts; try again after Retry-After")]
    RateLimited(RateRefused),
    #[error(
        "this client has {0} checkouts in flight already, its limit; try again once some finish"
    )]
    TooManyInFlight(u32),
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("{0} long-polls are waiting already; poll again without `wait`, or later")]
    TooManyWaiters(usize),
    #[error("the request took longer than {} s", .0.as_secs())]
    TimedOut(std::time::Duration),
    #[error("the service is busy: no database connection came free in time; try again after Retry-After")]
    Overloaded,
    #[error("internal error")]
    Internal(String),
}

/// What an `overloaded` answer asks the client to wait: long enough for a
/// burst to drain, short enough for a storefront to retry in the same visit.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u16 = 2;

/// What a `too-many-in-flight` answer asks the client to wait.
pub const IN_FLIGHT_RETRY_AFTER_SECONDS: u64 = 1;

/// A query outside [`crate::store::Store`]'s own methods (the client table's)
/// fails as any store call does.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(StoreError::from(error))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            // No connection came free within the acquire timeout: the
            // instance is saturated and the client should come back later.
            // sqlx reports a server that refuses TCP connections for that
            // long the same way; /readyz tells the two apart.
            StoreError::Database(sqlx::Error::PoolTimedOut) => ApiError::Overloaded,
            StoreError::Database(e) if is_unavailable(&e) => ApiError::Unavailable,
            StoreError::UnknownSaga(id) => ApiError::NotFound(format!("no saga with id `{id}`")),
            StoreError::WrongState(refused) => ApiError::Conflict(refused.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    // Under TLS, a connection the server (or a proxy) closes before it
    // answers the TLS request is a protocol error to sqlx.
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_)
    ) || error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = match &self {
            ApiError::MalformedJson(_) => {
                (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
            }
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::PastRetention { .. } => {
                (StatusCode::NOT_FOUND, "past-retention", "Past retention")
            }
            ApiError::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many checkouts",
            ),
            ApiError::TooManyInFlight(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-in-flight",
                "Too many checkouts in flight",
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::TooManyWaiters(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-waiters",
                "Too many long-polls",
            ),
            ApiError::TimedOut(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            ApiError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        };
        let detail = match &self {
            ApiError::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Internal(error) => {
                tracing::error!(%error, "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let errors: &[FieldError] = match &self {
            ApiError::Invalid(errors) => errors,
            _ => &[],
        };
        let body = Problem {
            kind: &format!("urn:checkout-saga:problem:{kind}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooManyWaiters(_) = self {
            // A waiter leaves within MAX_WAIT_SECONDS at most, most far sooner.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if let ApiError::Overloaded = self {
            metrics::counter!(crate::metrics::API_OVERLOADED).increment(1);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(OVERLOADED_RETRY_AFTER_SECONDS),
            );
        }
        // The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-
        // headers, the separate `RateLimit-Limit`/`-Remaining`/`-Reset`
        // form), beside the Retry-After every client understands.
        let limited = match &self {
            ApiError::RateLimited(refused) => Some((
                refused.limit,
                refused.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            )),
            // A checkout in flight finishes within seconds, or parks.
            ApiError::TooManyInFlight(max) => Some((*max, IN_FLIGHT_RETRY_AFTER_SECONDS)),
            _ => None,
        };
        if let Some((limit, seconds)) = limited {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            headers.insert("ratelimit-limit", header::HeaderValue::from(limit));
            headers.insert("ratelimit-remaining", header::HeaderValue::from(0));
            headers.insert("ratelimit-reset", header::HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
