//! The saga's state, as stored (JSON) and as the engine sees it.

use saga_shared::messages::{Charged, LineRequest, Reserved, ShipTo, TaxCalculated};
use saga_shared::Step;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A validated checkout request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    pub customer_id: String,
    pub items: Vec<LineRequest>,
    pub ship_to: ShipTo,
    pub payment_method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Forward steps in progress.
    Running,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// Parked for support: an action exhausted its attempts.
    Suspended,
    Completed,
    /// Rejected, and every completed step undone.
    Compensated,
    Cancelled,
}

impl SagaStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Suspended => "suspended",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Cancelled => "cancelled",
        }
    }

    pub fn client_status(self) -> ClientStatus {
        match self {
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Suspended => {
                ClientStatus::Pending
            }
            SagaStatus::Completed => ClientStatus::Completed,
            SagaStatus::Compensated => ClientStatus::Rejected,
            SagaStatus::Cancelled => ClientStatus::Cancelled,
        }
    }
}

/// What a checkout client sees: a suspended saga is still `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Pending,
    Completed,
    Rejected,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub id: Uuid,
    pub status: SagaStatus,
    pub request: CheckoutRequest,
    /// The action awaiting a reply (or parked, when suspended).
    pub current: Option<Step>,
    pub attempt: u32,
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

impl Saga {
    pub fn subtotal_cents(&self) -> Option<i64> {
        self.reserved
            .as_ref()
            .map(|r| r.lines.iter().map(|l| l.amount_cents()).sum())
    }

    pub fn tax_cents(&self) -> Option<i64> {
        self.tax.as_ref().map(|t| t.tax_cents)
    }

    pub fn total_cents(&self) -> Option<i64> {
        Some(self.subtotal_cents()? + self.tax_cents()?)
    }

    pub fn currency(&self) -> Option<&str> {
        self.reserved.as_ref().map(|r| r.currency.as_str())
    }
}
