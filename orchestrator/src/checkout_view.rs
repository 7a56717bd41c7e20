//! What a checkout client sees of a saga: the body of every
//! `/v1/checkouts` answer, and of the final notice a long poll waits for.

use chrono::{DateTime, Utc};
use saga_protocol::values::{Cents, Currency};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::saga::{ClientStatus, Saga};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CheckoutView {
    pub checkout_id: Uuid,
    pub status: ClientStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CheckoutView {
    pub fn of(saga: &Saga, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Self {
        let status = saga.status.client_status();
        let rejected = status == ClientStatus::Rejected;
        CheckoutView {
            checkout_id: saga.id,
            status,
            reason: saga.reason.clone().filter(|_| rejected),
            detail: saga.detail.clone().filter(|_| rejected),
            subtotal_cents: saga.subtotal_cents().map(Cents::get),
            tax_cents: saga.tax_cents().map(Cents::get),
            total_cents: saga.total_cents().map(Cents::get),
            currency: saga.currency().map(Currency::to_string),
            created_at,
            updated_at,
        }
    }
}
