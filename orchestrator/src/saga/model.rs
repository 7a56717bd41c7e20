//! The saga's state, as stored (JSON) and as the engine sees it.

use saga_protocol::messages::{Charged, LineRequest, Reserved, ShipTo, TaxCalculated};
pub use saga_protocol::status::{ClientStatus, SagaStatus};
use saga_protocol::values::{Cents, Currency, CustomerId};
use saga_protocol::Step;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A validated checkout request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    pub items: Vec<LineRequest>,
    pub ship_to: ShipTo,
    pub payment_method: String,
}

#[cfg(test)]
impl CheckoutRequest {
    /// The checkout the unit tests run: two lines, shipped to California.
    pub(crate) fn example() -> Self {
        CheckoutRequest {
            customer_id: "c-1".parse().unwrap(),
            items: vec![
                LineRequest::parse("A", 2).unwrap(),
                LineRequest::parse("B", 1).unwrap(),
            ],
            ship_to: ShipTo {
                country: "US".into(),
                region: "CA".into(),
            },
            payment_method: "sim_approve".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub id: Uuid,
    pub status: SagaStatus,
    pub request: CheckoutRequest,
    /// The action awaiting a reply (or parked, when suspended).
    pub current: Option<Step>,
    /// The current attempt's number. It keeps counting across a support
    /// retry, so a late reply to an earlier series is never mistaken for
    /// the awaited one.
    pub attempt: u32,
    /// The first attempt of the current series (a support retry starts a
    /// new one); the retry policy counts attempts from here.
    #[serde(default = "first_attempt")]
    pub series_start: u32,
    /// While suspended: the status to resume on a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_from: Option<SagaStatus>,
    /// Support cancelled the saga: once compensated, it ends `cancelled`.
    #[serde(default)]
    pub cancelled: bool,
    /// Forward steps that replied `ok`, in order.
    pub completed: Vec<Step>,
    /// Compensations still to run, the current one first.
    pub compensations: Vec<Step>,
    pub reserved: Option<Reserved>,
    pub tax: Option<TaxCalculated>,
    pub charge: Option<Charged>,
    /// Why the checkout was rejected (`out_of_stock`, `payment_declined`, ...).
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The last transient error or contract violation seen.
    pub last_error: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

/// Which way a non-final saga is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Forward,
    Compensating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Compensating => "compensating",
        }
    }
}

impl Saga {
    /// `None` once final; a suspended saga keeps the phase it parked in.
    pub fn phase(&self) -> Option<Phase> {
        let status = match self.status {
            SagaStatus::Suspended => self.suspended_from.unwrap_or(SagaStatus::Running),
            other => other,
        };
        match status {
            SagaStatus::Running => Some(Phase::Forward),
            SagaStatus::Compensating => Some(Phase::Compensating),
            _ => None,
        }
    }

    /// Attempts made in the current series.
    pub fn attempts_in_series(&self) -> u32 {
        self.attempt.saturating_sub(self.series_start) + 1
    }

    /// `None` before the reservation, and for a sum that does not fit in
    /// an `i64` (the engine refuses such a checkout `invalid_amount`).
    pub fn subtotal_cents(&self) -> Option<Cents> {
        self.reserved.as_ref().and_then(|r| {
            r.lines.iter().try_fold(Cents::ZERO, |sum, line| {
                sum.checked_add(line.amount_cents()?)
            })
        })
    }

    pub fn tax_cents(&self) -> Option<Cents> {
        self.tax.as_ref().map(|t| t.tax_cents)
    }

    /// `None` until tax is known, and when subtotal + tax overflows.
    pub fn total_cents(&self) -> Option<Cents> {
        self.subtotal_cents()?.checked_add(self.tax_cents()?)
    }

    pub fn currency(&self) -> Option<&Currency> {
        self.reserved.as_ref().map(|r| &r.currency)
    }
}
