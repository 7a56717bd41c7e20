//! The support user behind a request: a bearer token among the
//! [`AdminTokens`], checked before any support route runs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::problem::ApiError;
use super::AppState;
pub use crate::admin_tokens::AdminTokens;

/// The authenticated support user behind a request.
pub struct Actor(pub String);

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = super::client_auth::bearer(parts)
            .ok_or(ApiError::Unauthorized("a bearer token is required"))?;
        state
            .admin_tokens
            .actor(token)
            .map(|name| Actor(name.to_owned()))
            .ok_or(ApiError::Unauthorized("the bearer token is not valid"))
    }
}
