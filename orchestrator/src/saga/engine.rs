//! The saga engine: `(saga, event) -> (saga', effects)`, pure.
//!
//! Forward steps run in order: reserve stock, calculate tax, charge. A
//! rejection compensates the completed steps in reverse order (refund, then
//! release; tax has nothing to undo). A transient reply retries the same
//! action after a backoff; an action that exhausts its attempts parks the
//! saga as `suspended` with its last error.

use saga_shared::messages::{
    CalculateTax, ChargePayment, Command, Outcome, RefundPayment, ReleaseStock, ReserveStock,
    StepResult,
};
use saga_shared::Step;
use uuid::Uuid;

use super::model::{CheckoutRequest, Saga, SagaStatus};
use super::policy::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Reply {
        step: Step,
        attempt: u32,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `command` as attempt `attempt` of its step. `retry` counts the
    /// earlier failed tries, so the shell can wait the backoff first.
    Send {
        command: Command,
        attempt: u32,
        retry: u32,
    },
}

/// One line of the saga's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub step: Option<Step>,
    pub attempt: u32,
    pub event: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub effects: Vec<Effect>,
    pub history: Vec<HistoryEntry>,
}

const FORWARD: [Step; 3] = [Step::Reserve, Step::CalculateTax, Step::Charge];

/// The compensation that undoes a forward step, if any.
pub fn compensation_of(step: Step) -> Option<Step> {
    match step {
        Step::Reserve => Some(Step::Release),
        Step::Charge => Some(Step::Refund),
        _ => None,
    }
}

pub fn start(id: Uuid, request: CheckoutRequest) -> Transition {
    let saga = Saga {
        id,
        status: SagaStatus::Running,
        request,
        current: None,
        attempt: 0,
        completed: Vec::new(),
        compensations: Vec::new(),
        reserved: None,
        tax: None,
        charge: None,
        reason: None,
        detail: None,
        last_error: None,
    };
    let mut t = Transition {
        saga,
        effects: Vec::new(),
        history: vec![HistoryEntry {
            step: None,
            attempt: 0,
            event: "started".into(),
            detail: None,
        }],
    };
    begin(&mut t, Step::Reserve);
    t
}

pub fn handle(saga: &Saga, event: Event, policy: &RetryPolicy) -> Transition {
    let mut t = Transition {
        saga: saga.clone(),
        effects: Vec::new(),
        history: Vec::new(),
    };
    let Event::Reply {
        step,
        attempt,
        outcome,
    } = event;
    let awaited = matches!(saga.status, SagaStatus::Running | SagaStatus::Compensating)
        && saga.current == Some(step)
        && saga.attempt == attempt;
    if !awaited {
        // A duplicate or an answer to an attempt that is no longer current:
        // keep it in the timeline, change nothing else.
        t.history.push(HistoryEntry {
            step: Some(step),
            attempt,
            event: format!("late_{}", outcome.label()),
            detail: Some(describe(&outcome)),
        });
        return t;
    }
    t.history.push(HistoryEntry {
        step: Some(step),
        attempt,
        event: outcome.label().into(),
        detail: match &outcome {
            Outcome::Ok(_) => None,
            other => Some(describe(other)),
        },
    });
    match outcome {
        Outcome::Ok(result) if result.step() == step => succeeded(&mut t, result),
        Outcome::Ok(_) => {
            // Contract violation: park rather than guess.
            suspend(
                &mut t,
                format!("reply to {step} carried another step's result"),
            );
        }
        Outcome::Rejected { reason, detail } => rejected(&mut t, step, reason, detail),
        Outcome::Transient { error } => retry_or_suspend(&mut t, policy, error),
    }
    t
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(_) => "ok".into(),
        Outcome::Rejected { reason, detail } => format!("{reason}: {detail}"),
        Outcome::Transient { error } => error.clone(),
    }
}

fn succeeded(t: &mut Transition, result: StepResult) {
    let saga = &mut t.saga;
    let step = result.step();
    match result {
        StepResult::Reserved(r) => saga.reserved = Some(r),
        StepResult::TaxCalculated(r) => saga.tax = Some(r),
        StepResult::Charged(r) => saga.charge = Some(r),
        StepResult::Released(_) | StepResult::Refunded(_) => {}
    }
    if saga.status == SagaStatus::Compensating {
        saga.compensations.remove(0);
        next_compensation(t);
        return;
    }
    saga.completed.push(step);
    match FORWARD
        .iter()
        .position(|s| *s == step)
        .and_then(|i| FORWARD.get(i + 1))
    {
        Some(next) => begin(t, *next),
        None => finish(t, SagaStatus::Completed),
    }
}

fn rejected(t: &mut Transition, step: Step, reason: String, detail: String) {
    if t.saga.status == SagaStatus::Compensating {
        // Compensations never refuse; one that does needs a person.
        suspend(t, format!("{step} refused: {reason}: {detail}"));
        return;
    }
    t.saga.reason = Some(reason);
    t.saga.detail = Some(detail);
    t.saga.status = SagaStatus::Compensating;
    t.saga.compensations = t
        .saga
        .completed
        .iter()
        .rev()
        .filter_map(|s| compensation_of(*s))
        .collect();
    next_compensation(t);
}

fn next_compensation(t: &mut Transition) {
    match t.saga.compensations.first() {
        Some(step) => {
            let step = *step;
            begin(t, step);
        }
        None => finish(t, SagaStatus::Compensated),
    }
}

fn retry_or_suspend(t: &mut Transition, policy: &RetryPolicy, error: String) {
    t.saga.last_error = Some(error.clone());
    if t.saga.attempt >= policy.max_attempts {
        suspend(
            t,
            format!("attempts exhausted ({}): {error}", t.saga.attempt),
        );
        return;
    }
    let step = t.saga.current.expect("an awaited reply has a current step");
    t.saga.attempt += 1;
    let command = command_for(&t.saga, step);
    t.effects.push(Effect::Send {
        command,
        attempt: t.saga.attempt,
        retry: t.saga.attempt - 1,
    });
}

fn suspend(t: &mut Transition, error: String) {
    t.saga.last_error = Some(error.clone());
    t.saga.status = SagaStatus::Suspended;
    t.history.push(HistoryEntry {
        step: t.saga.current,
        attempt: t.saga.attempt,
        event: "suspended".into(),
        detail: Some(error),
    });
}

fn begin(t: &mut Transition, step: Step) {
    t.saga.current = Some(step);
    t.saga.attempt = 1;
    let command = command_for(&t.saga, step);
    t.effects.push(Effect::Send {
        command,
        attempt: 1,
        retry: 0,
    });
}

fn finish(t: &mut Transition, status: SagaStatus) {
    t.saga.status = status;
    t.saga.current = None;
    t.saga.attempt = 0;
    t.history.push(HistoryEntry {
        step: None,
        attempt: 0,
        event: status.as_str().into(),
        detail: t.saga.reason.clone(),
    });
}

/// The command for `step`, built from what earlier steps returned.
fn command_for(saga: &Saga, step: Step) -> Command {
    let request = &saga.request;
    match step {
        Step::Reserve => Command::Reserve(ReserveStock {
            lines: request.items.clone(),
        }),
        Step::CalculateTax => {
            let reserved = saga
                .reserved
                .as_ref()
                .expect("tax runs after a reservation");
            Command::CalculateTax(CalculateTax {
                ship_to: request.ship_to.clone(),
                currency: reserved.currency.clone(),
                lines: reserved.lines.clone(),
            })
        }
        Step::Charge => Command::Charge(ChargePayment {
            amount_cents: saga
                .total_cents()
                .expect("charge runs after reserve and tax"),
            currency: saga.currency().unwrap_or_default().to_owned(),
            payment_method: request.payment_method.clone(),
            customer_id: request.customer_id.clone(),
        }),
        Step::Release => Command::Release(ReleaseStock {}),
        Step::Refund => Command::Refund(RefundPayment {}),
    }
}

#[cfg(test)]
mod tests;
