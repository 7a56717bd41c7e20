use proptest::prelude::*;
use saga_shared::messages::{
    reason, Charged, LineRequest, LineTax, PricedLine, Refunded, Released, Reserved, ShipTo,
    TaxCalculated,
};

use super::*;

fn request() -> CheckoutRequest {
    CheckoutRequest {
        customer_id: "c-1".into(),
        items: vec![
            LineRequest {
                sku: "A".into(),
                quantity: 2,
            },
            LineRequest {
                sku: "B".into(),
                quantity: 1,
            },
        ],
        ship_to: ShipTo {
            country: "US".into(),
            region: "CA".into(),
        },
        payment_method: "sim_approve".into(),
    }
}

fn ok_for(step: Step) -> Outcome {
    Outcome::Ok(match step {
        Step::Reserve => StepResult::Reserved(Reserved {
            currency: "USD".into(),
            lines: vec![
                PricedLine {
                    sku: "A".into(),
                    quantity: 2,
                    unit_price_cents: 1_000,
                    tax_category: "clothing".into(),
                },
                PricedLine {
                    sku: "B".into(),
                    quantity: 1,
                    unit_price_cents: 550,
                    tax_category: "books".into(),
                },
            ],
        }),
        Step::CalculateTax => StepResult::TaxCalculated(TaxCalculated {
            lines: vec![
                LineTax {
                    sku: "A".into(),
                    rate_bp: 725,
                    tax_cents: 145,
                },
                LineTax {
                    sku: "B".into(),
                    rate_bp: 0,
                    tax_cents: 0,
                },
            ],
            tax_cents: 145,
        }),
        Step::Charge => StepResult::Charged(Charged {
            payment_id: Uuid::nil(),
            amount_cents: 2_695,
        }),
        Step::Release => StepResult::Released(Released { released: true }),
        Step::Refund => StepResult::Refunded(Refunded {
            refunded_cents: 2_695,
        }),
    })
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

#[test]
fn start_reserves_the_requested_lines() {
    let t = start(Uuid::nil(), request());
    assert_eq!(t.saga.status, SagaStatus::Running);
    assert_eq!(sent_steps(&t), vec![(Step::Reserve, 1)]);
    let Effect::Send {
        command: Command::Reserve(r),
        ..
    } = &t.effects[0]
    else {
        panic!()
    };
    assert_eq!(r.lines, request().items);
}

#[test]
fn happy_path_completes_with_totals_and_charges_subtotal_plus_tax() {
    let mut saga = start(Uuid::nil(), request()).saga;
    let t = handle(&saga, reply(&saga, ok_for(Step::Reserve)), &policy());
    assert_eq!(sent_steps(&t), vec![(Step::CalculateTax, 1)]);
    saga = t.saga;
    let t = handle(&saga, reply(&saga, ok_for(Step::CalculateTax)), &policy());
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
    let t = handle(&saga, reply(&saga, ok_for(Step::Charge)), &policy());
    assert!(t.effects.is_empty());
    assert_eq!(t.saga.status, SagaStatus::Completed);
    assert_eq!(t.saga.subtotal_cents(), Some(2_550));
    assert_eq!(t.saga.tax_cents(), Some(145));
    assert_eq!(t.saga.total_cents(), Some(2_695));
    assert_eq!(
        t.saga.status.client_status(),
        crate::saga::ClientStatus::Completed
    );
}

#[test]
fn rejected_reserve_compensates_nothing() {
    let saga = start(Uuid::nil(), request()).saga;
    let t = handle(
        &saga,
        reply(&saga, Outcome::rejected(reason::OUT_OF_STOCK, "A")),
        &policy(),
    );
    assert!(t.effects.is_empty());
    assert_eq!(t.saga.status, SagaStatus::Compensated);
    assert_eq!(t.saga.reason.as_deref(), Some(reason::OUT_OF_STOCK));
    assert_eq!(
        t.saga.status.client_status(),
        crate::saga::ClientStatus::Rejected
    );
}

#[test]
fn declined_charge_releases_the_stock_then_is_rejected() {
    let mut saga = start(Uuid::nil(), request()).saga;
    for step in [Step::Reserve, Step::CalculateTax] {
        saga = handle(&saga, reply(&saga, ok_for(step)), &policy()).saga;
    }
    let t = handle(
        &saga,
        reply(&saga, Outcome::rejected(reason::PAYMENT_DECLINED, "no")),
        &policy(),
    );
    assert_eq!(t.saga.status, SagaStatus::Compensating);
    assert_eq!(sent_steps(&t), vec![(Step::Release, 1)]);
    let t = handle(&t.saga, reply(&t.saga, ok_for(Step::Release)), &policy());
    assert_eq!(t.saga.status, SagaStatus::Compensated);
    assert_eq!(t.saga.reason.as_deref(), Some(reason::PAYMENT_DECLINED));
}

#[test]
fn transient_retries_with_backoff_then_suspends() {
    let saga = start(Uuid::nil(), request()).saga;
    let t = handle(
        &saga,
        reply(&saga, Outcome::Transient { error: "db".into() }),
        &policy(),
    );
    assert_eq!(
        t.effects,
        vec![Effect::Send {
            command: Command::Reserve(ReserveStock {
                lines: request().items
            }),
            attempt: 2,
            retry: 1,
        }]
    );
    let t = handle(
        &t.saga,
        reply(&t.saga, Outcome::Transient { error: "db".into() }),
        &policy(),
    );
    assert_eq!(sent_steps(&t), vec![(Step::Reserve, 3)]);
    let t = handle(
        &t.saga,
        reply(&t.saga, Outcome::Transient { error: "db".into() }),
        &policy(),
    );
    assert!(t.effects.is_empty());
    assert_eq!(t.saga.status, SagaStatus::Suspended);
    assert_eq!(t.saga.current, Some(Step::Reserve));
    assert!(t.saga.last_error.as_deref().unwrap().contains("db"));
    assert_eq!(
        t.saga.status.client_status(),
        crate::saga::ClientStatus::Pending
    );
}

#[test]
fn stale_and_duplicate_replies_change_nothing_but_the_timeline() {
    let saga = start(Uuid::nil(), request()).saga;
    let after = handle(&saga, reply(&saga, ok_for(Step::Reserve)), &policy()).saga;
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
        let t = handle(&after, event, &policy());
        assert_eq!(t.saga, after);
        assert!(t.effects.is_empty());
        assert_eq!(t.history.len(), 1);
        assert!(t.history[0].event.starts_with("late_"));
    }
}

#[test]
fn a_refusing_compensation_parks_the_saga() {
    let mut saga = start(Uuid::nil(), request()).saga;
    for step in [Step::Reserve, Step::CalculateTax] {
        saga = handle(&saga, reply(&saga, ok_for(step)), &policy()).saga;
    }
    saga = handle(
        &saga,
        reply(&saga, Outcome::rejected(reason::PAYMENT_DECLINED, "")),
        &policy(),
    )
    .saga;
    let t = handle(
        &saga,
        reply(&saga, Outcome::rejected("weird", "")),
        &policy(),
    );
    assert_eq!(t.saga.status, SagaStatus::Suspended);
    assert_eq!(t.saga.compensations, vec![Step::Release]);
}

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Rejected,
    Transient,
    Stale,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Ok),
        1 => Just(Answer::Rejected),
        2 => Just(Answer::Transient),
        1 => Just(Answer::Stale),
    ]
}

proptest! {
    /// Any sequence of replies (then `ok` for whatever is left) ends in a
    /// final or suspended state, and the compensations sent are exactly
    /// those of the completed steps, in reverse order, each until it succeeded.
    #[test]
    fn any_reply_sequence_ends_consistently(answers in proptest::collection::vec(answer(), 0..40)) {
        let policy = policy();
        let t = start(Uuid::nil(), request());
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
                Answer::Stale => Event::Reply { step, attempt: saga.attempt + 1, outcome: ok_for(step) },
            };
            let t = handle(&saga, event, &policy);
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
