//! The checkout client behind a `/v1/checkouts` request: its bearer key,
//! checked against the clients' keys only. A support token opens nothing
//! here, nor does a client key open the support API.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::problem::ApiError;
use super::AppState;
use crate::clients::Client;

/// The bearer credential of a request, if it carries one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

pub struct CheckoutClient(pub Client);

impl FromRequestParts<AppState> for CheckoutClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized(
            "a client key is required: Authorization: Bearer <key>",
        ))?;
        state
            .clients
            .authenticate(key)
            .map(CheckoutClient)
            .ok_or(ApiError::Unauthorized("the client key is not valid"))
    }
}
