//! `--provider stripe`: the provider's side of the books read from Stripe
//! itself. Every PaymentIntent and refund is listed page by page; those
//! with a `saga_id` in their metadata become the ledger the invariants
//! check (one succeeded PaymentIntent of the total per completed checkout,
//! net zero per undone one, no money for a saga nobody knows). A
//! PaymentIntent our books do not record is an orphan: confirmed, it is a
//! second charge (a violation); unconfirmed, it moved nothing, and
//! `--cancel-orphans` cancels it so that nobody ever can.

use std::collections::HashMap;
use std::time::Duration;

use saga_stripe::{Client, IntentStatus, PaymentIntent, Refund, StripeError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::facts::LedgerLine;

/// A worker records its PaymentIntent a few milliseconds after creating
/// it; one unrecorded for this long belongs to a worker that died.
pub const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// How the auditor reaches Stripe.
#[derive(Debug)]
pub struct StripeAudit {
    pub client: Client,
    /// Cancel unconfirmed orphans (the one write this tool makes, and
    /// only at the provider).
    pub cancel_orphans: bool,
}

/// A PaymentIntent of a saga that our books do not record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub saga: Uuid,
    pub intent: String,
    pub status: String,
    pub amount: i64,
}

/// What Stripe holds, sorted for the audit.
#[derive(Debug, Default)]
pub struct StripeBooks {
    pub ledger: HashMap<Uuid, LedgerLine>,
    /// Succeeded: money moved that our books do not know of.
    pub confirmed_orphans: Vec<Orphan>,
    /// Never confirmed; cancelled when asked and safe.
    pub unconfirmed_orphans: Vec<Orphan>,
    /// Cancelled by this run.
    pub cancelled: Vec<Orphan>,
    /// PaymentIntents with no saga in their metadata: not this system's.
    pub foreign: usize,
}

/// What the payment books record per saga: its PaymentIntent id, if any.
/// Read after Stripe is listed: a PaymentIntent confirmed by then was
/// recorded before its confirmation, so it is in this read.
async fn recorded_intents(payment: &PgPool) -> Result<HashMap<Uuid, Option<String>>, sqlx::Error> {
    let rows: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT saga_id, provider_intent_id FROM payments")
            .fetch_all(payment)
            .await?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, thiserror::Error)]
pub enum StripeReadError {
    #[error("could not read Stripe: {0}")]
    Stripe(#[from] StripeError),
    #[error("could not read the payment database's PaymentIntent ids")]
    Books(#[from] sqlx::Error),
}

/// Reads Stripe and the books' PaymentIntent ids, and (when asked)
/// cancels the unconfirmed orphans that are safe to cancel.
pub async fn read(
    stripe: &StripeAudit,
    payment: &PgPool,
    now_seconds: i64,
) -> Result<StripeBooks, StripeReadError> {
    let intents = stripe.client.all_intents().await?;
    let refunds = stripe.client.all_refunds().await?;
    let recorded = recorded_intents(payment).await?;
    let mut books = sort(&intents, &refunds, &recorded, now_seconds);
    if stripe.cancel_orphans {
        for orphan in std::mem::take(&mut books.unconfirmed_orphans) {
            match stripe.client.cancel(&orphan.intent).await {
                Ok(_) => books.cancelled.push(orphan),
                Err(error) => {
                    tracing::warn!(intent = %orphan.intent, %error, "an orphan PaymentIntent could not be cancelled");
                    books.unconfirmed_orphans.push(orphan);
                }
            }
        }
    }
    Ok(books)
}

/// The pure part of [`read`]: Stripe's objects against our books.
pub fn sort(
    intents: &[PaymentIntent],
    refunds: &[Refund],
    recorded: &HashMap<Uuid, Option<String>>,
    now_seconds: i64,
) -> StripeBooks {
    let mut books = StripeBooks::default();
    let mut saga_of: HashMap<&str, Uuid> = HashMap::new();
    for intent in intents {
        let Some(saga) = intent
            .metadata("saga_id")
            .and_then(|s| s.parse::<Uuid>().ok())
        else {
            books.foreign += 1;
            continue;
        };
        saga_of.insert(&intent.id, saga);
        let ours = recorded.get(&saga).and_then(Option::as_deref) == Some(intent.id.as_str());
        let status = intent.status();
        if status == IntentStatus::Succeeded {
            let line = books.ledger.entry(saga).or_default();
            line.charges += 1;
            line.charged_cents += intent.amount;
        }
        if ours {
            continue;
        }
        let orphan = Orphan {
            saga,
            intent: intent.id.clone(),
            status: intent.status.clone(),
            amount: intent.amount,
        };
        match status {
            IntentStatus::Succeeded | IntentStatus::Processing => {
                books.confirmed_orphans.push(orphan)
            }
            IntentStatus::RequiresConfirmation | IntentStatus::RequiresAction => {
                // Recorded otherwise (another PaymentIntent, or void), or
                // unrecorded for long: its worker moved on or died.
                let decided = recorded.get(&saga).is_some_and(Option::is_some);
                let old = now_seconds - intent.created >= ORPHAN_AGE.as_secs() as i64;
                if decided || old {
                    books.unconfirmed_orphans.push(orphan);
                }
            }
            // Declined or cancelled: nothing moved, nothing can.
            _ => {}
        }
    }
    for refund in refunds {
        let saga = refund
            .payment_intent
            .as_deref()
            .and_then(|intent| saga_of.get(intent));
        if let Some(saga) = saga {
            let line = books.ledger.entry(*saga).or_default();
            line.refunds += 1;
            line.refunded_cents += refund.amount;
        }
    }
    books
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, saga: Uuid, status: &str, amount: i64, created: i64) -> PaymentIntent {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "amount": amount, "currency": "usd",
            "created": created, "metadata": {"saga_id": saga.to_string()}
        }))
        .unwrap()
    }

    fn refund(id: &str, intent: &str, amount: i64) -> Refund {
        serde_json::from_value(
            serde_json::json!({"id": id, "amount": amount, "payment_intent": intent}),
        )
        .unwrap()
    }

    #[test]
    fn the_ledger_counts_succeeded_intents_and_their_refunds() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let intents = [
            intent("pi_a", a, "succeeded", 500, 0),
            intent("pi_b", b, "succeeded", 700, 0),
            intent("pi_b_declined", b, "requires_payment_method", 700, 0),
        ];
        let refunds = [refund("re_1", "pi_b", 700), refund("re_x", "pi_unknown", 9)];
        let recorded = HashMap::from([(a, Some("pi_a".to_owned())), (b, Some("pi_b".to_owned()))]);

        let books = sort(&intents, &refunds, &recorded, 0);

        assert_eq!(
            books.ledger[&a],
            LedgerLine {
                charges: 1,
                charged_cents: 500,
                refunds: 0,
                refunded_cents: 0
            }
        );
        assert_eq!(
            books.ledger[&b],
            LedgerLine {
                charges: 1,
                charged_cents: 700,
                refunds: 1,
                refunded_cents: 700
            }
        );
        assert!(books.confirmed_orphans.is_empty() && books.unconfirmed_orphans.is_empty());
    }

    #[test]
    fn an_unrecorded_intent_is_an_orphan_and_young_ones_are_left_alone() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let now = 10_000;
        let intents = [
            intent("pi_a", a, "succeeded", 500, now),
            intent("pi_a_orphan", a, "requires_confirmation", 500, now),
            intent("pi_b_second", b, "succeeded", 500, now),
            intent("pi_b", b, "succeeded", 500, now),
            // Its worker may be recording it right now.
            intent("pi_c_young", c, "requires_confirmation", 500, now - 5),
            intent("pi_c_old", c, "requires_confirmation", 500, now - 601),
        ];
        let recorded = HashMap::from([
            (a, Some("pi_a".to_owned())),
            (b, Some("pi_b".to_owned())),
            (c, None),
        ]);

        let books = sort(&intents, &[], &recorded, now);

        let ids = |orphans: &[Orphan]| orphans.iter().map(|o| o.intent.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&books.confirmed_orphans), ["pi_b_second"]);
        assert_eq!(ids(&books.unconfirmed_orphans), ["pi_a_orphan", "pi_c_old"]);
        assert_eq!(
            books.ledger[&b].charges, 2,
            "a double charge shows in the ledger too"
        );
    }
}
