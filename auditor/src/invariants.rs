//! The invariants, as pure checks over [`Facts`]: no I/O, so each one is
//! unit-tested on hand-made facts.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use uuid::Uuid;

use crate::facts::{
    Facts, LedgerLine, Payment, Product, Quantities, Reservation, Saga, SagaStatus,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    CompletedReserved,
    CompletedCharged,
    UndoneHoldsNothing,
    StockConserved,
    NotStuck,
    IdempotencyUnique,
    OrphanReservation,
    OrphanPayment,
    /// The provider's ledger shows exactly one charge of the total, and no
    /// refund, for a completed checkout.
    LedgerCharged,
    /// The provider's ledger nets to zero for a compensated or cancelled one.
    LedgerNetZero,
    /// Money moved at the provider for a saga nobody knows.
    OrphanLedger,
    /// A confirmed PaymentIntent the payment books do not record.
    OrphanIntent,
    /// Not one of the design's invariants, but a saga whose status or state
    /// cannot be read cannot be checked, and must not pass silently.
    SagaReadable,
}

impl Invariant {
    pub const ALL: [Invariant; 13] = [
        Invariant::CompletedReserved,
        Invariant::CompletedCharged,
        Invariant::UndoneHoldsNothing,
        Invariant::StockConserved,
        Invariant::NotStuck,
        Invariant::IdempotencyUnique,
        Invariant::OrphanReservation,
        Invariant::OrphanPayment,
        Invariant::LedgerCharged,
        Invariant::LedgerNetZero,
        Invariant::OrphanLedger,
        Invariant::OrphanIntent,
        Invariant::SagaReadable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invariant::CompletedReserved => "completed-reserved",
            Invariant::CompletedCharged => "completed-charged",
            Invariant::UndoneHoldsNothing => "undone-holds-nothing",
            Invariant::StockConserved => "stock-conserved",
            Invariant::NotStuck => "not-stuck",
            Invariant::IdempotencyUnique => "idempotency-unique",
            Invariant::OrphanReservation => "orphan-reservation",
            Invariant::OrphanPayment => "orphan-payment",
            Invariant::LedgerCharged => "ledger-charged",
            Invariant::LedgerNetZero => "ledger-net-zero",
            Invariant::OrphanLedger => "orphan-ledger",
            Invariant::OrphanIntent => "orphan-intent",
            Invariant::SagaReadable => "saga-readable",
        }
    }
}

/// One broken fact: which invariant, where, and the values that disagree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub invariant: Invariant,
    pub saga: Option<Uuid>,
    pub sku: Option<String>,
    pub facts: String,
}

impl Violation {
    fn saga(invariant: Invariant, saga: Uuid, facts: String) -> Violation {
        Violation {
            invariant,
            saga: Some(saga),
            sku: None,
            facts,
        }
    }
}

/// Every violation in `facts`, ordered by invariant, saga and SKU.
/// Every invariant over `facts`, all in memory (the whole history, or a
/// test's world).
pub fn check(facts: &Facts, grace: Duration) -> Vec<Violation> {
    let mut found = check_sagas(facts, grace);
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for reservation in facts.reservations.values().filter(|r| r.active) {
        for (sku, quantity) in &reservation.lines {
            *held.entry(sku.clone()).or_default() += quantity;
        }
    }
    found.extend(check_stock(&facts.products, held));
    found.extend(check_keys(&shared_keys(&facts.sagas)));
    found.sort();
    found
}

/// The invariants of each saga in `facts`, and of the records `facts`
/// holds for sagas it does not: what a slice of the history can tell.
pub fn check_sagas(facts: &Facts, grace: Duration) -> Vec<Violation> {
    let mut found = Vec::new();
    for saga in &facts.sagas {
        let (status, state) = match (&saga.status, &saga.state) {
            (Ok(status), Ok(state)) => (*status, state),
            (Err(why), _) | (_, Err(why)) => {
                found.push(Violation::saga(
                    Invariant::SagaReadable,
                    saga.id,
                    why.clone(),
                ));
                continue;
            }
        };
        let reservation = facts.reservations.get(&saga.id);
        let payment = facts.payments.get(&saga.id);
        let ledger = facts.ledger.get(&saga.id).copied().unwrap_or_default();
        match status {
            SagaStatus::Completed => {
                if reservation.is_some() || !facts.reservation_may_be_pruned(&saga.id) {
                    completed_reserved(saga.id, &state.requested, reservation, &mut found);
                }
                // Money records go together, past their own retention.
                if payment.is_some() || !facts.payment_may_be_pruned(&saga.id) {
                    completed_charged(saga.id, state, payment, &mut found);
                    ledger_charged(saga.id, state, ledger, &mut found);
                }
            }
            SagaStatus::Compensated | SagaStatus::Cancelled => {
                undone_holds_nothing(saga.id, status, reservation, payment, &mut found);
                if ledger.net_cents() != 0 {
                    let facts = format!(
                        "status {}, yet the provider's ledger shows {} (net {})",
                        status.as_str(),
                        describe_ledger(ledger),
                        ledger.net_cents()
                    );
                    found.push(Violation::saga(Invariant::LedgerNetZero, saga.id, facts));
                }
            }
            SagaStatus::Running | SagaStatus::Compensating => {
                not_stuck(saga, status, facts, grace, &mut found);
            }
            SagaStatus::Suspended => {}
        }
    }
    orphans(facts, &mut found);
    found.sort();
    found
}

fn completed_reserved(
    saga: Uuid,
    requested: &Quantities,
    reservation: Option<&Reservation>,
    found: &mut Vec<Violation>,
) {
    let invariant = Invariant::CompletedReserved;
    let Some(reservation) = reservation else {
        let facts = format!(
            "expected an active reservation of {}, found none",
            quantities(requested)
        );
        found.push(Violation::saga(invariant, saga, facts));
        return;
    };
    if !reservation.active {
        let facts = format!(
            "expected an active reservation of {}, found it released (held {})",
            quantities(requested),
            quantities(&reservation.lines)
        );
        found.push(Violation::saga(invariant, saga, facts));
        return;
    }
    let skus: std::collections::BTreeSet<&String> =
        requested.keys().chain(reservation.lines.keys()).collect();
    for sku in skus {
        let wanted = requested.get(sku).copied().unwrap_or(0);
        let held = reservation.lines.get(sku).copied().unwrap_or(0);
        if wanted != held {
            found.push(Violation {
                invariant,
                saga: Some(saga),
                sku: Some(sku.clone()),
                facts: format!("requested quantity {wanted}, active reservation holds {held}"),
            });
        }
    }
}

fn completed_charged(
    saga: Uuid,
    state: &crate::facts::SagaState,
    payment: Option<&Payment>,
    found: &mut Vec<Violation>,
) {
    let invariant = Invariant::CompletedCharged;
    let (Some(reserved), Some(tax)) = (&state.reserved, state.tax_cents) else {
        let facts = "the saga's state lacks its reserved lines or its tax, so its total is unknown";
        found.push(Violation::saga(invariant, saga, facts.to_owned()));
        return;
    };
    let Some((subtotal, total)) = reserved
        .subtotal_cents
        .and_then(|subtotal| Some((subtotal, subtotal.checked_add(tax)?)))
    else {
        let facts = "completed, yet its subtotal + tax overflows a 64-bit count of cents";
        found.push(Violation::saga(invariant, saga, facts.to_owned()));
        return;
    };
    let currency = &reserved.currency;
    let expected =
        format!("expected charge {total} {currency} cents (subtotal {subtotal} + tax {tax})");
    let Some(payment) = payment else {
        found.push(Violation::saga(
            invariant,
            saga,
            format!("{expected}, found no payment"),
        ));
        return;
    };
    let as_expected = payment.status == "charged"
        && payment.refunded_cents == 0
        && payment.amount_cents == total
        && payment.currency.as_deref() == Some(currency.as_str());
    if !as_expected {
        let facts = format!(
            "{expected}, found {} {} {} refunded {}",
            payment.status,
            payment.amount_cents,
            payment.currency.as_deref().unwrap_or("(no currency)"),
            payment.refunded_cents
        );
        found.push(Violation::saga(invariant, saga, facts));
    }
}

fn ledger_charged(
    saga: Uuid,
    state: &crate::facts::SagaState,
    ledger: LedgerLine,
    found: &mut Vec<Violation>,
) {
    // A state without its total is already reported by completed-charged.
    let (Some(reserved), Some(tax)) = (&state.reserved, state.tax_cents) else {
        return;
    };
    let Some(total) = reserved.subtotal_cents.and_then(|s| s.checked_add(tax)) else {
        return;
    };
    let as_expected = ledger.charges == 1 && ledger.charged_cents == total && ledger.refunds == 0;
    if !as_expected {
        let facts = format!(
            "expected one charge of {total} cents at the provider, its ledger shows {}",
            describe_ledger(ledger)
        );
        found.push(Violation::saga(Invariant::LedgerCharged, saga, facts));
    }
}

/// `2 charges of 4950 cents, 0 refunds of 0 cents`.
fn describe_ledger(ledger: LedgerLine) -> String {
    format!(
        "{} charges of {} cents, {} refunds of {} cents",
        ledger.charges, ledger.charged_cents, ledger.refunds, ledger.refunded_cents
    )
}

fn undone_holds_nothing(
    saga: Uuid,
    status: SagaStatus,
    reservation: Option<&Reservation>,
    payment: Option<&Payment>,
    found: &mut Vec<Violation>,
) {
    let status = status.as_str();
    if let Some(reservation) = reservation.filter(|r| r.active) {
        let facts = format!(
            "status {status}, yet its reservation is active holding {}",
            quantities(&reservation.lines)
        );
        found.push(Violation::saga(Invariant::UndoneHoldsNothing, saga, facts));
    }
    if let Some(payment) = payment.filter(|p| p.net_cents() != 0) {
        let facts = format!(
            "status {status}, yet its payment is {} {} refunded {} (net {})",
            payment.status,
            payment.amount_cents,
            payment.refunded_cents,
            payment.net_cents()
        );
        found.push(Violation::saga(Invariant::UndoneHoldsNothing, saga, facts));
    }
}

fn not_stuck(
    saga: &Saga,
    status: SagaStatus,
    facts: &Facts,
    grace: Duration,
    found: &mut Vec<Violation>,
) {
    if facts.with_outbox.contains(&saga.id) {
        return;
    }
    let grace_secs = grace.as_secs();
    let waiting = match saga.deadline_at {
        Some(deadline) => {
            let overdue = (facts.now - deadline).num_seconds();
            if overdue <= i64::try_from(grace_secs).unwrap_or(i64::MAX) {
                return;
            }
            format!(
                "deadline_at {} is {overdue} s past (grace {grace_secs} s)",
                deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
        None => "no deadline".to_owned(),
    };
    let facts = format!(
        "status {}, {waiting}, no pending outbox command",
        status.as_str()
    );
    found.push(Violation::saga(Invariant::NotStuck, saga.id, facts));
}

/// Per SKU: on hand = available + `held` by active reservations.
pub fn check_stock(
    products: &BTreeMap<String, Product>,
    mut held: BTreeMap<String, i64>,
) -> Vec<Violation> {
    let mut found = Vec::new();
    for (sku, product) in products {
        let held = held.remove(sku).unwrap_or(0);
        if product.on_hand != product.available + held {
            found.push(Violation {
                invariant: Invariant::StockConserved,
                saga: None,
                sku: Some(sku.clone()),
                facts: format!(
                    "on_hand {}, but available {} + held by active reservations {held} = {}",
                    product.on_hand,
                    product.available,
                    product.available + held
                ),
            });
        }
    }
    // A foreign key forbids lines for an unknown SKU; say so if one exists.
    for (sku, held) in held {
        found.push(Violation {
            invariant: Invariant::StockConserved,
            saga: None,
            sku: Some(sku),
            facts: format!("active reservations hold {held} of a SKU with no product row"),
        });
    }
    found
}

/// The idempotency keys `sagas` share, with their sagas in id order.
fn shared_keys(sagas: &[Saga]) -> Vec<(String, Vec<Uuid>)> {
    let mut by_key: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for saga in sagas {
        if let Some(key) = &saga.idempotency_key {
            by_key.entry(key).or_default().push(saga.id);
        }
    }
    by_key
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(key, ids)| (key.to_owned(), ids))
        .collect()
}

/// No idempotency key belongs to two sagas.
pub fn check_keys(shared: &[(String, Vec<Uuid>)]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (key, ids) in shared {
        let mut facts = format!("idempotency key {key:?} belongs to {} sagas:", ids.len());
        for id in ids {
            let _ = write!(facts, " {id}");
        }
        found.push(Violation::saga(Invariant::IdempotencyUnique, ids[0], facts));
    }
    found
}

fn orphans(facts: &Facts, found: &mut Vec<Violation>) {
    let known: HashSet<Uuid> = facts.sagas.iter().map(|s| s.id).collect();
    let exists = |id: &Uuid| {
        known.contains(id) || facts.created_since.contains(id) || facts.may_be_archived(id)
    };
    for (id, reservation) in &facts.reservations {
        if !reservation.is_tombstone() && !exists(id) {
            let status = if reservation.active {
                "active"
            } else {
                "released"
            };
            let facts = format!(
                "no such saga, yet a reservation is {status} with lines {}",
                quantities(&reservation.lines)
            );
            found.push(Violation::saga(Invariant::OrphanReservation, *id, facts));
        }
    }
    for (id, payment) in &facts.payments {
        if !payment.is_tombstone() && !exists(id) {
            let facts = format!(
                "no such saga, yet a payment is {} {} refunded {}",
                payment.status, payment.amount_cents, payment.refunded_cents
            );
            found.push(Violation::saga(Invariant::OrphanPayment, *id, facts));
        }
    }
    for (id, ledger) in &facts.ledger {
        if !ledger.moved_nothing() && !exists(id) {
            let facts = format!(
                "no such saga, yet the provider's ledger shows {}",
                describe_ledger(*ledger)
            );
            found.push(Violation::saga(Invariant::OrphanLedger, *id, facts));
        }
    }
}

/// A confirmed PaymentIntent our books do not record is money moved twice
/// (or by someone else in the saga's name).
pub fn confirmed_orphans(orphans: &[crate::stripe::Orphan]) -> Vec<Violation> {
    orphans
        .iter()
        .map(|orphan| {
            let facts = format!(
                "PaymentIntent {} is {} for {}, yet the payment books record another or none",
                orphan.intent, orphan.status, orphan.amount
            );
            Violation::saga(Invariant::OrphanIntent, orphan.saga, facts)
        })
        .collect()
}

/// `sku-a x2, sku-b x1`, or `nothing`.
fn quantities(quantities: &Quantities) -> String {
    if quantities.is_empty() {
        return "nothing".to_owned();
    }
    let lines: Vec<String> = quantities
        .iter()
        .map(|(sku, quantity)| format!("{sku} x{quantity}"))
        .collect();
    lines.join(", ")
}

#[cfg(test)]
mod tests;
