//! The payment provider as the payment worker needs it: charge and refund,
//! each answering approved, declined or "try again". The worker keeps the
//! books (one payment per saga); a provider only moves money.

use std::future::Future;

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest<'a> {
    pub saga_id: Uuid,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub payment_method: &'a str,
    pub customer_id: &'a str,
    /// How many times this saga's charge already failed transiently.
    pub transient_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest<'a> {
    pub saga_id: Uuid,
    /// The provider's reference of the charge to refund.
    pub reference: Uuid,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub payment_method: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    /// Money moved; `reference` identifies it at the provider.
    Approved { reference: Uuid },
    /// A final no, e.g. a declined card.
    Declined { reason: String },
    /// The provider does not know this payment method.
    UnsupportedMethod { method: String },
    /// Nothing moved; the same request may succeed later.
    Transient { error: String },
}

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge(&self, request: &ChargeRequest<'_>) -> impl Future<Output = ProviderAnswer> + Send;

    fn refund(&self, request: &RefundRequest<'_>) -> impl Future<Output = ProviderAnswer> + Send;
}
