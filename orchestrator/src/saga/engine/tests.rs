use proptest::prelude::*;
use saga_protocol::messages::{
    reason, Charged, LineTax, PricedLine, Refunded, Released, Reserved, TaxCalculated,
};
use saga_protocol::values::{Cents, Quantity};

use std::sync::LazyLock;

use super::*;
use crate::saga::{ClientStatus, OnExhausted, RetryPolicy, StepPolicies};

/// A saga awaiting its reservation.
fn started() -> Saga {
    start(Uuid::nil(), CheckoutRequest::example(), ctx()).saga
}

/// Asserts the saga's status, and what its client is told of it.
fn assert_status(saga: &Saga, status: SagaStatus, client: ClientStatus) {
    assert_eq!(saga.status, status);
    assert_eq!(saga.status.client_status(), client);
}

fn ok_for(step: Step) -> Outcome {
    match step {
        Step::Reserve => reserved_priced(&[("A", 2, 1_000), ("B", 1, 550)]),
        Step::CalculateTax => tax(&[("A", 145), ("B", 0)], 145),
        Step::Charge => charged(2_695, Some("USD")),
        Step::Release => Outcome::Ok(StepResult::Released(Released { released: true })),
        Step::Refund => refunded(2_695),
    }
}

fn charged(amount_cents: i64, currency: Option<&str>) -> Outcome {
    Outcome::Ok(StepResult::Charged(Charged {
        payment_id: Uuid::nil(),
        amount_cents: Cents::new(amount_cents),
        currency: currency.map(|c| c.parse().unwrap()),
    }))
}

fn refunded(refunded_cents: i64) -> Outcome {
    Outcome::Ok(StepResult::Refunded(Refunded {
        refunded_cents: Cents::new(refunded_cents),
    }))
}

/// Tax of each `(sku, cents)` line, every one at 7.25 % (the engine reads
/// only the cents).
fn tax(lines: &[(&str, i64)], total: i64) -> Outcome {
    Outcome::Ok(StepResult::TaxCalculated(TaxCalculated {
        lines: lines
            .iter()
            .map(|(sku, tax_cents)| LineTax {
                sku: sku.parse().unwrap(),
                rate_bp: 725,
                tax_cents: Cents::new(*tax_cents),
            })
            .collect(),
        tax_cents: Cents::new(total),
    }))
}

fn reply(saga: &Saga, outcome: Outcome) -> Event {
    Event::Reply {
        step: saga.current.unwrap(),
        attempt: saga.attempt,
        outcome,
    }
}

fn sent_steps(t: &Transition) -> Vec<(Step, u32)> {
    t.effects
        .iter()
        .map(
            |Effect::Send {
                 command, attempt, ..
             }| (command.step(), *attempt),
        )
        .collect()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    }
}

static POLICIES: LazyLock<StepPolicies> = LazyLock::new(|| StepPolicies::uniform(policy()));

/// The test policies, with the backoff's jitter at its middle.
fn ctx() -> Context<'static> {
    ctx_with(&POLICIES)
}

/// `policies`, with the backoff's jitter at its middle.
fn ctx_with(policies: &StepPolicies) -> Context<'_> {
    Context {
        policies,
        jitter: 0.5,
    }
}

/// The test policies, but a charge that exhausts its `max_attempts`
/// compensates rather than parks.
fn charge_compensates(max_attempts: u32) -> StepPolicies {
    StepPolicies::uniform(policy()).with(
        Step::Charge,
        RetryPolicy {
            max_attempts,
            on_exhausted: OnExhausted::Compensate,
            ..policy()
        },
    )
}

#[test]
fn start_reserves_the_requested_lines() {
    let t = start(Uuid::nil(), CheckoutRequest::example(), ctx());
    assert_eq!(t.saga.status, SagaStatus::Running);
    assert_eq!(sent_steps(&t), vec![(Step::Reserve, 1)]);
    let Effect::Send {
        command: Command::Reserve(r),
        ..
    } = &t.effects[0]
    else {
        panic!()
    };
    assert_eq!(r.lines, CheckoutRequest::example().items);
}

#[test]
fn happy_path_completes_with_totals_and_charges_subtotal_plus_tax() {
    let mut saga = started();
    let t = handle(&saga, reply(&saga, ok_for(Step::Reserve)), ctx());
    assert_eq!(sent_steps(&t), vec![(Step::CalculateTax, 1)]);
    saga = t.saga;
    let t = handle(&saga, reply(&saga, ok_for(Step::CalculateTax)), ctx());
    let Effect::Send {
        command: Command::Charge(charge),
        ..
    } = &t.effects[0]
    else {
        panic!()
    };
    assert_eq!(charge.amount_cents, 2_550 + 145);
    assert_eq!(charge.currency, "USD");
    saga = t.saga;
    let t = handle(&saga, reply(&saga, ok_for(Step::Charge)), ctx());
    assert!(t.effects.is_empty());
    assert_status(&t.saga, SagaStatus::Completed, ClientStatus::Completed);
    assert_eq!(t.saga.subtotal_cents(), Some(Cents::new(2_550)));
    assert_eq!(t.saga.tax_cents(), Some(Cents::new(145)));
    assert_eq!(t.saga.total_cents(), Some(Cents::new(2_695)));
}

#[test]
fn rejected_reserve_compensates_nothing() {
    let saga = started();
    let t = handle(
        &saga,
        reply(&saga, Outcome::rejected(reason::OUT_OF_STOCK, "A")),
        ctx(),
    );
    assert!(t.effects.is_empty());
    assert_status(&t.saga, SagaStatus::Compensated, ClientStatus::Rejected);
    assert_eq!(t.saga.reason.as_deref(), Some(reason::OUT_OF_STOCK));
}

#[test]
fn declined_charge_releases_the_stock_then_is_rejected() {
    let saga = releasing();
    let t = handle(&saga, reply(&saga, ok_for(Step::Release)), ctx());
    assert_eq!(t.saga.status, SagaStatus::Compensated);
    assert_eq!(t.saga.reason.as_deref(), Some(reason::PAYMENT_DECLINED));
}

/// The test request with `quantity` of its SKU A.
fn request_of_a(quantity: u32) -> CheckoutRequest {
    let mut request = CheckoutRequest::example();
    request.items[0].quantity = Quantity::new(quantity).unwrap();
    request
}

/// A reservation priced so that the money overflows an `i64` of cents.
fn reserved_at(unit_price_cents: i64, quantity: u32) -> Outcome {
    reserved_priced(&[("A", quantity, unit_price_cents), ("B", 1, 1)])
}

/// A reservation of `(sku, quantity, unit price in cents)` lines, in
/// dollars (the engine reads no tax category).
fn reserved_priced(lines: &[(&str, u32, i64)]) -> Outcome {
    Outcome::Ok(StepResult::Reserved(Reserved {
        currency: "USD".parse().unwrap(),
        lines: lines
            .iter()
            .map(|&(sku, quantity, unit_price_cents)| PricedLine {
                sku: sku.parse().unwrap(),
                quantity: Quantity::new(quantity).unwrap(),
                unit_price_cents: Cents::new(unit_price_cents),
                tax_category: "books".into(),
            })
            .collect(),
    }))
}

#[test]
fn a_subtotal_that_overflows_is_rejected_and_the_stock_released() {
    for (price, quantity) in [(i64::MAX, 2), (i64::MAX, 1)] {
        let saga = start(Uuid::nil(), request_of_a(quantity), ctx()).saga;
        let t = handle(&saga, reply(&saga, reserved_at(price, quantity)), ctx());
        assert_eq!(
            t.saga.status,
            SagaStatus::Compensating,
            "{price} x {quantity}"
        );
        assert_eq!(t.saga.reason.as_deref(), Some(reason::INVALID_AMOUNT));
        assert_eq!(sent_steps(&t), vec![(Step::Release, 1)]);
        assert_eq!(t.saga.subtotal_cents(), None);
        let t = handle(&t.saga, reply(&t.saga, ok_for(Step::Release)), ctx());
        assert_status(&t.saga, SagaStatus::Compensated, ClientStatus::Rejected);
    }
}

#[test]
fn a_total_that_overflows_is_rejected_before_any_charge() {
    let saga = start(Uuid::nil(), request_of_a(1), ctx()).saga;
    // The subtotal just fits; the tax pushes the total over.
    let saga = handle(&saga, reply(&saga, reserved_at(i64::MAX - 1, 1)), ctx()).saga;
    assert_eq!(saga.subtotal_cents(), Some(Cents::new(i64::MAX)));
    let t = handle(&saga, reply(&saga, ok_for(Step::CalculateTax)), ctx());
    assert_eq!(t.saga.reason.as_deref(), Some(reason::INVALID_AMOUNT));
    assert_eq!(sent_steps(&t), vec![(Step::Release, 1)], "no charge sent");
    assert_eq!(t.saga.total_cents(), None);
}

#[test]
fn transient_retries_with_backoff_then_suspends() {
    let saga = started();
    let t = handle(
        &saga,
        reply(&saga, Outcome::Transient { error: "db".into() }),
        ctx(),
    );
    assert_eq!(
        t.effects,
        vec![Effect::Send {
            command: Command::Reserve(ReserveStock {
                lines: CheckoutRequest::example().items
            }),
            attempt: 2,
            // Full jitter at 0.5 of the first backoff ceiling (200 ms).
            delay: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
        }]
    );
    let t = handle(
        &t.saga,
        reply(&t.saga, Outcome::Transient { error: "db".into() }),
        ctx(),
    );
    assert_eq!(sent_steps(&t), vec![(Step::Reserve, 3)]);
    let t = handle(
        &t.saga,
        reply(&t.saga, Outcome::Transient { error: "db".into() }),
        ctx(),
    );
    assert!(t.effects.is_empty());
    assert_status(&t.saga, SagaStatus::Suspended, ClientStatus::Pending);
    assert_eq!(t.saga.current, Some(Step::Reserve));
    assert!(t.saga.last_error.as_deref().unwrap().contains("db"));
}

#[test]
fn stale_and_duplicate_replies_change_nothing_but_the_timeline() {
    let saga = started();
    let after = handle(&saga, reply(&saga, ok_for(Step::Reserve)), ctx()).saga;
    // The same reserve reply again, and a reply for an old attempt.
    for event in [
        Event::Reply {
            step: Step::Reserve,
            attempt: 1,
            outcome: ok_for(Step::Reserve),
        },
        Event::Reply {
            step: Step::CalculateTax,
            attempt: 7,
            outcome: ok_for(Step::CalculateTax),
        },
    ] {
        let t = handle(&after, event, ctx());
        assert_eq!(t.saga, after);
        assert!(t.effects.is_empty());
        assert_eq!(t.history.len(), 1);
        assert!(t.history[0].event.starts_with("late_"));
    }
}

#[test]
fn a_refusing_compensation_parks_the_saga() {
    let saga = releasing();
    let t = handle(&saga, reply(&saga, Outcome::rejected("weird", "")), ctx());
    assert_eq!(t.saga.status, SagaStatus::Suspended);
    assert_eq!(t.saga.compensations, vec![Step::Release]);
}

fn transient() -> Outcome {
    Outcome::Transient {
        error: "provider unavailable".into(),
    }
}

/// A saga awaiting its charge.
fn at_charge() -> Saga {
    let mut saga = started();
    for step in [Step::Reserve, Step::CalculateTax] {
        saga = handle(&saga, reply(&saga, ok_for(step)), ctx()).saga;
    }
    assert_eq!(saga.current, Some(Step::Charge));
    saga
}

/// A saga whose charge was declined, releasing its stock.
fn releasing() -> Saga {
    let saga = at_charge();
    let t = handle(
        &saga,
        reply(&saga, Outcome::rejected(reason::PAYMENT_DECLINED, "no")),
        ctx(),
    );
    assert_eq!(t.saga.status, SagaStatus::Compensating);
    assert_eq!(sent_steps(&t), vec![(Step::Release, 1)]);
    t.saga
}

/// A saga whose charge exhausted its attempts (transient each time).
fn parked_at_charge() -> Saga {
    let mut saga = at_charge();
    for _ in 0..3 {
        saga = handle(&saga, reply(&saga, transient()), ctx()).saga;
    }
    assert_eq!(saga.status, SagaStatus::Suspended);
    saga
}

#[test]
fn every_attempt_is_in_the_timeline_with_its_backoff_and_deadline() {
    let saga = at_charge();
    let t = handle(&saga, reply(&saga, transient()), ctx());
    let sent = t.history.last().unwrap();
    assert_eq!(
        (sent.step, sent.attempt, sent.event.as_str()),
        (Some(Step::Charge), 2, "sent")
    );
    assert_eq!(
        sent.detail.as_deref(),
        Some("after a backoff of 100 ms; deadline 10000 ms")
    );
    assert_eq!(t.deadline(), Deadline::In(Duration::from_millis(10_100)));
}

/// The first charge attempt's deadline, missed.
fn first_charge_missed() -> Event {
    Event::DeadlineMissed {
        step: Step::Charge,
        attempt: 1,
    }
}

#[test]
fn a_missed_deadline_retries_and_a_late_reply_changes_nothing() {
    let saga = at_charge();
    let t = handle(&saga, first_charge_missed(), ctx());
    assert_eq!(t.history[0].event, "deadline_missed");
    assert_eq!(sent_steps(&t), vec![(Step::Charge, 2)]);
    assert!(t
        .saga
        .last_error
        .as_deref()
        .unwrap()
        .contains("outcome unknown"));
    // Attempt 1 answers after all: recorded, nothing else.
    let late = handle(
        &t.saga,
        Event::Reply {
            step: Step::Charge,
            attempt: 1,
            outcome: ok_for(Step::Charge),
        },
        ctx(),
    );
    assert_eq!(late.saga, t.saga);
    assert_eq!(late.history[0].event, "late_ok");
    assert_eq!(late.deadline(), Deadline::Unchanged);
    // A deadline for an attempt no longer awaited does nothing at all.
    let stale = handle(&t.saga, first_charge_missed(), ctx());
    assert_eq!(stale.saga, t.saga);
    assert!(stale.history.is_empty() && stale.effects.is_empty());
}

#[test]
fn an_exhausted_forward_step_parks_with_its_last_error() {
    let saga = parked_at_charge();
    assert_eq!(saga.current, Some(Step::Charge));
    assert_eq!(saga.suspended_from, Some(SagaStatus::Running));
    assert_eq!(saga.phase(), Some(crate::saga::Phase::Forward));
    assert_eq!(saga.last_error.as_deref(), Some("provider unavailable"));
    assert_status(&saga, SagaStatus::Suspended, ClientStatus::Pending);
}

#[test]
fn a_step_set_to_compensate_undoes_itself_and_what_came_before() {
    let policies = charge_compensates(1);
    let ctx = ctx_with(&policies);
    let saga = at_charge();
    let t = handle(&saga, first_charge_missed(), ctx);
    assert_eq!(t.saga.status, SagaStatus::Compensating);
    // The charge may have happened: refund it, then release the stock.
    assert_eq!(t.saga.compensations, vec![Step::Refund, Step::Release]);
    assert_eq!(sent_steps(&t), vec![(Step::Refund, 1)]);
    let mut saga = t.saga;
    for step in [Step::Refund, Step::Release] {
        saga = handle(&saga, reply(&saga, ok_for(step)), ctx).saga;
    }
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert_eq!(saga.reason.as_deref(), Some(super::UNAVAILABLE));
}

#[test]
fn retry_starts_a_new_series_of_attempts_from_the_parked_step() {
    let saga = parked_at_charge();
    let t = act(&saga, Action::Retry, "alice", "provider is back", ctx()).unwrap();
    assert_eq!(t.saga.status, SagaStatus::Running);
    assert_eq!(sent_steps(&t), vec![(Step::Charge, 4)]);
    let action = &t.history[0];
    assert_eq!(action.event, "retry");
    assert_eq!(action.actor.as_deref(), Some("alice"));
    assert_eq!(action.reason.as_deref(), Some("provider is back"));
    // The new series has the whole budget again.
    let mut saga = t.saga;
    for attempt in 5..=6 {
        saga = handle(&saga, reply(&saga, transient()), ctx()).saga;
        assert_eq!((saga.status, saga.attempt), (SagaStatus::Running, attempt));
    }
    // A reply to the first series is late; the third of this one parks.
    let late = Event::Reply {
        step: Step::Charge,
        attempt: 3,
        outcome: ok_for(Step::Charge),
    };
    assert_eq!(handle(&saga, late, ctx()).saga, saga);
    let saga = handle(&saga, reply(&saga, transient()), ctx()).saga;
    assert_eq!(saga.status, SagaStatus::Suspended);
    let saga = retried_then_ok(&saga, Step::Charge);
    assert_eq!(saga.status, SagaStatus::Completed);
}

/// Support retries the parked `saga`, and the `step` it sends again
/// succeeds.
fn retried_then_ok(saga: &Saga, step: Step) -> Saga {
    let saga = act(saga, Action::Retry, "alice", "again", ctx())
        .unwrap()
        .saga;
    assert_eq!(saga.current, Some(step));
    handle(&saga, reply(&saga, ok_for(step)), ctx()).saga
}

#[test]
fn cancel_of_a_parked_saga_compensates_everything_then_is_cancelled() {
    let saga = parked_at_charge();
    let t = act(&saga, Action::Cancel, "bob", "customer asked", ctx()).unwrap();
    assert_eq!(t.saga.status, SagaStatus::Compensating);
    assert_eq!(t.saga.compensations, vec![Step::Refund, Step::Release]);
    let mut saga = t.saga;
    for step in [Step::Refund, Step::Release] {
        saga = handle(&saga, reply(&saga, ok_for(step)), ctx()).saga;
    }
    assert_status(&saga, SagaStatus::Cancelled, ClientStatus::Cancelled);
}

#[test]
fn cancel_of_a_running_saga_undoes_the_step_in_flight_too() {
    let saga = started();
    let t = act(&saga, Action::Cancel, "bob", "fraud", ctx()).unwrap();
    // The reserve may land after the release: the worker's tombstone makes
    // it hold nothing.
    assert_eq!(sent_steps(&t), vec![(Step::Release, 1)]);
    let late = Event::Reply {
        step: Step::Reserve,
        attempt: 1,
        outcome: ok_for(Step::Reserve),
    };
    let after_late = handle(&t.saga, late, ctx());
    assert_eq!(after_late.saga, t.saga);
    let done = handle(&t.saga, reply(&t.saga, ok_for(Step::Release)), ctx());
    assert_eq!(done.saga.status, SagaStatus::Cancelled);
}

#[test]
fn a_parked_compensation_is_retried_not_cancelled() {
    let mut saga = releasing();
    for _ in 0..3 {
        saga = handle(&saga, reply(&saga, transient()), ctx()).saga;
    }
    assert_eq!(saga.status, SagaStatus::Suspended);
    assert_eq!(saga.phase(), Some(crate::saga::Phase::Compensating));
    assert_eq!(saga.compensations, vec![Step::Release]);
    let refused = act(&saga, Action::Cancel, "bob", "x", ctx()).unwrap_err();
    assert_eq!(refused.status, "suspended");
    let saga = act(&saga, Action::Retry, "bob", "inventory is back", ctx())
        .unwrap()
        .saga;
    assert_eq!(saga.status, SagaStatus::Compensating);
    let saga = handle(&saga, reply(&saga, ok_for(Step::Release)), ctx()).saga;
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert_eq!(saga.reason.as_deref(), Some(reason::PAYMENT_DECLINED));
}

#[test]
fn support_actions_in_the_wrong_state_are_refused() {
    let running = at_charge();
    assert!(act(&running, Action::Retry, "a", "r", ctx()).is_err());
    let mut done = running.clone();
    done = handle(&done, reply(&done, ok_for(Step::Charge)), ctx()).saga;
    assert_eq!(done.status, SagaStatus::Completed);
    for action in [Action::Retry, Action::Cancel] {
        let refused = act(&done, action, "a", "r", ctx()).unwrap_err();
        assert_eq!(refused.status, "completed");
    }
}

fn publish_failed(saga: &Saga, attempt: u32) -> Event {
    Event::PublishFailed {
        step: saga.current.unwrap(),
        attempt,
        error: "RabbitMQ refused the message (nack) for checkout.commands/payment.charge".into(),
        tries: 7,
        refused_for: Duration::from_millis(30_000),
    }
}

#[test]
fn a_command_the_broker_keeps_refusing_parks_its_saga_for_support() {
    // Even a step set to compensate parks: compensating would publish into
    // the same broker.
    let policies = charge_compensates(policy().max_attempts);
    let ctx = ctx_with(&policies);
    let saga = at_charge();
    let t = handle(&saga, publish_failed(&saga, 1), ctx);
    assert_eq!(t.saga.status, SagaStatus::Suspended);
    assert_eq!(t.saga.suspended_from, Some(SagaStatus::Running));
    assert_eq!(
        t.saga.last_error.as_deref(),
        Some("cannot publish: RabbitMQ refused the message (nack) for checkout.commands/payment.charge")
    );
    // Nothing sent, nothing awaited: the deadline timer leaves it be.
    assert!(t.effects.is_empty());
    assert_eq!(t.deadline(), Deadline::None);
    let events: Vec<&str> = t.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, vec!["publish_failed", "suspended"]);
    assert_eq!(
        t.history[0].detail.as_deref(),
        Some("refused 7 times over 30000 ms: RabbitMQ refused the message (nack) for checkout.commands/payment.charge")
    );
    // Once the broker accepts again, support's retry sends the charge anew.
    let retried = act(&t.saga, Action::Retry, "alice", "queue fixed", ctx).unwrap();
    assert_eq!(retried.saga.status, SagaStatus::Running);
    assert_eq!(sent_steps(&retried), vec![(Step::Charge, 2)]);
    let done = handle(
        &retried.saga,
        reply(&retried.saga, ok_for(Step::Charge)),
        ctx,
    );
    assert_eq!(done.saga.status, SagaStatus::Completed);
}

#[test]
fn a_refused_compensation_parks_in_the_compensating_phase() {
    let saga = releasing();
    assert_eq!(saga.current, Some(Step::Release));
    let t = handle(&saga, publish_failed(&saga, 1), ctx());
    assert_eq!(t.saga.status, SagaStatus::Suspended);
    assert_eq!(t.saga.phase(), Some(crate::saga::Phase::Compensating));
    let saga = retried_then_ok(&t.saga, Step::Release);
    assert_eq!(saga.status, SagaStatus::Compensated);
}

#[test]
fn a_refused_command_of_an_attempt_no_longer_awaited_changes_nothing() {
    let saga = at_charge();
    let moved_on = handle(&saga, reply(&saga, transient()), ctx()).saga;
    assert_eq!(moved_on.attempt, 2);
    let stale = handle(&moved_on, publish_failed(&moved_on, 1), ctx());
    assert_eq!(stale.saga, moved_on);
    assert!(stale.history.is_empty() && stale.effects.is_empty());
    let parked = parked_at_charge();
    let attempt = parked.attempt;
    let again = handle(&parked, publish_failed(&parked, attempt), ctx());
    assert_eq!(again.saga, parked, "an already parked saga stays as it is");
}

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Rejected,
    Transient,
    Deadline,
    Stale,
    Unpublishable,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Ok),
        1 => Just(Answer::Rejected),
        2 => Just(Answer::Transient),
        1 => Just(Answer::Deadline),
        1 => Just(Answer::Stale),
        1 => Just(Answer::Unpublishable),
    ]
}

proptest! {
    /// Any sequence of replies (then `ok` for whatever is left) ends in a
    /// final or suspended state, and the compensations sent are exactly
    /// those of the completed steps, in reverse order, each until it succeeded.
    #[test]
    fn any_reply_sequence_ends_consistently(answers in proptest::collection::vec(answer(), 0..40)) {
        let policy = policy();
        let t = start(Uuid::nil(), CheckoutRequest::example(), ctx());
        let mut sent: Vec<(Step, u32)> = sent_steps(&t);
        let mut saga = t.saga;
        let mut script = answers.into_iter();
        let mut guard = 0;
        while matches!(saga.status, SagaStatus::Running | SagaStatus::Compensating) {
            guard += 1;
            prop_assert!(guard < 200, "saga never settles");
            let step = saga.current.unwrap();
            let event = match script.next().unwrap_or(Answer::Ok) {
                Answer::Ok => reply(&saga, ok_for(step)),
                Answer::Rejected if saga.status == SagaStatus::Running => {
                    reply(&saga, Outcome::rejected(reason::OUT_OF_STOCK, "x"))
                }
                Answer::Rejected => reply(&saga, ok_for(step)),
                Answer::Transient => reply(&saga, Outcome::Transient { error: "t".into() }),
                Answer::Deadline => Event::DeadlineMissed { step, attempt: saga.attempt },
                Answer::Stale => Event::Reply { step, attempt: saga.attempt + 1, outcome: ok_for(step) },
                Answer::Unpublishable => publish_failed(&saga, saga.attempt),
            };
            let t = handle(&saga, event, ctx());
            // The deadline timer looks for awaited replies among running
            // and compensating sagas only.
            if !matches!(t.deadline(), Deadline::None) {
                prop_assert!(matches!(t.saga.status, SagaStatus::Running | SagaStatus::Compensating));
            }
            for (_, attempt) in sent_steps(&t) {
                prop_assert!(attempt <= policy.max_attempts);
            }
            sent.extend(sent_steps(&t));
            saga = t.saga;
        }
        let forward: Vec<Step> = sent.iter().filter(|(_, a)| *a == 1).map(|(s, _)| *s)
            .filter(|s| [Step::Reserve, Step::CalculateTax, Step::Charge].contains(s)).collect();
        let compensations: Vec<Step> = sent.iter().filter(|(_, a)| *a == 1).map(|(s, _)| *s)
            .filter(|s| [Step::Release, Step::Refund].contains(s)).collect();
        let expected: Vec<Step> = saga.completed.iter().rev().filter_map(|s| compensation_of(*s)).collect();
        match saga.status {
            SagaStatus::Completed => {
                prop_assert_eq!(&saga.completed, &vec![Step::Reserve, Step::CalculateTax, Step::Charge]);
                prop_assert!(compensations.is_empty());
                prop_assert_eq!(forward, saga.completed.clone());
            }
            SagaStatus::Compensated => {
                prop_assert!(saga.reason.is_some());
                prop_assert_eq!(compensations, expected);
                prop_assert!(saga.compensations.is_empty());
            }
            SagaStatus::Suspended => {
                // Parked: whatever compensations already ran are a prefix of the expected ones.
                prop_assert!(expected.starts_with(&compensations));
                prop_assert!(saga.last_error.is_some());
            }
            other => prop_assert!(false, "unexpected status {:?}", other),
        }
    }
}

mod mismatches;

#[test]
fn an_expired_park_cancels_forward_and_retries_a_compensation() {
    let parked = parked_at_charge();
    let t = expire_park(&parked, "24h", ctx()).unwrap();
    assert!(t.saga.cancelled);
    assert_eq!(sent_steps(&t), vec![(Step::Refund, 1)]);
    assert_eq!(t.history[0].event, "park_expired");
    assert_eq!(
        t.history[0].detail.as_deref(),
        Some("parked longer than PARKED_SAGA_TTL (24h); cancelling with compensation")
    );
    // Parked compensating: the compensation is the only way on.
    let mut saga = act(&at_charge(), Action::Cancel, "bob", "x", ctx())
        .unwrap()
        .saga;
    for _ in 0..3 {
        saga = handle(&saga, reply(&saga, transient()), ctx()).saga;
    }
    assert_eq!(saga.status, SagaStatus::Suspended);
    let t = expire_park(&saga, "1s", ctx()).unwrap();
    assert_eq!(t.saga.status, SagaStatus::Compensating);
    assert_eq!(sent_steps(&t), vec![(Step::Refund, 4)]);
    assert_eq!(expire_park(&at_charge(), "1s", ctx()), None);
}
