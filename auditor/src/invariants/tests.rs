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
        archived_below: None,
        reservations_kept_from: None,
        payments_kept_from: None,
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
fn a_completed_saga_may_lack_the_records_the_workers_retention_pruned() {
    let mut facts = world();
    // As inventory's retention does: the reservation's stock shipped.
    facts.reservations.remove(&id(1));
    facts.products.get_mut("a").unwrap().on_hand -= 2;
    facts.products.get_mut("b").unwrap().on_hand -= 1;
    facts.payments.remove(&id(1));
    facts.ledger.remove(&id(1));
    assert_eq!(
        names(&facts),
        vec![
            ("completed-reserved", Some(id(1)), None),
            ("completed-charged", Some(id(1)), None),
            ("ledger-charged", Some(id(1)), None),
        ]
    );
    facts.reservations_kept_from = Some(id(2));
    facts.payments_kept_from = Some(id(2));
    assert_eq!(names(&facts), vec![]);
    // Below the horizon, what is kept is still checked.
    facts.payments.insert(id(1), payment("charged", 1, 0));
    assert_eq!(
        names(&facts),
        vec![
            ("completed-charged", Some(id(1)), None),
            ("ledger-charged", Some(id(1)), None),
        ]
    );
}

#[test]
fn the_records_of_an_archived_saga_are_no_orphans_but_those_above_the_horizon_are() {
    let mut facts = world();
    facts.reservations.insert(id(9), held(false));
    facts.payments.insert(id(9), payment("charged", 100, 0));
    facts.ledger.insert(id(9), booked(1, 100, 0, 0));
    facts.reservations.insert(id(20), held(false));
    facts.archived_below = Some(id(10));
    assert_eq!(
        names(&facts),
        vec![("orphan-reservation", Some(id(20)), None)]
    );
    assert_eq!(crate::Summary::of(&facts).archived, 1);
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
