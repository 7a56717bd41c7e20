//! Why a command failed: one line for a person, an exit code for a script.

use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::render::{clean, text, truncate};

/// Why a command failed, and the exit code that tells a script so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub title: String,
    pub detail: String,
}

impl Failure {
    pub fn new(code: u8, title: &str, detail: impl Into<String>) -> Self {
        Failure {
            code,
            title: title.to_owned(),
            detail: detail.into(),
        }
    }

    pub fn line(&self) -> String {
        format!("sagactl: {}: {}", clean(&self.title), clean(&self.detail))
    }

    /// An error answer; its RFC 9457 body when there is one, else what the
    /// status line says (a proxy in the way answers in HTML).
    pub fn from_answer(status: StatusCode, body: &str) -> Self {
        let code = match status.as_u16() {
            404 => 3,
            409 => 4,
            401 | 403 => 5,
            400 | 413 | 415 | 422 => 6,
            // Worth trying again later, like an outage.
            408 | 429 | 500..=599 => 7,
            _ => 1,
        };
        let problem: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let title = problem["title"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status.to_string());
        let mut detail = problem["detail"].as_str().unwrap_or("").to_owned();
        // The server's detail already spells out its field errors today;
        // add only those it leaves out, so none is lost nor said twice.
        let missing: Vec<String> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{}: {}", text(&e["field"]), text(&e["message"])))
            .filter(|e| !detail.contains(e.as_str()))
            .collect();
        if !missing.is_empty() {
            detail = if detail.is_empty() {
                missing.join("; ")
            } else {
                format!("{detail} ({})", missing.join("; "))
            };
        }
        if detail.is_empty() {
            detail = if problem.is_null() && !body.trim().is_empty() {
                format!("the answer is not a problem body: {}", truncate(body, 120))
            } else {
                "no detail given".to_owned()
            };
        }
        Failure {
            code,
            title,
            detail,
        }
    }

    pub fn unreachable(url: &Url, error: &reqwest::Error, timeout: u64) -> Self {
        let why = if error.is_timeout() {
            format!("no answer within {timeout} s")
        } else {
            // reqwest's own message only repeats the URL; the innermost
            // cause says what went wrong (connection refused, no such host).
            let mut cause: &dyn std::error::Error = error;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            cause.to_string()
        };
        Failure::new(7, "Server unreachable", format!("{url}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_problem_becomes_one_line_with_every_field_error_once() {
        let body = json!({
            "title": "Invalid request",
            "detail": "limit: must be a number from 1 to 500",
            "errors": [
                {"field": "limit", "message": "must be a number from 1 to 500"},
                {"field": "status", "message": "must be one of\nrunning"},
            ],
        })
        .to_string();
        let failure = Failure::from_answer(StatusCode::UNPROCESSABLE_ENTITY, &body);
        assert_eq!(failure.code, 6);
        assert_eq!(
            failure.line(),
            "sagactl: Invalid request: limit: must be a number from 1 to 500 \
             (status: must be one of running)"
        );
    }

    #[test]
    fn statuses_map_to_exit_codes_even_without_a_problem_body() {
        for (status, code) in [(404, 3), (409, 4), (401, 5), (415, 6), (502, 7), (302, 1)] {
            let failure = Failure::from_answer(StatusCode::from_u16(status).unwrap(), "");
            assert_eq!(failure.code, code, "{status}");
            assert_eq!(failure.line().lines().count(), 1);
        }
        let failure = Failure::from_answer(StatusCode::BAD_GATEWAY, "<html>\nbad</html>");
        assert!(failure
            .line()
            .starts_with("sagactl: 502 Bad Gateway: the answer is not"));
    }
}
