//! The invariants, as pure checks over [`Facts`]: no I/O, so each one is
//! unit-tested on hand-made facts.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use uuid::Uuid;

use crate::facts::{Facts, LedgerLine, Payment, Quantities, Reservation, Saga, SagaStatus};

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
    /// Not one of the design's invariants, but a saga whose status or state
    /// cannot be read cannot be checked, and must not pass silently.
    SagaReadable,
}

impl Invariant {
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
pub fn check(facts: &Facts, grace: Duration) -> Vec<Violation> {
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
                completed_reserved(saga.id, &state.requested, reservation, &mut found);
                completed_charged(saga.id, state, payment, &mut found);
                ledger_charged(saga.id, state, ledger, &mut found);
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
    stock_conserved(facts, &mut found);
    idempotency_unique(&facts.sagas, &mut found);
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

fn stock_conserved(facts: &Facts, found: &mut Vec<Violation>) {
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    for reservation in facts.reservations.values().filter(|r| r.active) {
        for (sku, quantity) in &reservation.lines {
            *held.entry(sku).or_default() += quantity;
        }
    }
    for (sku, product) in &facts.products {
        let held = held.remove(sku.as_str()).unwrap_or(0);
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
            sku: Some(sku.to_owned()),
            facts: format!("active reservations hold {held} of a SKU with no product row"),
        });
    }
}

fn idempotency_unique(sagas: &[Saga], found: &mut Vec<Violation>) {
    let mut by_key: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for saga in sagas {
        if let Some(key) = &saga.idempotency_key {
            by_key.entry(key).or_default().push(saga.id);
        }
    }
    for (key, ids) in by_key.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let mut facts = format!("idempotency key {key:?} belongs to {} sagas:", ids.len());
        for id in &ids {
            let _ = write!(facts, " {id}");
        }
        found.push(Violation::saga(Invariant::IdempotencyUnique, ids[0], facts));
    }
}

fn orphans(facts: &Facts, found: &mut Vec<Violation>) {
    let known: HashSet<Uuid> = facts.sagas.iter().map(|s| s.id).collect();
    let exists = |id: &Uuid| known.contains(id) || facts.created_since.contains(id);
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
mod tests {
    use super::*;
    use crate::facts::{Product, ReservedTotal, SagaState};
    use chrono::{TimeDelta, Utc};

    const GRACE: Duration = Duration::from_secs(30);

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn lines(pairs: &[(&str, i64)]) -> Quantities {
        pairs.iter().map(|(s, q)| (s.to_string(), *q)).collect()
    }

    fn saga(n: u128, status: SagaStatus) -> Saga {
        Saga {
            id: id(n),
            status: Ok(status),
            state: Ok(SagaState {
                requested: lines(&[("a", 2), ("b", 1)]),
                reserved: Some(ReservedTotal {
                    currency: "USD".into(),
                    subtotal_cents: Some(500),
                }),
                tax_cents: Some(40),
            }),
            idempotency_key: Some(format!("key-{n}")),
            deadline_at: None,
        }
    }

    fn payment(status: &str, amount: i64, refunded: i64) -> Payment {
        Payment {
            status: status.into(),
            amount_cents: amount,
            refunded_cents: refunded,
            currency: Some("USD".into()),
        }
    }

    fn held(active: bool) -> Reservation {
        Reservation {
            active,
            lines: lines(&[("a", 2), ("b", 1)]),
        }
    }

    /// A completed saga (1), a compensated one (2), a running one awaiting a
    /// reply (3), and stock that adds up.
    fn world() -> Facts {
        let now = Utc::now();
        let mut running = saga(3, SagaStatus::Running);
        running.deadline_at = Some(now + TimeDelta::seconds(5));
        Facts {
            now,
            sagas: vec![
                saga(1, SagaStatus::Completed),
                saga(2, SagaStatus::Compensated),
                running,
            ],
            with_outbox: HashSet::new(),
            created_since: HashSet::new(),
            products: [
                (
                    "a",
                    Product {
                        on_hand: 10,
                        available: 6,
                    },
                ),
                (
                    "b",
                    Product {
                        on_hand: 5,
                        available: 3,
                    },
                ),
            ]
            .into_iter()
            .map(|(s, p)| (s.to_owned(), p))
            .collect(),
            reservations: [
                (id(1), held(true)),
                (id(2), held(false)),
                (id(3), held(true)),
            ]
            .into(),
            payments: [
                (id(1), payment("charged", 540, 0)),
                (id(2), payment("refunded", 540, 540)),
            ]
            .into(),
            ledger: [
                (id(1), booked(1, 540, 0, 0)),
                (id(2), booked(1, 540, 1, 540)),
            ]
            .into(),
        }
    }

    fn booked(charges: i64, charged: i64, refunds: i64, refunded: i64) -> LedgerLine {
        LedgerLine {
            charges,
            charged_cents: charged,
            refunds,
            refunded_cents: refunded,
        }
    }

    fn names(facts: &Facts) -> Vec<(&'static str, Option<Uuid>, Option<String>)> {
        check(facts, GRACE)
            .into_iter()
            .map(|v| (v.invariant.name(), v.saga, v.sku))
            .collect()
    }

    #[test]
    fn a_consistent_world_passes() {
        assert_eq!(check(&world(), GRACE), vec![]);
    }

    #[test]
    fn completed_reserved_compares_quantities_per_sku() {
        let mut facts = world();
        facts.reservations.get_mut(&id(1)).unwrap().lines = lines(&[("a", 3), ("b", 1)]);
        facts.products.get_mut("a").unwrap().available = 5;
        assert_eq!(
            names(&facts),
            vec![("completed-reserved", Some(id(1)), Some("a".into()))]
        );

        facts.reservations.remove(&id(1));
        facts.products.get_mut("a").unwrap().available = 8;
        facts.products.get_mut("b").unwrap().available = 4;
        assert_eq!(
            names(&facts),
            vec![("completed-reserved", Some(id(1)), None)]
        );
    }

    #[test]
    fn completed_charged_wants_exactly_the_total() {
        for wrong in [
            payment("charged", 1080, 0),
            payment("refunded", 540, 540),
            payment("charging", 540, 0),
            Payment {
                currency: Some("EUR".into()),
                ..payment("charged", 540, 0)
            },
        ] {
            let mut facts = world();
            facts.payments.insert(id(1), wrong.clone());
            assert_eq!(
                names(&facts),
                vec![("completed-charged", Some(id(1)), None)],
                "{wrong:?}"
            );
        }
        let mut facts = world();
        facts.payments.insert(id(1), payment("charged", 1080, 0));
        let violation = &check(&facts, GRACE)[0];
        assert_eq!(
            violation.facts,
            "expected charge 540 USD cents (subtotal 500 + tax 40), found charged 1080 USD refunded 0"
        );
    }

    #[test]
    fn undone_sagas_hold_nothing() {
        let mut facts = world();
        facts.payments.insert(id(2), payment("refunded", 540, 500));
        assert_eq!(
            names(&facts),
            vec![("undone-holds-nothing", Some(id(2)), None)]
        );

        let mut facts = world();
        facts.reservations.insert(id(2), held(true));
        facts.products.get_mut("a").unwrap().available = 4;
        facts.products.get_mut("b").unwrap().available = 2;
        assert_eq!(
            names(&facts),
            vec![("undone-holds-nothing", Some(id(2)), None)]
        );

        // A declined payment never held money.
        let mut facts = world();
        facts.payments.insert(id(2), payment("declined", 0, 0));
        assert_eq!(names(&facts), vec![]);
    }

    #[test]
    fn stock_is_conserved_per_sku() {
        let mut facts = world();
        facts.products.get_mut("b").unwrap().on_hand = 6;
        assert_eq!(
            names(&facts),
            vec![("stock-conserved", None, Some("b".into()))]
        );
    }

    #[test]
    fn a_running_saga_needs_a_live_deadline_or_an_outbox_row() {
        let mut facts = world();
        facts.sagas[2].deadline_at = Some(facts.now - TimeDelta::seconds(20));
        assert_eq!(names(&facts), vec![], "within the grace");

        facts.sagas[2].deadline_at = Some(facts.now - TimeDelta::seconds(31));
        assert_eq!(names(&facts), vec![("not-stuck", Some(id(3)), None)]);

        facts.with_outbox.insert(id(3));
        assert_eq!(names(&facts), vec![], "a retry is scheduled");

        facts.with_outbox.clear();
        facts.sagas[2].deadline_at = None;
        facts.sagas[2].status = Ok(SagaStatus::Suspended);
        assert_eq!(names(&facts), vec![], "suspended is parked, not stuck");
    }

    #[test]
    fn an_idempotency_key_names_one_saga() {
        let mut facts = world();
        facts.sagas[1].idempotency_key = Some("key-1".into());
        assert_eq!(
            names(&facts),
            vec![("idempotency-unique", Some(id(1)), None)]
        );
    }

    #[test]
    fn orphans_are_reported_but_tombstones_are_not() {
        let mut facts = world();
        facts.reservations.insert(id(9), held(false));
        facts.payments.insert(id(9), payment("charged", 100, 0));
        facts.reservations.insert(id(8), Reservation::tombstone());
        facts.payments.insert(id(8), payment("refunded", 0, 0));
        assert_eq!(
            names(&facts),
            vec![
                ("orphan-reservation", Some(id(9)), None),
                ("orphan-payment", Some(id(9)), None)
            ]
        );

        // Created after the orchestrator's snapshot: not an orphan.
        facts.created_since.insert(id(9));
        assert_eq!(names(&facts), vec![]);
    }

    #[test]
    fn the_provider_ledger_must_show_one_charge_of_the_total_or_net_zero() {
        for wrong in [
            booked(2, 1080, 0, 0),
            booked(1, 540, 1, 540),
            booked(0, 0, 0, 0),
            booked(1, 541, 0, 0),
        ] {
            let mut facts = world();
            facts.ledger.insert(id(1), wrong);
            assert_eq!(
                names(&facts),
                vec![("ledger-charged", Some(id(1)), None)],
                "{wrong:?}"
            );
        }
        let mut facts = world();
        facts.ledger.insert(id(1), booked(2, 1080, 0, 0));
        assert_eq!(
            check(&facts, GRACE)[0].facts,
            "expected one charge of 540 cents at the provider, its ledger shows 2 charges of 1080 cents, 0 refunds of 0 cents"
        );

        // Charged and never refunded, though the saga was compensated.
        let mut facts = world();
        facts.ledger.insert(id(2), booked(1, 540, 0, 0));
        assert_eq!(names(&facts), vec![("ledger-net-zero", Some(id(2)), None)]);
        // Only declined or voided at the provider: nothing moved.
        facts.ledger.insert(id(2), booked(0, 0, 0, 0));
        assert_eq!(names(&facts), vec![]);
    }

    #[test]
    fn an_overflowing_subtotal_is_wrong_only_for_a_completed_saga() {
        let mut facts = world();
        for saga in &mut facts.sagas {
            if let Ok(state) = &mut saga.state {
                state.reserved.as_mut().unwrap().subtotal_cents = None;
            }
        }
        // The compensated one was refused `invalid_amount`: nothing to say.
        assert_eq!(
            names(&facts),
            vec![("completed-charged", Some(id(1)), None)]
        );
    }

    #[test]
    fn money_moved_for_an_unknown_saga_is_an_orphan() {
        let mut facts = world();
        facts.ledger.insert(id(9), booked(1, 100, 0, 0));
        facts.ledger.insert(id(8), booked(0, 0, 0, 0));
        assert_eq!(names(&facts), vec![("orphan-ledger", Some(id(9)), None)]);
        facts.created_since.insert(id(9));
        assert_eq!(names(&facts), vec![]);
    }

    #[test]
    fn an_unreadable_saga_is_reported() {
        let mut facts = world();
        facts.sagas[0].state = Err("state.request.items: invalid type".into());
        assert_eq!(names(&facts), vec![("saga-readable", Some(id(1)), None)]);
    }

    impl Reservation {
        fn tombstone() -> Reservation {
            Reservation {
                active: false,
                lines: Quantities::new(),
            }
        }
    }
}
