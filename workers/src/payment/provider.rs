//! The payment provider as the payment worker needs it: a separate party
//! that moves money. Every operation carries an idempotency key (one per
//! saga and operation), as Stripe, Adyen and Braintree take one: the same
//! key and amount answer what the first request did, whoever asks and
//! however often, and an operation can be looked up by its key after a
//! crash lost the answer. The worker keeps its own books (one payment per
//! saga); the provider keeps its ledger.

use std::fmt;
use std::future::Future;

use saga_protocol::values::{Cents, Currency, CustomerId};
use uuid::Uuid;

/// The reason a charge gets when a refund voided it first, whichever
/// provider it goes to.
pub const VOIDED: &str = "the charge was cancelled by its refund before it arrived";

/// One per saga and operation: `charge:<saga_id>`, `refund:<saga_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn charge(saga_id: Uuid) -> Self {
        IdempotencyKey(format!("charge:{saga_id}"))
    }

    pub fn refund(saga_id: Uuid) -> Self {
        IdempotencyKey(format!("refund:{saga_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub key: IdempotencyKey,
    pub saga_id: Uuid,
    pub amount_cents: Cents,
    pub currency: Currency,
    pub payment_method: String,
    pub customer_id: CustomerId,
    /// How many times this saga's charge already failed transiently.
    pub transient_failures: u32,
}

/// Cancel or refund, by the charge's key (Adyen's `cancelOrRefund`): a
/// charge the provider approved is refunded; a charge it never saw is
/// voided, so that the charge, should it still arrive, is declined. The
/// refund therefore needs no answer from the charge, which may be in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub key: IdempotencyKey,
    pub charge_key: IdempotencyKey,
    pub saga_id: Uuid,
    pub payment_method: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    /// Done: `amount_cents` moved (for a refund, 0 when the charge was
    /// voided before it moved anything); `reference` identifies it at the
    /// provider.
    Approved {
        reference: Uuid,
        amount_cents: Cents,
    },
    /// A final no, e.g. a declined card or a charge voided by its refund.
    Declined { reason: String },
    /// A final no for a reason of its own (`reason` is one of
    /// `saga_protocol::messages::reason`; an unknown payment method is
    /// `invalid_payment_method`): nothing moved.
    Refused {
        reason: &'static str,
        detail: String,
    },
    /// The key was used before for another amount: the provider refuses,
    /// and moved nothing for this request.
    KeyReused { error: String },
    /// Nothing moved; the same request may succeed later.
    Transient { error: String },
}

/// What the provider knows of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The operation's recorded answer.
    Found(ProviderAnswer),
    /// The provider never saw the key: nothing moved under it.
    Unknown,
    /// The provider could not be asked; ask again later.
    Transient { error: String },
}

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge(&self, request: &ChargeRequest) -> impl Future<Output = ProviderAnswer> + Send;

    fn refund(&self, request: &RefundRequest) -> impl Future<Output = ProviderAnswer> + Send;

    fn lookup(&self, key: &IdempotencyKey) -> impl Future<Output = Lookup> + Send;
}
