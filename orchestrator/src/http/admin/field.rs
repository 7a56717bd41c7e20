//! How a support request's texts are read: each mistake a [`FieldError`]
//! naming its field, every one of them reported at once.

use chrono::{DateTime, Utc};
use saga_protocol::Step;

use crate::http::problem::FieldError;
use crate::saga::{Phase, SagaStatus};

pub(super) fn parse_status(text: &str) -> Result<SagaStatus, FieldError> {
    SagaStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = SagaStatus::ALL.iter().map(|s| s.as_str()).collect();
        FieldError::new("status", format!("must be one of {}", known.join(", ")))
    })
}

pub(super) fn parse_step(text: &str) -> Result<Step, FieldError> {
    Step::from_routing_key(text).ok_or_else(|| {
        let known: Vec<&str> = Step::ALL.iter().map(|s| s.routing_key()).collect();
        FieldError::new("step", format!("must be one of {}", known.join(", ")))
    })
}

pub(super) fn parse_phase(text: &str) -> Result<Phase, FieldError> {
    match text {
        "forward" => Ok(Phase::Forward),
        "compensating" => Ok(Phase::Compensating),
        _ => Err(FieldError::new("phase", "must be forward or compensating")),
    }
}

pub(super) fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| FieldError::new(field, "must be an RFC 3339 time, like 2026-11-25T10:00:00Z"))
}

/// A count from 1 to `max` (a page's rows, a chart's minutes).
pub(super) fn parse_count(field: &str, text: &str, max: u32) -> Result<u32, FieldError> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            field,
            format!("must be a number from 1 to {max}"),
        )),
    }
}

/// Collects every field error rather than stopping at the first.
pub(super) fn all_or_errors<T>(
    errors: &mut Vec<FieldError>,
    value: Option<Result<T, FieldError>>,
) -> Option<T> {
    match value? {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// Every text a support user sends ends up in a query or in the timeline:
/// a control character (NUL above all, which PostgreSQL refuses in text)
/// is their mistake to hear about, never a 500.
pub(super) fn no_control_characters(errors: &mut Vec<FieldError>, fields: &[(&str, Option<&str>)]) {
    for (field, value) in fields {
        if value.is_some_and(|v| v.chars().any(char::is_control)) {
            errors.push(FieldError::new(
                *field,
                "must not contain control characters",
            ));
        }
    }
}

pub(super) fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}
