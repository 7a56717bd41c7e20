//! What a worker's `ok` reply must say, judged against the saga's own
//! state before anything in it is applied. Anyone who can publish to the
//! reply exchange can answer for a worker, and a worker can be wrong: a
//! charge of 1 cent stored as `Charged` completes a checkout of 10,500.
//! A reply that does not match is never applied; the saga parks instead.

use std::collections::BTreeMap;
use std::fmt;

use saga_protocol::messages::{Charged, Refunded, Reserved, StepResult, TaxCalculated};
use saga_protocol::values::{Cents, Currency};
use saga_protocol::Step;

use super::model::Saga;

/// Every field a reply is checked on, by step: the series of the
/// mismatch counter, which exist from the start.
pub const FIELDS: [(Step, &str); 6] = [
    (Step::Reserve, "lines"),
    (Step::CalculateTax, "lines"),
    (Step::CalculateTax, "tax_cents"),
    (Step::Charge, "amount_cents"),
    (Step::Charge, "currency"),
    (Step::Refund, "refunded_cents"),
];

/// One field of a reply that is not what the saga expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub step: Step,
    /// The reply's field, as named on the wire (`amount_cents`, `lines`, ...).
    pub field: &'static str,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reply: {} expected {}, got {}",
            self.step, self.field, self.expected, self.got
        )
    }
}

/// The first field of `result` that does not match `saga`, if any.
pub fn mismatch(saga: &Saga, result: &StepResult) -> Option<Mismatch> {
    match result {
        StepResult::Reserved(reserved) => reservation(saga, reserved),
        StepResult::TaxCalculated(tax) => tax_lines(saga, tax),
        StepResult::Charged(charged) => charge(saga, charged),
        StepResult::Refunded(refunded) => refund(saga, refunded),
        StepResult::Released(_) => None,
    }
}

fn differs(step: Step, field: &'static str, expected: String, got: String) -> Option<Mismatch> {
    (expected != got).then_some(Mismatch {
        step,
        field,
        expected,
        got,
    })
}

/// Quantities per SKU, in SKU order: `A×2, B×1`.
fn quantities<'a>(lines: impl Iterator<Item = (&'a str, u32)>) -> String {
    let mut by_sku: BTreeMap<&str, u64> = BTreeMap::new();
    for (sku, quantity) in lines {
        *by_sku.entry(sku).or_default() += u64::from(quantity);
    }
    let text: Vec<String> = by_sku
        .iter()
        .map(|(sku, quantity)| format!("{sku}×{quantity}"))
        .collect();
    format!("[{}]", text.join(", "))
}

/// Exactly the requested lines: every SKU, in its quantity, and no other.
fn reservation(saga: &Saga, reserved: &Reserved) -> Option<Mismatch> {
    let requested = saga
        .request
        .items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity.get()));
    let got = reserved
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity.get()));
    differs(
        Step::Reserve,
        "lines",
        quantities(requested),
        quantities(got),
    )
}

/// One tax line per reserved line, and a total that is their sum.
fn tax_lines(saga: &Saga, tax: &TaxCalculated) -> Option<Mismatch> {
    let reserved = saga.reserved.as_ref()?;
    let expected = quantities(reserved.lines.iter().map(|l| (l.sku.as_str(), 1)));
    let got = quantities(tax.lines.iter().map(|l| (l.sku.as_str(), 1)));
    if let Some(mismatch) = differs(Step::CalculateTax, "lines", expected, got) {
        return Some(mismatch);
    }
    let sum = Cents::checked_sum(tax.lines.iter().map(|line| line.tax_cents));
    (sum != Some(tax.tax_cents)).then(|| Mismatch {
        step: Step::CalculateTax,
        field: "tax_cents",
        expected: sum.map_or_else(
            || "the sum of its lines (which overflows)".to_owned(),
            |sum| format!("{sum} (the sum of its lines)"),
        ),
        got: tax.tax_cents.to_string(),
    })
}

/// Subtotal + tax, in the checkout's currency. A reply without a currency
/// (a payment worker older than the field) is judged on its amount alone.
fn charge(saga: &Saga, charged: &Charged) -> Option<Mismatch> {
    // The charge command was built from this total; without one the
    // engine never sent it, and the reply is not for this saga's charge.
    let expected = saga
        .total_cents()
        .map_or_else(|| "no charge".to_owned(), |t| t.to_string());
    if let Some(mismatch) = differs(
        Step::Charge,
        "amount_cents",
        expected,
        charged.amount_cents.to_string(),
    ) {
        return Some(mismatch);
    }
    let currency = saga.currency().map(Currency::to_string);
    match &charged.currency {
        Some(got) => differs(
            Step::Charge,
            "currency",
            currency.unwrap_or_default(),
            got.to_string(),
        ),
        None => None,
    }
}

/// What was charged. When the charge's outcome was never known (its
/// deadline passed, or it was in flight when the saga turned around), the
/// provider either moved the whole total, which comes back, or nothing.
fn refund(saga: &Saga, refunded: &Refunded) -> Option<Mismatch> {
    let got = refunded.refunded_cents;
    let (ok, expected) = match (&saga.charge, saga.total_cents()) {
        (Some(charge), _) => (got == charge.amount_cents, charge.amount_cents.to_string()),
        (None, Some(total)) => (got == Cents::ZERO || got == total, format!("0 or {total}")),
        (None, None) => (got == Cents::ZERO, "0".to_owned()),
    };
    (!ok).then(|| Mismatch {
        step: Step::Refund,
        field: "refunded_cents",
        expected,
        got: got.to_string(),
    })
}
