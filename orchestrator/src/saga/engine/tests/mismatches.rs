//! A reply that does not match what the saga expects is never applied:
//! the saga parks with the field named, expected against got.

use super::*;

/// Asserts that `t` parked `before` without applying anything, naming
/// `field` in `error`.
fn parked_on(before: &Saga, t: &Transition, field: &str, error: &str) {
    assert_status(&t.saga, SagaStatus::Suspended, ClientStatus::Pending);
    assert_eq!(t.saga.suspended_from, Some(before.status));
    assert!(t.effects.is_empty());
    assert_eq!(t.deadline(), Deadline::None);
    assert_eq!(t.saga.last_error.as_deref(), Some(error));
    let mismatch = t.mismatch.as_ref().expect("a mismatch is reported");
    assert_eq!(mismatch.field, field);
    assert_eq!(mismatch.to_string(), error);
    // Nothing of the reply reached the saga.
    assert_eq!(t.saga.reserved, before.reserved);
    assert_eq!(t.saga.tax, before.tax);
    assert_eq!(t.saga.charge, before.charge);
    assert_eq!(t.saga.completed, before.completed);
    assert_eq!(t.saga.compensations, before.compensations);
    let events: Vec<&str> = t.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["mismatched", "suspended"]);
    assert_eq!(t.history[0].detail.as_deref(), Some(error));
}

#[test]
fn a_charge_of_another_amount_or_currency_parks_and_is_not_applied() {
    for (outcome, field, error) in [
        (
            charged(1, Some("USD")),
            "amount_cents",
            "payment.charge reply: amount_cents expected 2695, got 1",
        ),
        (
            charged(2_695, Some("EUR")),
            "currency",
            "payment.charge reply: currency expected USD, got EUR",
        ),
    ] {
        let saga = at_charge();
        let t = handle(&saga, reply(&saga, outcome), ctx());
        parked_on(&saga, &t, field, error);
    }
}

#[test]
fn a_charge_without_a_currency_is_judged_on_its_amount() {
    // What payment workers older than the field answer.
    let saga = at_charge();
    let t = handle(&saga, reply(&saga, charged(2_695, None)), ctx());
    assert_eq!(t.saga.status, SagaStatus::Completed);
    assert_eq!(t.mismatch, None);
}

/// A saga compensating a charge whose outcome it never learnt.
fn refunding() -> Saga {
    let t = act(&at_charge(), Action::Cancel, "bob", "fraud", ctx()).unwrap();
    assert_eq!(t.saga.current, Some(Step::Refund));
    t.saga
}

#[test]
fn a_refund_short_of_the_charge_parks_the_compensation() {
    let saga = refunding();
    let t = handle(&saga, reply(&saga, refunded(500)), ctx());
    parked_on(
        &saga,
        &t,
        "refunded_cents",
        "payment.refund reply: refunded_cents expected 0 or 2695, got 500",
    );
    assert_eq!(t.saga.phase(), Some(crate::saga::Phase::Compensating));
}

#[test]
fn a_refund_of_everything_or_of_nothing_voided_is_applied() {
    for amount in [0, 2_695] {
        let saga = refunding();
        let t = handle(&saga, reply(&saga, refunded(amount)), ctx());
        assert_eq!(t.mismatch, None, "{amount}");
        assert_eq!(sent_steps(&t), vec![(Step::Release, 1)]);
    }
}

#[test]
fn a_refund_is_judged_against_the_recorded_charge() {
    let mut saga = refunding();
    saga.charge = Some(Charged {
        payment_id: Uuid::nil(),
        amount_cents: Cents::new(1_200),
        currency: None,
    });
    let t = handle(&saga, reply(&saga, refunded(2_695)), ctx());
    parked_on(
        &saga,
        &t,
        "refunded_cents",
        "payment.refund reply: refunded_cents expected 1200, got 2695",
    );
    let t = handle(&saga, reply(&saga, refunded(1_200)), ctx());
    assert_eq!(t.mismatch, None);
}

/// A reservation of `(sku, quantity)` lines, at a dollar each.
fn reserved(lines: &[(&str, u32)]) -> Outcome {
    let priced: Vec<(&str, u32, i64)> = lines
        .iter()
        .map(|&(sku, quantity)| (sku, quantity, 100))
        .collect();
    reserved_priced(&priced)
}

#[test]
fn a_reservation_must_cover_exactly_the_requested_lines() {
    let cases: [(&[(&str, u32)], &str); 4] = [
        (&[("A", 2)], "[A×2]"),
        (&[("A", 1), ("B", 1)], "[A×1, B×1]"),
        (&[("A", 2), ("B", 1), ("C", 1)], "[A×2, B×1, C×1]"),
        (&[("A", 2), ("X", 1)], "[A×2, X×1]"),
    ];
    for (lines, got) in cases {
        let saga = started();
        let t = handle(&saga, reply(&saga, reserved(lines)), ctx());
        parked_on(
            &saga,
            &t,
            "lines",
            &format!("inventory.reserve reply: lines expected [A×2, B×1], got {got}"),
        );
    }
    // The same lines in another order are the same reservation.
    let saga = started();
    let t = handle(&saga, reply(&saga, reserved(&[("B", 1), ("A", 2)])), ctx());
    assert_eq!(t.mismatch, None);
    assert_eq!(sent_steps(&t), vec![(Step::CalculateTax, 1)]);
}

/// A saga awaiting its tax.
fn at_tax() -> Saga {
    let saga = started();
    handle(&saga, reply(&saga, ok_for(Step::Reserve)), ctx()).saga
}

#[test]
fn tax_lines_must_match_the_reserved_items() {
    let saga = at_tax();
    let t = handle(&saga, reply(&saga, tax(&[("A", 145)], 145)), ctx());
    parked_on(
        &saga,
        &t,
        "lines",
        "tax.calculate reply: lines expected [A×1, B×1], got [A×1]",
    );
    let t = handle(
        &saga,
        reply(&saga, tax(&[("A", 145), ("C", 0)], 145)),
        ctx(),
    );
    parked_on(
        &saga,
        &t,
        "lines",
        "tax.calculate reply: lines expected [A×1, B×1], got [A×1, C×1]",
    );
}

#[test]
fn a_tax_total_must_be_the_sum_of_its_lines() {
    let saga = at_tax();
    let t = handle(&saga, reply(&saga, tax(&[("A", 145), ("B", 0)], 1)), ctx());
    parked_on(
        &saga,
        &t,
        "tax_cents",
        "tax.calculate reply: tax_cents expected 145 (the sum of its lines), got 1",
    );
    // No charge went out for the wrong total.
    assert!(t.effects.is_empty());
}

#[test]
fn a_support_retry_after_a_mismatch_applies_the_worker_s_true_answer() {
    let saga = at_charge();
    let parked = handle(&saga, reply(&saga, charged(1, None)), ctx()).saga;
    // The real worker's answer to the attempt the forgery beat arrives late.
    let late = handle(
        &parked,
        Event::Reply {
            step: Step::Charge,
            attempt: saga.attempt,
            outcome: charged(2_695, Some("USD")),
        },
        ctx(),
    );
    assert_eq!(late.saga, parked);
    let retried = act(&parked, Action::Retry, "ann", "forged reply", ctx()).unwrap();
    assert_eq!(sent_steps(&retried), vec![(Step::Charge, 2)]);
    let t = handle(
        &retried.saga,
        reply(&retried.saga, charged(2_695, Some("USD"))),
        ctx(),
    );
    assert_eq!(t.saga.status, SagaStatus::Completed);
    assert_eq!(
        t.saga.charge.map(|c| c.amount_cents),
        Some(Cents::new(2_695))
    );
}

#[test]
fn a_late_mismatched_reply_is_only_in_the_timeline() {
    let saga = at_charge();
    let t = handle(
        &saga,
        Event::Reply {
            step: Step::Charge,
            attempt: saga.attempt + 5,
            outcome: charged(1, None),
        },
        ctx(),
    );
    assert_eq!(t.saga, saga);
    assert_eq!(t.mismatch, None);
}
