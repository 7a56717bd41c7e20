//! The message contract: every command a worker takes and every reply it
//! sends. Field names here are the wire format; change them only with a new
//! envelope version.
//!
//! Readers are tolerant: a field they do not know is ignored, so a producer
//! can send a new optional field before every consumer knows it, and a
//! service one release behind keeps working. That is why no type here
//! denies unknown fields; the envelope's version marks what is breaking.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::text::printable;
use crate::values::{Cents, Currency, CustomerId, Quantity, Sku, ValueError};

/// Which worker kind a command is for; each has one durable quorum queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    Inventory,
    Tax,
    Payment,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 3] = [WorkerKind::Inventory, WorkerKind::Tax, WorkerKind::Payment];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Inventory => "inventory",
            WorkerKind::Tax => "tax",
            WorkerKind::Payment => "payment",
        }
    }
}

/// A saga action, forward or compensating. Its wire name is also the
/// command's routing key and the envelope's `step`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
pub enum Step {
    #[serde(rename = "inventory.reserve")]
    Reserve,
    #[serde(rename = "tax.calculate")]
    CalculateTax,
    #[serde(rename = "payment.charge")]
    Charge,
    #[serde(rename = "inventory.release")]
    Release,
    #[serde(rename = "payment.refund")]
    Refund,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Reserve,
        Step::CalculateTax,
        Step::Charge,
        Step::Release,
        Step::Refund,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// A dense index, for per-step tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The step whose routing key is `key`.
    pub fn from_routing_key(key: &str) -> Option<Step> {
        Self::ALL.into_iter().find(|s| s.routing_key() == key)
    }

    pub fn routing_key(self) -> &'static str {
        match self {
            Step::Reserve => "inventory.reserve",
            Step::CalculateTax => "tax.calculate",
            Step::Charge => "payment.charge",
            Step::Release => "inventory.release",
            Step::Refund => "payment.refund",
        }
    }

    pub fn worker(self) -> WorkerKind {
        match self {
            Step::Reserve | Step::Release => WorkerKind::Inventory,
            Step::CalculateTax => WorkerKind::Tax,
            Step::Charge | Step::Refund => WorkerKind::Payment,
        }
    }

    /// The message `type` of this step's reply.
    pub fn reply_type(self) -> String {
        format!("{}.reply", self.routing_key())
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.routing_key())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct LineRequest {
    #[schema(value_type = String)]
    pub sku: Sku,
    #[schema(value_type = u32)]
    pub quantity: Quantity,
}

impl LineRequest {
    /// A line from its SKU's text and a count of units, each checked as
    /// when a message decodes.
    pub fn parse(sku: &str, units: u32) -> Result<LineRequest, ValueError> {
        Ok(LineRequest {
            sku: Sku::parse(sku)?,
            quantity: Quantity::new(units)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
    pub tax_category: String,
}

impl PricedLine {
    /// The unit price times the quantity, or None if it does not fit.
    pub fn amount_cents(&self) -> Option<Cents> {
        self.unit_price_cents.checked_mul(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct ShipTo {
    pub country: String,
    #[serde(default)]
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveStock {
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseStock {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CalculateTax {
    pub ship_to: ShipTo,
    pub currency: Currency,
    pub lines: Vec<PricedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChargePayment {
    pub amount_cents: Cents,
    pub currency: Currency,
    pub payment_method: String,
    pub customer_id: CustomerId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RefundPayment {}

/// For an enum with one variant per step, each holding that step's payload
/// (a command, a step's result): `step`, and its JSON (`$to`), written by
/// variant and read back by step (`$from`). The variant-to-step pairs are
/// listed once, so these three cannot disagree.
macro_rules! per_step {
    ($name:ident, $to:ident, $from:ident, $always:literal, { $($variant:ident => $step:ident,)+ }) => {
        impl $name {
            pub fn step(&self) -> Step {
                match self {
                    $($name::$variant(_) => Step::$step,)+
                }
            }

            pub fn $to(&self) -> serde_json::Value {
                let value = match self {
                    $($name::$variant(payload) => serde_json::to_value(payload),)+
                };
                value.expect($always)
            }

            pub fn $from(step: Step, value: serde_json::Value) -> serde_json::Result<$name> {
                Ok(match step {
                    $(Step::$step => $name::$variant(serde_json::from_value(value)?),)+
                })
            }
        }
    };
}

/// A command, typed by its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Reserve(ReserveStock),
    CalculateTax(CalculateTax),
    Charge(ChargePayment),
    Release(ReleaseStock),
    Refund(RefundPayment),
}

per_step!(Command, to_payload, from_payload, "command payloads always serialize", {
    Reserve => Reserve,
    CalculateTax => CalculateTax,
    Charge => Charge,
    Release => Release,
    Refund => Refund,
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reserved {
    pub currency: Currency,
    pub lines: Vec<PricedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Released {
    /// False when nothing was held (already released, or never reserved).
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineTax {
    pub sku: Sku,
    pub rate_bp: u32,
    pub tax_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaxCalculated {
    pub lines: Vec<LineTax>,
    pub tax_cents: Cents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Charged {
    pub payment_id: Uuid,
    pub amount_cents: Cents,
    /// The currency charged. Read, checked against the checkout's when
    /// present, but not sent yet: v0.2.0 orchestrators refuse unknown fields
    /// in a result, so the payment worker sends it once v0.2.0 is out of
    /// the two releases a build must roll from (see `CHARGE_REPLY_CURRENCY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Refunded {
    /// Zero when there was nothing to refund.
    pub refunded_cents: Cents,
}

/// The result of a step that succeeded, typed by its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Reserved(Reserved),
    TaxCalculated(TaxCalculated),
    Charged(Charged),
    Released(Released),
    Refunded(Refunded),
}

per_step!(StepResult, to_value, from_value, "step results always serialize", {
    Reserved => Reserve,
    TaxCalculated => CalculateTax,
    Charged => Charge,
    Released => Release,
    Refunded => Refund,
});

/// Business reasons a step can refuse with. They are also the `reason` a
/// client sees on a rejected checkout.
pub mod reason {
    pub const OUT_OF_STOCK: &str = "out_of_stock";
    pub const UNKNOWN_SKU: &str = "unknown_sku";
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    pub const NO_TAX_RATE: &str = "no_tax_rate";
    pub const PAYMENT_DECLINED: &str = "payment_declined";
    pub const INVALID_PAYMENT_METHOD: &str = "invalid_payment_method";
    /// The card needs the customer to authenticate (3-D Secure), which a
    /// checkout that is already placed cannot ask for.
    pub const PAYMENT_REQUIRES_ACTION: &str = "payment_requires_action";
    /// A charge of 0 or less, above the payment worker's maximum, or a total
    /// the orchestrator cannot compute without overflowing.
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    /// A forward step that arrived after its compensation already ran.
    pub const ALREADY_COMPENSATED: &str = "already_compensated";
    /// A command that parses but no business could act on: no lines, a
    /// negative unit price. Refusing it beats retrying it forever. (A zero
    /// quantity or a blank SKU does not parse: see `values`.)
    pub const INVALID_COMMAND: &str = "invalid_command";
}

/// How a worker answered a command, as it travels in a reply payload.
// `R` stays a JSON value when decoding, since which result type applies
// depends on the envelope's step; the contract's schemas name it per step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplyPayload<R = serde_json::Value> {
    /// The step is done; `result` is the step's typed result.
    Ok { result: R },
    /// A final business answer: compensate.
    Rejected { reason: String, detail: String },
    /// Nothing was done; the same command may be tried again.
    Transient { error: String },
}

/// A reply with its result typed by the step it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(StepResult),
    Rejected { reason: String, detail: String },
    Transient { error: String },
}

impl Outcome {
    pub fn to_payload(&self) -> ReplyPayload {
        match self {
            Outcome::Ok(r) => ReplyPayload::Ok {
                result: r.to_value(),
            },
            Outcome::Rejected { reason, detail } => ReplyPayload::Rejected {
                reason: reason.clone(),
                detail: detail.clone(),
            },
            Outcome::Transient { error } => ReplyPayload::Transient {
                error: error.clone(),
            },
        }
    }

    /// The reply's texts come from another process and end up in the
    /// saga's timeline: their control characters are replaced here, on the
    /// way in, so that a stray NUL can never make a reply unstorable.
    pub fn from_payload(step: Step, payload: ReplyPayload) -> serde_json::Result<Outcome> {
        let text = |s: String| match printable(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(clean) => clean,
        };
        Ok(match payload {
            ReplyPayload::Ok { result } => Outcome::Ok(StepResult::from_value(step, result)?),
            ReplyPayload::Rejected { reason, detail } => Outcome::Rejected {
                reason: text(reason),
                detail: text(detail),
            },
            ReplyPayload::Transient { error } => Outcome::Transient { error: text(error) },
        })
    }

    pub fn rejected(reason: &str, detail: impl Into<String>) -> Outcome {
        Outcome::Rejected {
            reason: reason.to_owned(),
            detail: detail.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Transient { .. } => "transient",
        }
    }
}
