//! Stripe as the payment provider (`PAYMENT_PROVIDER=stripe`): exactly
//! one charge per saga even against a server that ignores idempotency
//! keys. A charge creates a PaymentIntent unconfirmed (no money moves),
//! records its id in our books, then confirms it by id. A charge that
//! finds an id recorded retrieves that PaymentIntent and acts on its
//! status; one that finds none creates a new one, which is safe because a
//! PaymentIntent nobody recorded was never confirmed (the auditor cancels
//! such orphans). A refund retrieves the PaymentIntent first and returns
//! only what is not returned yet, or cancels one not yet confirmed.
//!
//! Every call is made holding no transaction, connection or lock: the
//! books are written in single statements between calls.

pub mod config;

use std::sync::Arc;

use saga_protocol::messages::reason;
use saga_protocol::values::{Cents, Currency};
use saga_stripe::{Client, IntentStatus, NewIntent, PaymentIntent, StripeError};
use sqlx::PgPool;
use uuid::Uuid;

#[cfg(feature = "failpoints")]
use super::config::Failpoint;
use super::provider::{
    ChargeRequest, IdempotencyKey, Lookup, PaymentProvider, ProviderAnswer, RefundRequest, VOIDED,
};
use super::provider_intent::{self, Recorded};
pub use config::StripeConfig;

#[derive(Debug, Clone)]
pub struct Stripe {
    client: Arc<Client>,
    books: PgPool,
    currencies: Vec<Currency>,
    #[cfg(feature = "failpoints")]
    failpoint: Option<Failpoint>,
}

impl Stripe {
    /// Stripe through `client`, keeping PaymentIntent ids in the payment
    /// database `books`.
    pub fn new(client: Client, books: PgPool, currencies: Vec<Currency>) -> Stripe {
        Stripe {
            client: Arc::new(client),
            books,
            currencies,
            #[cfg(feature = "failpoints")]
            failpoint: None,
        }
    }

    #[cfg(feature = "failpoints")]
    pub fn with_failpoint(mut self, failpoint: Option<Failpoint>) -> Stripe {
        self.failpoint = failpoint;
        self
    }
}

/// Our reference for a Stripe object: the `payment_id` a charge's reply
/// carries is a UUID, the same for every answer about one PaymentIntent.
fn reference(stripe_id: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("stripe:{stripe_id}").as_bytes(),
    )
}

fn transient(error: impl Into<String>) -> ProviderAnswer {
    ProviderAnswer::Transient {
        error: error.into(),
    }
}

fn books_unavailable(error: sqlx::Error) -> ProviderAnswer {
    transient(format!(
        "the payment books cannot be read or written: {error}"
    ))
}

/// A call that failed for a reason the charge or refund cannot act on:
/// transient, and loud when the key is wrong (every payment waits on an
/// operator then).
fn unavailable(what: &str, error: StripeError) -> ProviderAnswer {
    if let StripeError::Unauthorized { status, .. } = &error {
        tracing::error!(
            status,
            "Stripe refused STRIPE_SECRET_KEY: no charge or refund can go through until an operator fixes it; the sagas wait and then park for support"
        );
    }
    transient(format!("{what}: {error}"))
}

fn approved(stripe_id: &str, amount: i64) -> ProviderAnswer {
    ProviderAnswer::Approved {
        reference: reference(stripe_id),
        amount_cents: Cents::new(amount),
    }
}

impl PaymentProvider for Stripe {
    #[tracing::instrument(skip_all, fields(saga_id = %request.saga_id))]
    async fn charge(&self, request: &ChargeRequest) -> ProviderAnswer {
        if !request.payment_method.starts_with("pm_") {
            return ProviderAnswer::Refused {
                reason: reason::INVALID_PAYMENT_METHOD,
                detail: "the payment method must be a Stripe PaymentMethod id (pm_...), created by the storefront with Stripe.js".to_owned(),
            };
        }
        if !self.currencies.is_empty() && !self.currencies.contains(&request.currency) {
            return ProviderAnswer::Refused {
                reason: reason::CURRENCY_MISMATCH,
                detail: format!(
                    "the payment account does not charge in {} (STRIPE_CURRENCIES)",
                    request.currency
                ),
            };
        }
        match provider_intent::recorded(&self.books, request.saga_id).await {
            Err(error) => books_unavailable(error),
            Ok(Recorded::Nothing) => self.create_and_confirm(request).await,
            Ok(recorded) => self.resume(recorded, request).await,
        }
    }

    #[tracing::instrument(skip_all, fields(saga_id = %request.saga_id))]
    async fn refund(&self, request: &RefundRequest) -> ProviderAnswer {
        let recorded = match provider_intent::recorded(&self.books, request.saga_id).await {
            Ok(Recorded::Nothing) => provider_intent::void(&self.books, request.saga_id).await,
            other => other,
        };
        match recorded {
            Err(error) => books_unavailable(error),
            // No PaymentIntent was recorded, so none was confirmed; the
            // mark stops one being created now from being confirmed.
            Ok(Recorded::Void | Recorded::Nothing) => ProviderAnswer::Approved {
                reference: reference(&format!("void:{}", request.saga_id)),
                amount_cents: Cents::ZERO,
            },
            Ok(Recorded::Intent(id)) => self.refund_intent(&id, request).await,
        }
    }

    /// Nothing to look up apart: [`Stripe::charge`] and [`Stripe::refund`]
    /// retrieve the recorded PaymentIntent before they act, so "unknown"
    /// sends a resumed operation to them, and they never act twice.
    async fn lookup(&self, _key: &IdempotencyKey) -> Lookup {
        Lookup::Unknown
    }
}

impl Stripe {
    async fn create_and_confirm(&self, request: &ChargeRequest) -> ProviderAnswer {
        let saga_id = request.saga_id.to_string();
        let currency = request.currency.as_str().to_ascii_lowercase();
        let intent = NewIntent {
            amount: request.amount_cents.get(),
            currency: &currency,
            payment_method: &request.payment_method,
            // The checkout's id is its saga's: both names, for whoever
            // searches Stripe's dashboard by either.
            metadata: &[("saga_id", &saga_id), ("checkout_id", &saga_id)],
        };
        let created = match self
            .client
            .create_intent(&intent, request.key.as_str())
            .await
        {
            Ok(created) => created,
            // The PaymentMethod is the one object a create names: a 404
            // (localstripe's answer to an unknown one) is about it.
            Err(
                StripeError::InvalidPaymentMethod { message }
                | StripeError::Refused {
                    status: 404,
                    message,
                },
            ) => {
                return ProviderAnswer::Refused {
                    reason: reason::INVALID_PAYMENT_METHOD,
                    detail: format!("Stripe refused the payment method: {message}"),
                }
            }
            Err(StripeError::Refused { message, .. }) => {
                return ProviderAnswer::Declined {
                    reason: format!("Stripe refused the PaymentIntent: {message}"),
                }
            }
            Err(StripeError::Declined { .. }) => {
                return ProviderAnswer::Declined {
                    reason: "Stripe declined the PaymentIntent".to_owned(),
                }
            }
            // Perhaps created: never confirmed, so no money moved.
            Err(error) => return unavailable("creating the PaymentIntent", error),
        };
        #[cfg(feature = "failpoints")]
        if self.failpoint == Some(Failpoint::AfterProviderCreate) {
            tracing::error!(intent = %created.id, "PAYMENT_FAILPOINT after_provider_create: aborting");
            std::process::abort();
        }
        match provider_intent::record(&self.books, request.saga_id, &created.id).await {
            Err(error) => books_unavailable(error),
            Ok(Recorded::Intent(id)) if id == created.id => self.confirm(&id, request).await,
            Ok(other) => {
                // Another attempt recorded its own first, or a refund voided
                // the charge: ours is never confirmed.
                if let Err(error) = self.client.cancel(&created.id).await {
                    tracing::warn!(intent = %created.id, %error, "an unused PaymentIntent was not cancelled; the auditor will");
                }
                self.resume(other, request).await
            }
        }
    }

    /// What the books' record answers a charge: the recorded PaymentIntent
    /// as it is now (confirmed if it still waits for that), or the void a
    /// refund left.
    async fn resume(&self, recorded: Recorded, request: &ChargeRequest) -> ProviderAnswer {
        match recorded {
            Recorded::Intent(id) => match self.client.retrieve(&id).await {
                Ok(intent) => self.answer(intent, request, true).await,
                Err(error) => unavailable("retrieving the PaymentIntent", error),
            },
            Recorded::Void => ProviderAnswer::Declined {
                reason: VOIDED.to_owned(),
            },
            // Only ever read before a write: a write leaves an id or the void.
            Recorded::Nothing => transient("no PaymentIntent is recorded for the charge"),
        }
    }

    async fn confirm(&self, id: &str, request: &ChargeRequest) -> ProviderAnswer {
        match self.client.confirm(id).await {
            Ok(intent) => self.answer(intent, request, false).await,
            Err(StripeError::Declined {
                code,
                decline_code,
                message,
            }) => ProviderAnswer::Declined {
                reason: match decline_code {
                    Some(decline) => format!("{code} ({decline}): {message}"),
                    None => format!("{code}: {message}"),
                },
            },
            Err(StripeError::InvalidPaymentMethod { message }) => ProviderAnswer::Refused {
                reason: reason::INVALID_PAYMENT_METHOD,
                detail: message,
            },
            Err(error @ StripeError::Unauthorized { .. }) => {
                unavailable("confirming the PaymentIntent", error)
            }
            // The PaymentIntent moved on (another attempt confirmed it, a
            // refund cancelled it) or the answer was lost: what it is now
            // says what happened.
            Err(_) => match self.client.retrieve(id).await {
                Ok(intent) => self.answer(intent, request, false).await,
                Err(error) => {
                    unavailable("retrieving the PaymentIntent after its confirmation", error)
                }
            },
        }
    }

    /// What `intent`, the saga's recorded PaymentIntent, means for its
    /// charge; one still unconfirmed is confirmed when `may_confirm`.
    async fn answer(
        &self,
        intent: PaymentIntent,
        request: &ChargeRequest,
        may_confirm: bool,
    ) -> ProviderAnswer {
        let expected = request.amount_cents.get();
        if intent.amount != expected
            || !intent
                .currency
                .eq_ignore_ascii_case(request.currency.as_str())
        {
            tracing::error!(intent = %intent.id, "the recorded PaymentIntent is for another amount than the charge");
            return transient(format!(
                "PaymentIntent {} is for {} {}, the charge for {expected} {}: support must look",
                intent.id, intent.amount, intent.currency, request.currency
            ));
        }
        match intent.status() {
            IntentStatus::Succeeded => approved(&intent.id, intent.amount),
            IntentStatus::RequiresConfirmation if may_confirm => {
                Box::pin(self.confirm(&intent.id, request)).await
            }
            IntentStatus::RequiresConfirmation => {
                transient(format!("PaymentIntent {} is not confirmed yet", intent.id))
            }
            IntentStatus::Processing => {
                transient(format!("PaymentIntent {} is processing", intent.id))
            }
            IntentStatus::RequiresPaymentMethod => ProviderAnswer::Declined {
                reason: intent.failure(),
            },
            IntentStatus::Canceled => ProviderAnswer::Declined {
                reason: format!("PaymentIntent {} was canceled", intent.id),
            },
            IntentStatus::RequiresAction => {
                // The customer is not in the browser any more: nobody can
                // take that step, so the PaymentIntent is let go.
                if let Err(error) = self.client.cancel(&intent.id).await {
                    tracing::warn!(intent = %intent.id, %error, "a PaymentIntent that requires action was not cancelled");
                }
                ProviderAnswer::Refused {
                    reason: reason::PAYMENT_REQUIRES_ACTION,
                    detail: "the card requires the customer to authenticate (3-D Secure), which this checkout cannot ask for".to_owned(),
                }
            }
            IntentStatus::Other(status) => transient(format!(
                "PaymentIntent {} has status {status}, which this worker does not act on",
                intent.id
            )),
        }
    }

    /// Returns what is not returned yet of the PaymentIntent `id`, or
    /// cancels it when it never succeeded.
    async fn refund_intent(&self, id: &str, request: &RefundRequest) -> ProviderAnswer {
        let saga_id = request.saga_id.to_string();
        // A refund or cancel refused because the PaymentIntent moved on
        // is read again, once.
        for _ in 0..2 {
            let intent = match self.client.retrieve(id).await {
                Ok(intent) => intent,
                Err(error) => return unavailable("retrieving the PaymentIntent to refund", error),
            };
            let outcome = match intent.status() {
                IntentStatus::Succeeded => {
                    let Some(refunded) = intent.amount_refunded() else {
                        return transient(format!(
                            "PaymentIntent {id} came without its charge expanded; what was refunded is unknown"
                        ));
                    };
                    if refunded >= intent.amount {
                        return approved(id, refunded);
                    }
                    self.client
                        .refund(
                            id,
                            intent.amount - refunded,
                            request.key.as_str(),
                            &[("saga_id", &saga_id)],
                        )
                        .await
                        .map(|refund| approved(&refund.id, refunded + refund.amount))
                }
                IntentStatus::Canceled | IntentStatus::RequiresPaymentMethod => {
                    return approved(id, 0)
                }
                IntentStatus::RequiresConfirmation | IntentStatus::RequiresAction => {
                    self.client.cancel(id).await.map(|_| approved(id, 0))
                }
                IntentStatus::Processing => {
                    return transient(format!(
                        "PaymentIntent {id} is processing; refunded once it settles"
                    ))
                }
                IntentStatus::Other(status) => {
                    return transient(format!(
                        "PaymentIntent {id} has status {status}, which this worker does not refund"
                    ))
                }
            };
            match outcome {
                Ok(answer) => return answer,
                Err(StripeError::Refused { .. }) => continue,
                Err(error) => return unavailable("refunding the PaymentIntent", error),
            }
        }
        transient(format!(
            "PaymentIntent {id} kept changing while it was refunded"
        ))
    }
}
