//! Why support acted on a saga: said by a person, kept in its timeline.

use crate::http::problem::{ApiError, FieldError};

pub(crate) const MAX_REASON_CHARS: usize = 500;

pub(super) fn reason_of(reason: Option<String>) -> Result<String, ApiError> {
    let refused =
        |message: String| Err(ApiError::Invalid(vec![FieldError::new("reason", message)]));
    let Some(reason) = reason else {
        return refused("is required: say why, for the timeline".to_owned());
    };
    match reason.trim() {
        "" => refused("must not be empty: say why, for the timeline".to_owned()),
        r if r.chars().any(char::is_control) => {
            refused("must not contain control characters".to_owned())
        }
        r if r.chars().count() > MAX_REASON_CHARS => {
            refused(format!("must be at most {MAX_REASON_CHARS} characters"))
        }
        r => Ok(r.to_owned()),
    }
}
