//! A support route's JSON body, read in one place: within its size limit,
//! declared as JSON, then read as the route's type, or the problem that
//! says which of these it is not.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::http::problem::ApiError;
use crate::http::validation;

pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // The headers are read after the body: a body over the limit is
        // answered 413 whatever it claims to be.
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await;
        let body = validation::json_body(&headers, body)?;
        Ok(JsonBody(validation::parse_json(&body)?))
    }
}
