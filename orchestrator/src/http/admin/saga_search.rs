//! The search terms of the saga list: what support has at hand when a
//! customer calls (a checkout id, their customer id, the idempotency key
//! their app sent, the checkout client it came through).

use super::field::non_empty;
use crate::http::problem::FieldError;
use crate::http::validation::MAX_IDEMPOTENCY_KEY_LEN;

/// A customer id is never longer than the checkout API accepts.
pub(crate) const MAX_CUSTOMER_ID_CHARS: usize = 128;
/// A client name is never longer than a client may be named.
pub(crate) const MAX_CLIENT_CHARS: usize = 64;
/// `q` may be any of them, so it takes the longest of them.
pub(crate) const MAX_QUERY_CHARS: usize = MAX_IDEMPOTENCY_KEY_LEN;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SearchTerms {
    pub q: Option<String>,
    pub customer_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub client: Option<String>,
}

/// The terms given, trimmed (a pasted id often carries a space); a term
/// longer than anything stored is the user's mistake to hear about, named.
pub fn terms(
    errors: &mut Vec<FieldError>,
    q: Option<String>,
    customer_id: Option<String>,
    idempotency_key: Option<String>,
    client: Option<String>,
) -> SearchTerms {
    // The bound is on the term as sent, as the OpenAPI document states it.
    let mut bounded = |field: &str, text: Option<String>, max: usize| {
        if text.as_ref().is_some_and(|t| t.chars().count() > max) {
            errors.push(FieldError::new(
                field,
                format!("must be at most {max} characters"),
            ));
            return None;
        }
        non_empty(text)
    };
    SearchTerms {
        q: bounded("q", q, MAX_QUERY_CHARS),
        customer_id: bounded("customer_id", customer_id, MAX_CUSTOMER_ID_CHARS),
        idempotency_key: bounded("idempotency_key", idempotency_key, MAX_IDEMPOTENCY_KEY_LEN),
        client: bounded("client", client, MAX_CLIENT_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_trimmed_and_empty_ones_dropped() {
        let mut errors = Vec::new();
        let terms = terms(
            &mut errors,
            Some("  cust-7 ".into()),
            Some("   ".into()),
            None,
            None,
        );
        assert!(errors.is_empty());
        assert_eq!(
            terms,
            SearchTerms {
                q: Some("cust-7".into()),
                ..SearchTerms::default()
            }
        );
    }

    #[test]
    fn an_overlong_term_is_named() {
        let mut errors = Vec::new();
        terms(
            &mut errors,
            None,
            Some("c".repeat(129)),
            Some("k".repeat(256)),
            None,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["customer_id", "idempotency_key"]);
    }
}
