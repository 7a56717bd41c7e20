//! The saga a support route's `{id}` names.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::http::problem::ApiError;

/// Extracted before the body, so that a route on an id that names no saga
/// answers 404 whatever the body holds. Documented as text: an id that is
/// not a UUID names no saga (404), it is not an invalid request.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct SagaId(
    /// The saga (checkout) id
    #[param(value_type = String)]
    pub Uuid,
);

impl<S: Send + Sync> FromRequestParts<S> for SagaId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        text.parse()
            .map(SagaId)
            .map_err(|_| ApiError::NotFound(format!("no saga with id `{text}`")).into_response())
    }
}
