//! A support route's query string, read in one place: its parameters
//! arrive as texts (so a bad one is a field error naming it, never serde's
//! wording), the route's [`SupportQuery`] reads them into what it needs,
//! and every mistake comes back at once as one `422` problem.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::field::no_control_characters;
use crate::http::problem::{ApiError, FieldError};
use crate::http::validation;

/// The query parameters of one support route.
pub trait SupportQuery: DeserializeOwned + Send {
    /// What the parameters say once read.
    type Read;

    /// The parameters that may hold no control character, as sent. Any
    /// that does is refused before the others are read: a NUL would
    /// otherwise reach PostgreSQL, which refuses it in text.
    fn texts(&self) -> Vec<(&'static str, Option<&str>)>;

    /// Every parameter read, one error pushed per parameter that is wrong.
    fn read(self, errors: &mut Vec<FieldError>) -> Self::Read;
}

/// The extractor of a route's [`SupportQuery`]: the handler gets the
/// parameters read, or the client gets every mistake.
pub struct CheckedQuery<Q: SupportQuery>(pub Q::Read);

impl<Q, S> FromRequestParts<S> for CheckedQuery<Q>
where
    Q: SupportQuery,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = validation::query(Query::<Q>::from_request_parts(parts, state).await)?;
        let mut errors = Vec::new();
        no_control_characters(&mut errors, &params.texts());
        if errors.is_empty() {
            let read = params.read(&mut errors);
            if errors.is_empty() {
                return Ok(CheckedQuery(read));
            }
        }
        Err(ApiError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;
    use crate::http::admin::outbox::OutboxParams;
    use crate::http::admin::saga_list::ListParams;

    async fn refused<Q: SupportQuery>(query: &str) -> Vec<FieldError> {
        let request = Request::builder().uri(format!("/?{query}")).body(());
        let (mut parts, ()) = request.unwrap().into_parts();
        match CheckedQuery::<Q>::from_request_parts(&mut parts, &()).await {
            Err(ApiError::Invalid(errors)) => errors,
            Err(other) => panic!("{query}: {other}"),
            Ok(_) => panic!("{query}: accepted"),
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[tokio::test]
    async fn a_control_character_is_refused_before_the_rest_is_read() {
        let errors = refused::<ListParams>("status=%00&limit=0").await;
        assert_eq!(fields(&errors), ["status"]);
        assert_eq!(errors[0].message, "must not contain control characters");
    }

    #[tokio::test]
    async fn every_other_mistake_is_named_at_once() {
        let long = "c".repeat(129);
        let errors = refused::<ListParams>(&format!("customer_id={long}&status=x&limit=0")).await;
        assert_eq!(fields(&errors), ["customer_id", "status", "limit"]);
        let errors = refused::<OutboxParams>("limit=501&cursor=x").await;
        assert_eq!(fields(&errors), ["limit", "cursor"]);
    }

    #[tokio::test]
    async fn a_parameter_given_twice_is_named() {
        let errors = refused::<ListParams>("limit=1&limit=2").await;
        assert_eq!(fields(&errors), ["limit"]);
        assert_eq!(errors[0].message, "must be given at most once");
    }
}
