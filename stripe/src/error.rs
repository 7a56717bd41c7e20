//! What went wrong with a call to Stripe, sorted by what the caller does
//! next. Stripe's own classes (its `type` and `code`) are read, but the
//! HTTP status decides first: a server that answers differently from
//! Stripe (localstripe gives a bare 400 where Stripe names the state) is
//! still sorted safely, because every unclear case is one the caller
//! resolves by retrieving the PaymentIntent, never by charging again.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// 402: the card was declined. `code` is Stripe's error code
    /// (`card_declined`, `expired_card`, ...), `decline_code` the issuer's
    /// reason when Stripe gives one.
    #[error("declined ({code}{}): {message}", decline_code.as_deref().map(|d| format!(", {d}")).unwrap_or_default())]
    Declined {
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    /// The payment method is unknown or unusable (a 400 naming it, or a
    /// 404 for it).
    #[error("the payment method was refused: {message}")]
    InvalidPaymentMethod { message: String },
    /// A 400 or 404 about anything else: this request, as sent, will never
    /// succeed. For a confirm or a cancel it usually means the
    /// PaymentIntent moved on (another attempt confirmed it, a refund
    /// cancelled it): retrieve it and act on its status.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// 401 or 403: the key is wrong or lacks a permission. Nothing moved;
    /// retrying helps only once an operator fixes the key.
    #[error("Stripe refused the secret key ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// 429, 5xx, a reset connection, a timeout, an answer that is not
    /// Stripe's JSON: the outcome is unknown. Retrieve before acting again.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

impl StripeError {
    /// Whether the outcome of the call is unknown, so that it must be
    /// resolved by retrieving rather than by calling again blindly.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StripeError::Unavailable(_))
    }
}

/// Stripe's error body: `{"error": {"type", "code", "decline_code",
/// "message", "param"}}`, every field optional.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorFields,
}

/// Also what a PaymentIntent's `last_payment_error` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorFields {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) decline_code: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) param: Option<String>,
}

/// Longest piece of a server's text kept in an error: it ends up in a
/// saga's timeline and in logs.
const MAX_MESSAGE: usize = 300;

pub(crate) fn clipped(text: &str) -> String {
    let text = text.trim();
    let mut end = text.len().min(MAX_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Sorts a non-2xx answer of `status` with `body`.
pub(crate) fn classify(status: u16, body: &str) -> StripeError {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let fields = parsed.error;
    let message = fields
        .message
        .as_deref()
        .map(clipped)
        .unwrap_or_else(|| clipped(body));
    let code = fields.code.unwrap_or_default();
    let about_the_method = fields
        .param
        .as_deref()
        .is_some_and(|p| p.starts_with("payment_method"))
        || code.starts_with("payment_method")
        || code == "card_declined" && status == 400;
    match status {
        402 => StripeError::Declined {
            code: if code.is_empty() {
                "card_declined".to_owned()
            } else {
                code
            },
            decline_code: fields.decline_code.map(|d| clipped(&d)),
            message,
        },
        401 | 403 => StripeError::Unauthorized { status, message },
        400 | 404 if about_the_method => StripeError::InvalidPaymentMethod { message },
        429 | 500..=599 => StripeError::Unavailable(format!("{status}: {message}")),
        400..=499 => StripeError::Refused { status, message },
        _ => StripeError::Unavailable(format!("unexpected status {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decline_keeps_stripes_codes() {
        let body = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#;
        assert_eq!(
            classify(402, body),
            StripeError::Declined {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
            }
        );
        // localstripe: no decline_code, and an `invalid_request_error` type.
        let body = r#"{"error":{"charge":"ch_1","code":"card_declined","message":"Your card was declined.","type":"invalid_request_error"}}"#;
        assert!(matches!(
            classify(402, body),
            StripeError::Declined {
                decline_code: None,
                ..
            }
        ));
    }

    #[test]
    fn a_wrong_key_is_its_own_case_and_never_echoes_the_key() {
        for status in [401, 403] {
            assert!(matches!(
                classify(status, "{}"),
                StripeError::Unauthorized { .. }
            ));
        }
    }

    #[test]
    fn busy_and_broken_servers_leave_the_outcome_unknown() {
        for status in [429, 500, 502, 503] {
            assert!(
                classify(status, "<html>oops</html>").outcome_unknown(),
                "{status}"
            );
        }
        assert!(!classify(400, "").outcome_unknown());
    }

    #[test]
    fn a_refused_payment_method_is_told_from_other_refusals() {
        let body = r#"{"error":{"type":"invalid_request_error","code":"resource_missing","param":"payment_method","message":"No such PaymentMethod: 'pm_x'"}}"#;
        assert!(matches!(
            classify(400, body),
            StripeError::InvalidPaymentMethod { .. }
        ));
        let body = r#"{"error":{"message":"Bad request","type":"invalid_request_error"}}"#;
        assert_eq!(
            classify(400, body),
            StripeError::Refused {
                status: 400,
                message: "Bad request".into()
            }
        );
    }

    #[test]
    fn a_servers_text_is_clipped_and_made_printable() {
        let long = format!("{}\u{7}", "x".repeat(1000));
        match classify(500, &long) {
            StripeError::Unavailable(text) => {
                assert!(text.len() < 320, "{}", text.len());
                assert!(!text.contains('\u{7}'));
            }
            other => panic!("{other:?}"),
        }
    }
}
