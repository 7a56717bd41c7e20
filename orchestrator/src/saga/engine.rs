//! The saga engine: `(saga, event) -> (saga', effects)`, pure.
//!
//! Forward steps run in order: reserve stock, calculate tax, charge. A
//! rejection compensates the completed steps in reverse order (refund, then
//! release; tax has nothing to undo). A transient reply retries the same
//! action after a backoff; an action that exhausts its attempts parks the
//! saga as `suspended` with its last error.

use std::time::Duration;

use saga_protocol::messages::{
    reason, CalculateTax, ChargePayment, Command, Outcome, RefundPayment, ReleaseStock,
    ReserveStock, StepResult,
};
use saga_protocol::Step;
use uuid::Uuid;

use super::expectations::{self, Mismatch};
use super::model::{CheckoutRequest, Saga, SagaStatus};
use super::policy::{OnExhausted, StepPolicies};

/// What happened to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker answered attempt `attempt` of `step`.
    Reply {
        step: Step,
        attempt: u32,
        outcome: Outcome,
    },
    /// Attempt `attempt` of `step` went unanswered past its deadline: the
    /// outcome is unknown.
    DeadlineMissed { step: Step, attempt: u32 },
    /// The broker kept refusing the command of attempt `attempt` of `step`
    /// (nacked, returned unroutable, never confirmed) for longer than the
    /// step's policy allows: it was never delivered, so nobody will answer.
    PublishFailed {
        step: Step,
        attempt: u32,
        /// The last refusal.
        error: String,
        /// Refused publishes so far.
        tries: u32,
        /// Since the first refusal.
        refused_for: Duration,
    },
}

/// What support staff may do to a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Re-run the parked action as a new series of attempts.
    Retry,
    /// Compensate everything done so far, then end `cancelled`.
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
        }
    }

    /// Whether `saga` is in a state this action applies to.
    pub fn allowed(self, saga: &Saga) -> bool {
        match self {
            Action::Retry => saga.status == SagaStatus::Suspended && saga.current.is_some(),
            // Cancel while compensating would turn a rejection into a
            // cancellation; a retry finishes that compensation instead.
            Action::Cancel => matches!(
                (saga.status, saga.suspended_from),
                (SagaStatus::Running, _) | (SagaStatus::Suspended, Some(SagaStatus::Running))
            ),
        }
    }
}

/// A support action asked of a saga in a state it does not apply to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a saga that is {status}: {hint}")]
pub struct WrongState {
    pub action: &'static str,
    pub status: &'static str,
    pub hint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `command` as attempt `attempt` of its step, once `delay` has
    /// passed; the reply is due `deadline` after that.
    Send {
        command: Command,
        attempt: u32,
        delay: Duration,
        deadline: Duration,
    },
}

/// One line of the saga's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub step: Option<Step>,
    pub attempt: u32,
    pub event: String,
    pub detail: Option<String>,
    /// Who acted, for support actions (the token's name).
    pub actor: Option<String>,
    /// Why, for support actions.
    pub reason: Option<String>,
}

impl HistoryEntry {
    fn new(step: Option<Step>, attempt: u32, event: impl Into<String>) -> Self {
        HistoryEntry {
            step,
            attempt,
            event: event.into(),
            detail: None,
            actor: None,
            reason: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// When the saga's awaited reply is due, after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// A new attempt was sent: due this long from now.
    In(Duration),
    /// Still awaiting the same attempt.
    Unchanged,
    /// Awaiting nothing (parked or final).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub effects: Vec<Effect>,
    pub history: Vec<HistoryEntry>,
    /// The awaited reply did not match what the saga expects, so it was
    /// not applied and the saga parked: the shell counts it and alerts.
    pub mismatch: Option<Mismatch>,
}

impl Transition {
    fn of(saga: &Saga) -> Self {
        Transition {
            saga: saga.clone(),
            effects: Vec::new(),
            history: Vec::new(),
            mismatch: None,
        }
    }

    pub fn deadline(&self) -> Deadline {
        if let Some(Effect::Send {
            delay, deadline, ..
        }) = self.effects.last()
        {
            Deadline::In(*delay + *deadline)
        } else if matches!(
            self.saga.status,
            SagaStatus::Running | SagaStatus::Compensating
        ) {
            Deadline::Unchanged
        } else {
            Deadline::None
        }
    }
}

/// The inputs every transition reads besides the saga and the event.
/// `jitter` is a uniform sample in `[0, 1)` for the backoff, supplied by the
/// caller so the engine stays deterministic.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub policies: &'a StepPolicies,
    pub jitter: f64,
}

const FORWARD: [Step; 3] = [Step::Reserve, Step::CalculateTax, Step::Charge];

/// Why a client's checkout was refused when a forward step could not be
/// completed at all and its policy compensates instead of parking.
pub const UNAVAILABLE: &str = "unavailable";

/// The compensation that undoes a forward step, if any.
pub fn compensation_of(step: Step) -> Option<Step> {
    match step {
        Step::Reserve => Some(Step::Release),
        Step::Charge => Some(Step::Refund),
        _ => None,
    }
}

pub fn start(id: Uuid, request: CheckoutRequest, ctx: Context) -> Transition {
    let saga = Saga {
        id,
        status: SagaStatus::Running,
        request,
        current: None,
        attempt: 0,
        series_start: 1,
        suspended_from: None,
        cancelled: false,
        completed: Vec::new(),
        compensations: Vec::new(),
        reserved: None,
        tax: None,
        charge: None,
        reason: None,
        detail: None,
        last_error: None,
    };
    let mut t = Transition::of(&saga);
    t.history.push(HistoryEntry::new(None, 0, "started"));
    begin(&mut t, Step::Reserve, ctx);
    t
}

pub fn handle(saga: &Saga, event: Event, ctx: Context) -> Transition {
    let mut t = Transition::of(saga);
    let (step, attempt) = match &event {
        Event::Reply { step, attempt, .. }
        | Event::DeadlineMissed { step, attempt }
        | Event::PublishFailed { step, attempt, .. } => (*step, *attempt),
    };
    let awaited = matches!(saga.status, SagaStatus::Running | SagaStatus::Compensating)
        && saga.current == Some(step)
        && saga.attempt == attempt;
    let outcome = match event {
        Event::Reply { outcome, .. } => outcome,
        // A deadline for an attempt no longer awaited has nothing to say.
        Event::DeadlineMissed { .. } if !awaited => return t,
        Event::DeadlineMissed { .. } => {
            let waited = ctx.policies.for_step(step).deadline.as_millis();
            let error = format!("no reply within {waited} ms; outcome unknown");
            t.history
                .push(HistoryEntry::new(Some(step), attempt, "deadline_missed").detail(&error));
            retry_or_exhaust(&mut t, ctx, error);
            return t;
        }
        // A stale command (the saga moved on without it) parks nothing.
        Event::PublishFailed { .. } if !awaited => return t,
        Event::PublishFailed {
            error,
            tries,
            refused_for,
            ..
        } => {
            t.history.push(
                HistoryEntry::new(Some(step), attempt, "publish_failed").detail(format!(
                    "refused {tries} times over {} ms: {error}",
                    refused_for.as_millis()
                )),
            );
            // Parked whatever the step's `on_exhausted`: the broker, not
            // the step, is failing, and compensating would publish into the
            // same broker; a person fixes it and retries.
            suspend(&mut t, format!("cannot publish: {error}"));
            return t;
        }
    };
    if !awaited {
        // A duplicate or an answer to an attempt that is no longer current:
        // keep it in the timeline, change nothing else.
        t.history.push(
            HistoryEntry::new(Some(step), attempt, format!("late_{}", outcome.label()))
                .detail(describe(&outcome)),
        );
        return t;
    }
    let mismatch = match &outcome {
        Outcome::Ok(result) if result.step() == step => expectations::mismatch(saga, result),
        _ => None,
    };
    let mut entry = HistoryEntry::new(Some(step), attempt, outcome.label());
    if let Some(mismatch) = &mismatch {
        entry = HistoryEntry::new(Some(step), attempt, "mismatched").detail(mismatch.to_string());
    } else if !matches!(outcome, Outcome::Ok(_)) {
        entry = entry.detail(describe(&outcome));
    }
    t.history.push(entry);
    if let Some(mismatch) = mismatch {
        // Never applied: whoever sent it, the saga's state stays as it was
        // and a person decides (a retry asks the worker again).
        suspend(&mut t, mismatch.to_string());
        t.mismatch = Some(mismatch);
        return t;
    }
    match outcome {
        Outcome::Ok(result) if result.step() == step => succeeded(&mut t, result, ctx),
        Outcome::Ok(_) => {
            // Contract violation: park rather than guess.
            suspend(
                &mut t,
                format!("reply to {step} carried another step's result"),
            );
        }
        Outcome::Rejected { reason, detail } => rejected(&mut t, step, reason, detail, ctx),
        Outcome::Transient { error } => retry_or_exhaust(&mut t, ctx, error),
    }
    t
}

/// A support action, by `actor`, for `reason`.
pub fn act(
    saga: &Saga,
    action: Action,
    actor: &str,
    reason: &str,
    ctx: Context,
) -> Result<Transition, WrongState> {
    if !action.allowed(saga) {
        return Err(WrongState {
            action: action.as_str(),
            status: saga.status.as_str(),
            hint: match (action, saga.status) {
                (Action::Retry, _) => "only a suspended saga can be retried",
                (Action::Cancel, SagaStatus::Compensating | SagaStatus::Suspended) => {
                    "it is already compensating; retry finishes the compensation"
                }
                (Action::Cancel, _) => "only a running or suspended saga can be cancelled",
            },
        });
    }
    let mut t = Transition::of(saga);
    let mut entry = HistoryEntry::new(saga.current, saga.attempt, action.as_str());
    entry.actor = Some(actor.to_owned());
    entry.reason = Some(reason.to_owned());
    t.history.push(entry);
    apply(&mut t, action, ctx);
    Ok(t)
}

/// Ends a park that outlived its time limit (`PARKED_SAGA_TTL`, `ttl` as
/// configured, plus what support added): a saga parked going forward is
/// cancelled with compensation, as support's cancel does; one parked
/// compensating has its compensation retried, which is the only way on.
/// `None` for a saga that is not parked.
pub fn expire_park(saga: &Saga, ttl: &str, ctx: Context) -> Option<Transition> {
    if saga.status != SagaStatus::Suspended {
        return None;
    }
    let (action, what) = if Action::Cancel.allowed(saga) {
        (Action::Cancel, "cancelling with compensation")
    } else if Action::Retry.allowed(saga) {
        (Action::Retry, "retrying its compensation")
    } else {
        return None;
    };
    let mut t = Transition::of(saga);
    t.history.push(
        HistoryEntry::new(saga.current, saga.attempt, "park_expired").detail(format!(
            "parked longer than PARKED_SAGA_TTL ({ttl}); {what}"
        )),
    );
    apply(&mut t, action, ctx);
    Some(t)
}

/// What `action` does to the saga of `t`, which it is allowed on.
fn apply(t: &mut Transition, action: Action, ctx: Context) {
    match action {
        Action::Retry => {
            let step = t.saga.current.expect("allowed() checked a parked step");
            t.saga.status = t.saga.suspended_from.unwrap_or(SagaStatus::Running);
            t.saga.suspended_from = None;
            t.saga.attempt += 1;
            t.saga.series_start = t.saga.attempt;
            send(t, step, 0, ctx);
        }
        Action::Cancel => {
            t.saga.cancelled = true;
            compensate(t, true, ctx);
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(_) => "ok".into(),
        Outcome::Rejected { reason, detail } => format!("{reason}: {detail}"),
        Outcome::Transient { error } => error.clone(),
    }
}

fn succeeded(t: &mut Transition, result: StepResult, ctx: Context) {
    let saga = &mut t.saga;
    let step = result.step();
    // The timeline keeps the errors; the saga's error is about now.
    saga.last_error = None;
    match result {
        StepResult::Reserved(r) => saga.reserved = Some(r),
        StepResult::TaxCalculated(r) => saga.tax = Some(r),
        StepResult::Charged(r) => saga.charge = Some(r),
        StepResult::Released(_) | StepResult::Refunded(_) => {}
    }
    if saga.status == SagaStatus::Compensating {
        saga.compensations.remove(0);
        next_compensation(t, ctx);
        return;
    }
    saga.completed.push(step);
    if let Some(detail) = uncomputable_amount(saga, step) {
        // The step succeeded, so it is compensated like any completed one.
        rejected(t, step, reason::INVALID_AMOUNT.to_owned(), detail, ctx);
        return;
    }
    match FORWARD
        .iter()
        .position(|s| *s == step)
        .and_then(|i| FORWARD.get(i + 1))
    {
        Some(next) => begin(t, *next, ctx),
        None => finish(t, SagaStatus::Completed),
    }
}

/// Why the money of a checkout cannot be computed once `step` completed:
/// the subtotal (after the reservation) or the total (after tax) does not
/// fit in an `i64` of cents. Wrapping or panicking are not answers.
fn uncomputable_amount(saga: &Saga, step: Step) -> Option<String> {
    match step {
        Step::Reserve if saga.subtotal_cents().is_none() => {
            Some("the subtotal overflows a 64-bit count of cents".to_owned())
        }
        Step::CalculateTax if saga.total_cents().is_none() => {
            Some("subtotal + tax overflows a 64-bit count of cents".to_owned())
        }
        _ => None,
    }
}

fn rejected(t: &mut Transition, step: Step, reason: String, detail: String, ctx: Context) {
    if t.saga.status == SagaStatus::Compensating {
        // Compensations never refuse; one that does needs a person.
        suspend(t, format!("{step} refused: {reason}: {detail}"));
        return;
    }
    t.saga.reason = Some(reason);
    t.saga.detail = Some(detail);
    // A refusal is a definite answer: the refused step did nothing.
    compensate(t, false, ctx);
}

/// Turns the saga around: undo the completed forward steps in reverse
/// order, and first the current step too when its outcome may be unknown.
fn compensate(t: &mut Transition, include_current: bool, ctx: Context) {
    let saga = &mut t.saga;
    let current = saga.current.filter(|_| include_current);
    saga.status = SagaStatus::Compensating;
    saga.suspended_from = None;
    saga.compensations = current
        .into_iter()
        .chain(saga.completed.iter().rev().copied())
        .filter_map(compensation_of)
        .collect();
    next_compensation(t, ctx);
}

fn next_compensation(t: &mut Transition, ctx: Context) {
    match t.saga.compensations.first() {
        Some(step) => {
            let step = *step;
            begin(t, step, ctx);
        }
        None if t.saga.cancelled => finish(t, SagaStatus::Cancelled),
        None => finish(t, SagaStatus::Compensated),
    }
}

fn retry_or_exhaust(t: &mut Transition, ctx: Context, error: String) {
    let step = t.saga.current.expect("an awaited event has a current step");
    let policy = ctx.policies.for_step(step);
    let tries = t.saga.attempts_in_series();
    t.saga.last_error = Some(error.clone());
    if tries < policy.max_attempts {
        t.saga.attempt += 1;
        send(t, step, tries, ctx);
        return;
    }
    let forward = t.saga.status == SagaStatus::Running;
    if forward && policy.on_exhausted == OnExhausted::Compensate {
        t.saga.reason = Some(UNAVAILABLE.to_owned());
        t.saga.detail = Some(format!("{step} failed after {tries} attempts: {error}"));
        t.history.push(
            HistoryEntry::new(Some(step), t.saga.attempt, "exhausted")
                .detail(format!("after {tries} attempts; compensating")),
        );
        compensate(t, true, ctx);
        return;
    }
    suspend_after(t, tries, error);
}

fn suspend_after(t: &mut Transition, tries: u32, error: String) {
    t.saga.last_error = Some(error);
    park(t, format!("after {tries} attempts"));
}

fn suspend(t: &mut Transition, error: String) {
    t.saga.last_error = Some(error.clone());
    park(t, error);
}

fn park(t: &mut Transition, detail: String) {
    t.saga.suspended_from = Some(t.saga.status);
    t.saga.status = SagaStatus::Suspended;
    t.history
        .push(HistoryEntry::new(t.saga.current, t.saga.attempt, "suspended").detail(detail));
}

fn begin(t: &mut Transition, step: Step, ctx: Context) {
    t.saga.current = Some(step);
    t.saga.attempt = 1;
    t.saga.series_start = 1;
    send(t, step, 0, ctx);
}

/// Emits the current attempt of `step`; `retry` counts the failed tries
/// before it in this series, which sets the backoff.
fn send(t: &mut Transition, step: Step, retry: u32, ctx: Context) {
    let policy = ctx.policies.for_step(step);
    let delay = if retry == 0 {
        Duration::ZERO
    } else {
        policy.delay(retry, ctx.jitter)
    };
    let detail = if delay.is_zero() {
        format!("deadline {} ms", policy.deadline.as_millis())
    } else {
        format!(
            "after a backoff of {} ms; deadline {} ms",
            delay.as_millis(),
            policy.deadline.as_millis()
        )
    };
    t.history
        .push(HistoryEntry::new(Some(step), t.saga.attempt, "sent").detail(detail));
    t.effects.push(Effect::Send {
        command: command_for(&t.saga, step),
        attempt: t.saga.attempt,
        delay,
        deadline: policy.deadline,
    });
}

fn finish(t: &mut Transition, status: SagaStatus) {
    t.saga.status = status;
    t.saga.current = None;
    t.saga.attempt = 0;
    t.saga.suspended_from = None;
    let mut entry = HistoryEntry::new(None, 0, status.as_str());
    entry.detail = t.saga.reason.clone();
    t.history.push(entry);
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
            currency: saga.currency().cloned().expect("charge runs after reserve"),
            payment_method: request.payment_method.clone(),
            customer_id: request.customer_id.clone(),
        }),
        Step::Release => Command::Release(ReleaseStock {}),
        Step::Refund => Command::Refund(RefundPayment {}),
    }
}

#[cfg(test)]
mod tests;
