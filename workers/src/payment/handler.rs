//! Charges and refunds, keyed by saga id, against a provider that is a
//! separate party. Each operation is an intent committed first (`charging`,
//! `refunding`), a provider call with the operation's idempotency key made
//! with no transaction open, and the outcome recorded in a second
//! transaction. A command that finds an intent without an outcome (its
//! worker died mid-call, or another attempt is at the provider) asks the
//! provider by key and never charges under a new one, so money moves once
//! per saga whatever crashes.

use std::sync::Arc;

use saga_protocol::messages::{
    reason, ChargePayment, Charged, Command, Outcome, Refunded, StepResult,
};
use saga_protocol::values::{Cents, Currency};
use saga_protocol::{Envelope, WorkerKind};
use sqlx::PgConnection;
use uuid::Uuid;

#[cfg(feature = "failpoints")]
use super::config::Failpoint;
use super::config::PaymentConfig;
use super::outage::{self, OUTAGE_ERROR};
use super::provider::{
    ChargeRequest, IdempotencyKey, Lookup, PaymentProvider, ProviderAnswer, RefundRequest,
};
use super::rules::{self, ChargeVerdict, RefundVerdict};
use super::simulator::Simulator;
use super::store::{self, ApprovedCharge, ChargeSettled, IntentWhen, PaymentRow, Status};
use crate::inbox;
use crate::runtime::{not_handled, AtOnce, Decision, ExternalCall, Handler, Settlement};

#[derive(Debug, Clone)]
pub struct Payment<P = Simulator> {
    provider: Arc<P>,
    config: PaymentConfig,
}

impl<P: PaymentProvider> Payment<P> {
    pub fn new(provider: P) -> Self {
        Self::with_config(provider, PaymentConfig::default())
    }

    pub fn with_config(provider: P, config: PaymentConfig) -> Self {
        Payment {
            provider: Arc::new(provider),
            config,
        }
    }
}

impl<P: PaymentProvider> Handler for Payment<P> {
    const KIND: WorkerKind = WorkerKind::Payment;

    /// The one-phase path cannot call the provider (it would do so inside
    /// the caller's transaction), so a command that needs the provider is
    /// transient here; the runtime uses [`Handler::decide`].
    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        Ok(match self.decide(conn, command).await? {
            Decision::Answer(outcome) => outcome,
            Decision::Call(_) => Outcome::Transient {
                error: "the payment worker calls its provider between two transactions".into(),
            },
        })
    }

    /// A first charge: claim and intent in one statement, then (after the
    /// call) the outcome and the reply in one more.
    async fn at_once(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Option<AtOnce>, sqlx::Error> {
        let Command::Charge(request) = &command.payload else {
            return Ok(None);
        };
        if self.refusal(request).is_some()
            || !store::claim_with_first_charge_intent(conn, command, request).await?
        {
            return Ok(None);
        }
        Ok(Some(AtOnce::Call(self.charge_call(
            command.saga_id,
            request,
            true,
            0,
        ))))
    }

    async fn decide(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Decision, sqlx::Error> {
        match &command.payload {
            Command::Charge(request) => self.charge(conn, command.saga_id, request).await,
            Command::Refund(_) => self.refund(conn, command.saga_id).await,
            other => Ok(Decision::Answer(not_handled(Self::KIND, other))),
        }
    }
}

fn reference_of(saga_id: Uuid, row: &PaymentRow) -> Result<Uuid, sqlx::Error> {
    row.provider_reference.ok_or_else(|| {
        sqlx::Error::Decode(
            format!("charged payment of saga {saga_id} has no provider reference").into(),
        )
    })
}

fn refunded(refunded_cents: Cents) -> Outcome {
    Outcome::Ok(StepResult::Refunded(Refunded { refunded_cents }))
}

fn outage_transient() -> Decision {
    Decision::Answer(Outcome::Transient {
        error: OUTAGE_ERROR.to_owned(),
    })
}

fn already_compensated(saga_id: Uuid) -> Outcome {
    Outcome::rejected(
        reason::ALREADY_COMPENSATED,
        format!("the payment of saga {saga_id} was already refunded; nothing is charged"),
    )
}

/// Whether a charge reply carries its currency. Not yet: a v0.2.0
/// orchestrator, still one a deployment may roll from, dead-letters a result
/// with a field it does not know (scripts/upgrade-test found it). The
/// orchestrator checks the currency when a reply has one; until then the
/// command's currency is the only one a worker charges in.
const CHARGE_REPLY_CURRENCY: bool = false;

fn reply_currency(currency: Option<Currency>) -> Option<Currency> {
    currency.filter(|_| CHARGE_REPLY_CURRENCY)
}

/// What a settled or refused payment answers to another charge.
fn charge_answer(saga_id: Uuid, status: Status, row: PaymentRow) -> Result<Outcome, sqlx::Error> {
    Ok(match status {
        Status::Charged => Outcome::Ok(StepResult::Charged(Charged {
            payment_id: reference_of(saga_id, &row)?,
            amount_cents: row.amount_cents,
            currency: reply_currency(row.currency),
        })),
        Status::Declined => Outcome::Rejected {
            reason: row
                .rejection_reason
                .unwrap_or_else(|| reason::PAYMENT_DECLINED.to_owned()),
            detail: row.rejection_detail.unwrap_or_default(),
        },
        Status::Refunding | Status::Refunded => already_compensated(saga_id),
        Status::Charging => {
            return Err(sqlx::Error::Protocol(format!(
                "the payment of saga {saga_id} has no outcome yet"
            )))
        }
    })
}

impl<P: PaymentProvider> Payment<P> {
    /// Why `request` can never be charged, whatever the provider would say.
    fn refusal(&self, request: &ChargePayment) -> Option<Outcome> {
        if let Some(why) = rules::invalid_amount(request.amount_cents, self.config.max_amount_cents)
        {
            return Some(Outcome::rejected(reason::INVALID_AMOUNT, why));
        }
        rules::simulator_refused(&request.payment_method, self.config.simulator())
            .map(|why| Outcome::rejected(reason::INVALID_PAYMENT_METHOD, why))
    }

    /// Charges once per saga; a repeat answers what the first one did.
    #[tracing::instrument(skip_all, fields(%saga_id, amount_cents = request.amount_cents.get()))]
    async fn charge(
        &self,
        conn: &mut PgConnection,
        saga_id: Uuid,
        request: &ChargePayment,
    ) -> Result<Decision, sqlx::Error> {
        // Refused before anything is written: the same command always gets
        // the same answer, and no intent means nothing to reconcile.
        if let Some(refusal) = self.refusal(request) {
            return Ok(Decision::Answer(refusal));
        }
        // The common case, a first charge with the switch off, in one
        // statement; anything else is sorted out below as before.
        if store::write_charge_intent(conn, IntentWhen::NoRowAndNoOutage, saga_id, request).await? {
            return Ok(Decision::Call(self.charge_call(saga_id, request, true, 0)));
        }
        let existing = store::lock(conn, saga_id).await?;
        let transient_failures = match existing {
            Some((Status::Charging, ref row)) => row.transient_failures,
            Some((status, row)) => {
                return charge_answer(saga_id, status, row).map(Decision::Answer)
            }
            None => 0,
        };
        if outage::is_on(conn).await? {
            return Ok(outage_transient());
        }
        let fresh = store::write_charge_intent(conn, IntentWhen::NoRow, saga_id, request).await?;
        if !fresh {
            // Another attempt wrote first; a refund's tombstone among them
            // must stop this charge before it reaches the provider.
            let (status, row) = store::locked(conn, saga_id).await?;
            if status != Status::Charging {
                return charge_answer(saga_id, status, row).map(Decision::Answer);
            }
        }
        Ok(Decision::Call(self.charge_call(
            saga_id,
            request,
            fresh,
            transient_failures,
        )))
    }

    /// The provider call of a charge whose intent is committed: `fresh`
    /// when this attempt wrote the intent (so nothing reached the provider
    /// under its key yet).
    fn charge_call(
        &self,
        saga_id: Uuid,
        request: &ChargePayment,
        fresh: bool,
        transient_failures: i32,
    ) -> ExternalCall {
        let charge = ChargeRequest {
            key: IdempotencyKey::charge(saga_id),
            saga_id,
            amount_cents: request.amount_cents,
            currency: request.currency.clone(),
            payment_method: request.payment_method.clone(),
            customer_id: request.customer_id.clone(),
            transient_failures: transient_failures.unsigned_abs(),
        };
        let provider = self.provider.clone();
        #[cfg(feature = "failpoints")]
        let failpoint = self.config.failpoint;
        ExternalCall::new(async move {
            // An intent found (not written) may have reached the provider:
            // what the provider says under the key is the truth.
            let answer = if fresh {
                provider.charge(&charge).await
            } else {
                match provider.lookup(&charge.key).await {
                    Lookup::Found(answer) => answer,
                    Lookup::Unknown => provider.charge(&charge).await,
                    Lookup::Transient { error } => ProviderAnswer::Transient { error },
                }
            };
            #[cfg(feature = "failpoints")]
            if failpoint == Some(Failpoint::AfterProviderCharge)
                && matches!(answer, ProviderAnswer::Approved { .. })
            {
                tracing::error!(key = %charge.key, "PAYMENT_FAILPOINT after_provider_charge: aborting");
                std::process::abort();
            }
            let (at_once_charge, at_once_answer) = (charge.clone(), answer.clone());
            Settlement::new(move |conn| Box::pin(settle_charge(conn, charge, answer)))
                .with_one_statement(move |conn, command| {
                    Box::pin(settle_charge_with_reply(
                        conn,
                        command,
                        at_once_charge,
                        at_once_answer,
                    ))
                })
        })
    }

    /// Refunds what the saga was charged; a no-op when nothing was. A refund
    /// before any charge leaves a `refunded` row so that a late charge does
    /// nothing; a refund while a charge may be at the provider cancels or
    /// refunds it there, by the charge's key.
    #[tracing::instrument(skip_all, fields(%saga_id))]
    async fn refund(
        &self,
        conn: &mut PgConnection,
        saga_id: Uuid,
    ) -> Result<Decision, sqlx::Error> {
        if store::write_refund_tombstone(conn, saga_id).await? {
            return Ok(Decision::Answer(refunded(Cents::ZERO)));
        }
        let (status, row) = store::locked(conn, saga_id).await?;
        match status {
            // A repeat answers what the first refund did.
            Status::Refunded => return Ok(Decision::Answer(refunded(row.refunded_cents))),
            // The provider gave its final no under the charge key.
            Status::Declined => return Ok(Decision::Answer(refunded(Cents::ZERO))),
            Status::Charged | Status::Charging | Status::Refunding => {}
        }
        if outage::is_on(conn).await? {
            return Ok(outage_transient());
        }
        let resumed = status == Status::Refunding;
        if !resumed {
            store::mark_refunding(conn, saga_id).await?;
        }
        let refund = RefundRequest {
            key: IdempotencyKey::refund(saga_id),
            charge_key: IdempotencyKey::charge(saga_id),
            saga_id,
            payment_method: row.payment_method.unwrap_or_default(),
        };
        let provider = self.provider.clone();
        #[cfg(feature = "failpoints")]
        let failpoint = self.config.failpoint;
        Ok(Decision::Call(ExternalCall::new(async move {
            let answer = if resumed {
                match provider.lookup(&refund.key).await {
                    Lookup::Found(answer) => answer,
                    Lookup::Unknown => provider.refund(&refund).await,
                    Lookup::Transient { error } => ProviderAnswer::Transient { error },
                }
            } else {
                provider.refund(&refund).await
            };
            #[cfg(feature = "failpoints")]
            if failpoint == Some(Failpoint::AfterProviderRefund)
                && matches!(answer, ProviderAnswer::Approved { .. })
            {
                tracing::error!(key = %refund.key, "PAYMENT_FAILPOINT after_provider_refund: aborting");
                std::process::abort();
            }
            Settlement::new(move |conn| Box::pin(settle_refund(conn, saga_id, answer)))
        })))
    }
}

/// Records what the provider answered a charge, unless the payment moved
/// on meanwhile (another attempt settled it, or a refund cancelled it).
#[tracing::instrument(skip_all, fields(saga_id = %charge.saga_id))]
async fn settle_charge(
    conn: &mut PgConnection,
    charge: ChargeRequest,
    answer: ProviderAnswer,
) -> Result<Outcome, sqlx::Error> {
    let saga_id = charge.saga_id;
    // Each write applies only to a payment still `charging`; one that
    // moved on meanwhile is answered from its row, read after.
    let settled = match rules::charge_verdict(answer) {
        ChargeVerdict::Charged {
            reference,
            amount_cents,
        } => {
            let approved = ApprovedCharge {
                saga_id,
                reference,
                amount_cents,
                currency: &charge.currency,
                payment_method: &charge.payment_method,
                customer_id: &charge.customer_id,
            };
            store::record_charged(conn, &approved)
                .await?
                .then_some(Outcome::Ok(StepResult::Charged(Charged {
                    payment_id: reference,
                    amount_cents,
                    currency: reply_currency(Some(charge.currency.clone())),
                })))
        }
        ChargeVerdict::Declined { reason, detail } => {
            store::record_declined(conn, saga_id, reason, &detail)
                .await?
                .then(|| Outcome::rejected(reason, detail))
        }
        ChargeVerdict::Open {
            error,
            provider_failed: true,
        } => store::count_provider_failure(conn, saga_id)
            .await?
            .then_some(Outcome::Transient { error }),
        ChargeVerdict::Open {
            error,
            provider_failed: false,
        } => {
            // Nothing to write: whether it is still open is read.
            let (status, row) = store::locked(conn, saga_id).await?;
            if status != Status::Charging {
                return charge_answer(saga_id, status, row);
            }
            Some(Outcome::Transient { error })
        }
    };
    match settled {
        Some(outcome) => Ok(outcome),
        None => {
            let (status, row) = store::locked(conn, saga_id).await?;
            charge_answer(saga_id, status, row)
        }
    }
}

/// The common settlements of a charge (approved, declined, a provider
/// failure counted), each with its reply in one statement; `None` when
/// that does not apply and nothing was written (the payment moved on, the
/// command was answered meanwhile, or the answer needs the row read): the
/// general settlement then runs.
async fn settle_charge_with_reply(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
    charge: ChargeRequest,
    answer: ProviderAnswer,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let verdict = rules::charge_verdict(answer);
    let (settled, outcome) = match verdict {
        ChargeVerdict::Charged {
            reference,
            amount_cents,
        } => (
            ChargeSettled::Charged(ApprovedCharge {
                saga_id: charge.saga_id,
                reference,
                amount_cents,
                currency: &charge.currency,
                payment_method: &charge.payment_method,
                customer_id: &charge.customer_id,
            }),
            Outcome::Ok(StepResult::Charged(Charged {
                payment_id: reference,
                amount_cents,
                currency: reply_currency(Some(charge.currency.clone())),
            })),
        ),
        ChargeVerdict::Declined { reason, ref detail } => (
            ChargeSettled::Declined { reason, detail },
            Outcome::rejected(reason, detail.clone()),
        ),
        ChargeVerdict::Open {
            error,
            provider_failed: true,
        } => (ChargeSettled::ProviderFailed, Outcome::Transient { error }),
        ChargeVerdict::Open {
            provider_failed: false,
            ..
        } => return Ok(None),
    };
    let reply = inbox::body(&command.reply(outcome));
    Ok(
        store::settle_charge_with_reply(conn, command, &settled, &reply)
            .await?
            .then_some(reply),
    )
}

#[tracing::instrument(skip_all, fields(%saga_id))]
async fn settle_refund(
    conn: &mut PgConnection,
    saga_id: Uuid,
    answer: ProviderAnswer,
) -> Result<Outcome, sqlx::Error> {
    let (status, row) = store::locked(conn, saga_id).await?;
    match status {
        Status::Refunding => {}
        Status::Refunded => return Ok(refunded(row.refunded_cents)),
        // Only a refund moves a payment out of `refunding`: another state
        // here is books this build cannot reconcile, for good.
        other => {
            return Err(sqlx::Error::Decode(
                format!("a refund of saga {saga_id} found its payment {other:?}, not refunding")
                    .into(),
            ))
        }
    }
    match rules::refund_verdict(answer, row.approved_charge_cents()) {
        RefundVerdict::Refunded { amount_cents } => {
            store::record_refunded(conn, saga_id, amount_cents).await?;
            Ok(refunded(amount_cents))
        }
        RefundVerdict::Open { error } => Ok(Outcome::Transient { error }),
    }
}
