//! A PaymentIntent and a Refund as Stripe returns them, read tolerantly:
//! unknown fields are ignored, optional ones default, and a status this
//! build does not know is kept as text rather than refused.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{clipped, ErrorFields};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: String,
    /// In the currency's smallest unit, as our cents are.
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: i64,
    /// An id, or the charge itself when expanded (localstripe always
    /// expands it).
    #[serde(default)]
    latest_charge: Option<ChargeField>,
    #[serde(default)]
    last_payment_error: Option<ErrorFields>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum ChargeField {
    Expanded(Charge),
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Charge {
    #[serde(default)]
    amount_refunded: i64,
}

/// What a PaymentIntent's status means to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentStatus {
    /// The money moved.
    Succeeded,
    /// Created, not confirmed: no money moved, and none will until it is.
    RequiresConfirmation,
    /// Confirmed, outcome not known yet.
    Processing,
    /// The last confirmation failed (a decline): no money moved.
    RequiresPaymentMethod,
    /// 3-D Secure or another step only the customer can take.
    RequiresAction,
    Canceled,
    /// A status this build does not act on (`requires_capture`, a new one).
    Other(String),
}

impl PaymentIntent {
    pub fn status(&self) -> IntentStatus {
        match self.status.as_str() {
            "succeeded" => IntentStatus::Succeeded,
            "requires_confirmation" => IntentStatus::RequiresConfirmation,
            "processing" => IntentStatus::Processing,
            "requires_payment_method" => IntentStatus::RequiresPaymentMethod,
            "requires_action" => IntentStatus::RequiresAction,
            "canceled" => IntentStatus::Canceled,
            other => IntentStatus::Other(other.to_owned()),
        }
    }

    /// `metadata[key]`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// What was refunded of its charge, when the charge came expanded;
    /// `None` when it is only an id (ask with `expand[]=latest_charge`).
    pub fn amount_refunded(&self) -> Option<i64> {
        match &self.latest_charge {
            None => Some(0),
            Some(ChargeField::Expanded(charge)) => Some(charge.amount_refunded),
            Some(ChargeField::Id(_)) => None,
        }
    }

    /// Why the last confirmation failed, as `code (decline_code): message`,
    /// clipped and printable: it is the server's text, and it ends up in a
    /// saga's timeline.
    pub fn failure(&self) -> String {
        let error = self.last_payment_error.clone().unwrap_or_default();
        let code = error.code.unwrap_or_else(|| "payment_failed".to_owned());
        let decline = error
            .decline_code
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let message = error.message.map(|m| format!(": {m}")).unwrap_or_default();
        clipped(&format!("{code}{decline}{message}"))
    }

    /// Stripe's decline code, or its error code when it gives none.
    pub fn decline_code(&self) -> Option<&str> {
        let error = self.last_payment_error.as_ref()?;
        error.decline_code.as_deref().or(error.code.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub created: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_expanded_charge_and_an_id_alike() {
        let expanded: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"succeeded","amount":500,"currency":"eur",
                "latest_charge":{"id":"ch_1","amount_refunded":200,"new_field":1},
                "metadata":{"saga_id":"x"},"created":5,"unknown":[1]}"#,
        )
        .unwrap();
        assert_eq!(expanded.status(), IntentStatus::Succeeded);
        assert_eq!(expanded.amount_refunded(), Some(200));
        assert_eq!(expanded.metadata("saga_id"), Some("x"));
        let id_only: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"succeeded","amount":500,"currency":"eur","latest_charge":"ch_1"}"#,
        )
        .unwrap();
        assert_eq!(id_only.amount_refunded(), None);
    }

    #[test]
    fn a_decline_says_stripes_codes() {
        let declined: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"requires_payment_method","amount":500,"currency":"eur",
                "last_payment_error":{"code":"card_declined","decline_code":"insufficient_funds","message":"No."}}"#,
        )
        .unwrap();
        assert_eq!(declined.status(), IntentStatus::RequiresPaymentMethod);
        assert_eq!(
            declined.failure(),
            "card_declined (insufficient_funds): No."
        );
        assert_eq!(declined.decline_code(), Some("insufficient_funds"));
    }

    #[test]
    fn a_servers_failure_text_is_clipped_and_printable() {
        let long = format!("\u{1b}[31m{}", "x".repeat(1000));
        let declined: PaymentIntent = serde_json::from_value(serde_json::json!({
            "id": "pi_1", "status": "requires_payment_method", "amount": 1, "currency": "usd",
            "last_payment_error": {"code": "card_declined", "message": long}
        }))
        .unwrap();
        let failure = declined.failure();
        assert!(failure.len() <= 300, "{}", failure.len());
        assert!(!failure.contains('\u{1b}'));
    }

    #[test]
    fn an_unknown_status_is_kept_not_refused() {
        let intent: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"requires_capture","amount":1,"currency":"usd"}"#,
        )
        .unwrap();
        assert_eq!(
            intent.status(),
            IntentStatus::Other("requires_capture".into())
        );
    }
}
