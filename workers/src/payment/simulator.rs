//! The shipped payment provider: a deterministic simulator whose answer is
//! chosen by the payment method, so a test or a rehearsal can ask for any
//! path through the saga. It behaves as a separate party: it keeps its own
//! ledger (`provider_ledger`), writes it in its own transaction and commits
//! before it answers, and honours idempotency keys as a real provider does.
//!
//! | method | charge | refund (cancel or refund) |
//! |---|---|---|
//! | `sim_approve` | approved | approved |
//! | `sim_decline` | declined | approved (nothing to refund) |
//! | `sim_transient_N` | transient for the saga's first N attempts, then approved | approved |
//! | `sim_slow_MS` | approved after MS milliseconds (at most 60 s) | the same |
//! | `sim_down` | always transient | always transient |

use std::time::Duration;

use saga_protocol::messages::reason;
use saga_protocol::values::{Cents, Currency};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::provider::{
    ChargeRequest, IdempotencyKey, Lookup, PaymentProvider, ProviderAnswer, RefundRequest,
};

/// The longest `sim_slow_MS` waits: a provider that slow is a provider
/// that is down.
pub const MAX_SLOW: Duration = Duration::from_secs(60);

pub use super::provider::VOIDED;

#[derive(Debug, Clone)]
pub struct Simulator {
    ledger: PgPool,
}

impl Simulator {
    /// A simulator whose ledger is the `provider_ledger` table of `ledger`.
    pub fn new(ledger: PgPool) -> Self {
        Simulator { ledger }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Approve,
    Decline,
    TransientFirst(u32),
    Slow(Duration),
    Down,
}

impl Behaviour {
    fn of(method: &str) -> Option<Behaviour> {
        match method {
            "sim_approve" => Some(Behaviour::Approve),
            "sim_decline" => Some(Behaviour::Decline),
            "sim_down" => Some(Behaviour::Down),
            _ => {
                if let Some(n) = method.strip_prefix("sim_transient_") {
                    n.parse().ok().map(Behaviour::TransientFirst)
                } else if let Some(ms) = method.strip_prefix("sim_slow_") {
                    let ms: u64 = ms.parse().ok()?;
                    Some(Behaviour::Slow(Duration::from_millis(ms).min(MAX_SLOW)))
                } else {
                    None
                }
            }
        }
    }
}

fn down() -> ProviderAnswer {
    ProviderAnswer::Transient {
        error: "simulated provider is down (sim_down)".to_owned(),
    }
}

fn ledger_unavailable(error: sqlx::Error) -> ProviderAnswer {
    ProviderAnswer::Transient {
        error: format!("simulated provider cannot reach its ledger: {error}"),
    }
}

/// One row of the provider's ledger.
#[derive(Debug, sqlx::FromRow)]
struct Entry {
    reference: Uuid,
    operation: String,
    outcome: String,
    amount_cents: i64,
    decline_reason: Option<String>,
}

impl Entry {
    fn answer(&self) -> ProviderAnswer {
        match self.outcome.as_str() {
            "approved" => ProviderAnswer::Approved {
                reference: self.reference,
                amount_cents: Cents::new(self.amount_cents),
            },
            "voided" => ProviderAnswer::Declined {
                reason: VOIDED.to_owned(),
            },
            _ => ProviderAnswer::Declined {
                reason: self.decline_reason.clone().unwrap_or_default(),
            },
        }
    }
}

async fn entry(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    lock: bool,
) -> Result<Option<Entry>, sqlx::Error> {
    let sql = if lock {
        "SELECT reference, operation, outcome, amount_cents, decline_reason
         FROM provider_ledger WHERE idempotency_key = $1 FOR UPDATE"
    } else {
        "SELECT reference, operation, outcome, amount_cents, decline_reason
         FROM provider_ledger WHERE idempotency_key = $1"
    };
    sqlx::query_as(sql)
        .bind(key.as_str())
        .fetch_optional(conn)
        .await
}

/// Writes an entry unless its key has one; `true` when this call wrote it.
#[allow(clippy::too_many_arguments)]
async fn insert(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    saga_id: Uuid,
    operation: &str,
    outcome: &str,
    amount_cents: Cents,
    currency: Option<&Currency>,
    payment_method: &str,
    decline_reason: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO provider_ledger (reference, idempotency_key, saga_id, operation, outcome,
             amount_cents, currency, payment_method, decline_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING reference",
    )
    .bind(Uuid::now_v7())
    .bind(key.as_str())
    .bind(saga_id)
    .bind(operation)
    .bind(outcome)
    .bind(amount_cents.get())
    .bind(currency.map(Currency::as_str))
    .bind(payment_method)
    .bind(decline_reason)
    .fetch_optional(conn)
    .await
}

impl Simulator {
    #[tracing::instrument(skip_all, fields(key = %request.key))]
    async fn book_charge(
        &self,
        request: &ChargeRequest,
        outcome: &str,
        reason: Option<&str>,
    ) -> Result<ProviderAnswer, sqlx::Error> {
        // One write, so no transaction: the insert commits alone, and on a
        // conflict the entry it met (committed, since the insert waited for
        // it) is read by the next statement.
        let mut conn = self.ledger.acquire().await?;
        let amount = if outcome == "approved" {
            request.amount_cents
        } else {
            Cents::ZERO
        };
        let written = insert(
            &mut conn,
            &request.key,
            request.saga_id,
            "charge",
            outcome,
            amount,
            Some(&request.currency),
            &request.payment_method,
            reason,
        )
        .await?;
        let answer = match written {
            Some(reference) if outcome == "approved" => ProviderAnswer::Approved {
                reference,
                amount_cents: amount,
            },
            Some(_) => ProviderAnswer::Declined {
                reason: reason.unwrap_or_default().to_owned(),
            },
            None => {
                let first = entry(&mut conn, &request.key, false)
                    .await?
                    .ok_or_else(|| sqlx::Error::RowNotFound)?;
                match first.answer() {
                    ProviderAnswer::Approved { amount_cents, .. }
                        if amount_cents != request.amount_cents =>
                    {
                        ProviderAnswer::KeyReused {
                            error: format!(
                                "idempotency key `{}` was used for a charge of {amount_cents} cents, not {}",
                                request.key, request.amount_cents
                            ),
                        }
                    }
                    answer => answer,
                }
            }
        };
        Ok(answer)
    }

    #[tracing::instrument(skip_all, fields(key = %request.key, charge_key = %request.charge_key))]
    async fn cancel_or_refund(
        &self,
        request: &RefundRequest,
    ) -> Result<ProviderAnswer, sqlx::Error> {
        let mut tx = self.ledger.begin().await?;
        if let Some(refund) = entry(&mut tx, &request.key, false).await? {
            tx.commit().await?;
            return Ok(refund.answer());
        }
        // Voiding the charge key first settles the race with a charge in
        // flight: whichever of the two writes the key first decides, and the
        // other reads what it wrote.
        let voided = insert(
            &mut tx,
            &request.charge_key,
            request.saga_id,
            "charge",
            "voided",
            Cents::ZERO,
            None,
            &request.payment_method,
            None,
        )
        .await?;
        let answer = if let Some(reference) = voided {
            ProviderAnswer::Approved {
                reference,
                amount_cents: Cents::ZERO,
            }
        } else {
            let charge = entry(&mut tx, &request.charge_key, true)
                .await?
                .ok_or_else(|| sqlx::Error::RowNotFound)?;
            if charge.operation == "charge" && charge.outcome == "approved" {
                let refunded = insert(
                    &mut tx,
                    &request.key,
                    request.saga_id,
                    "refund",
                    "approved",
                    Cents::new(charge.amount_cents),
                    None,
                    &request.payment_method,
                    None,
                )
                .await?;
                match refunded {
                    Some(reference) => ProviderAnswer::Approved {
                        reference,
                        amount_cents: Cents::new(charge.amount_cents),
                    },
                    None => entry(&mut tx, &request.key, false)
                        .await?
                        .ok_or_else(|| sqlx::Error::RowNotFound)?
                        .answer(),
                }
            } else {
                // Declined or voided: nothing moved, nothing to return.
                ProviderAnswer::Approved {
                    reference: charge.reference,
                    amount_cents: Cents::ZERO,
                }
            }
        };
        tx.commit().await?;
        Ok(answer)
    }
}

impl PaymentProvider for Simulator {
    async fn charge(&self, request: &ChargeRequest) -> ProviderAnswer {
        let Some(behaviour) = Behaviour::of(&request.payment_method) else {
            return ProviderAnswer::Refused {
                reason: reason::INVALID_PAYMENT_METHOD,
                detail: format!(
                    "payment method `{}` is not supported",
                    request.payment_method
                ),
            };
        };
        let booked = match behaviour {
            Behaviour::Approve | Behaviour::TransientFirst(0) => {
                self.book_charge(request, "approved", None).await
            }
            Behaviour::Decline => {
                let reason = "card declined by the simulator (sim_decline)";
                self.book_charge(request, "declined", Some(reason)).await
            }
            Behaviour::TransientFirst(n) if request.transient_failures < n => {
                return ProviderAnswer::Transient {
                    error: format!(
                        "simulated transient failure {} of {n} ({})",
                        request.transient_failures + 1,
                        request.payment_method
                    ),
                };
            }
            Behaviour::TransientFirst(_) => self.book_charge(request, "approved", None).await,
            Behaviour::Slow(wait) => {
                // A slow provider is slow before it books: no ledger
                // transaction is open while it waits.
                tokio::time::sleep(wait).await;
                self.book_charge(request, "approved", None).await
            }
            Behaviour::Down => return down(),
        };
        booked.unwrap_or_else(ledger_unavailable)
    }

    async fn refund(&self, request: &RefundRequest) -> ProviderAnswer {
        match Behaviour::of(&request.payment_method) {
            Some(Behaviour::Down) => return down(),
            Some(Behaviour::Slow(wait)) => tokio::time::sleep(wait).await,
            // Cancel or refund goes by the charge's key, whatever the method.
            _ => {}
        }
        self.cancel_or_refund(request)
            .await
            .unwrap_or_else(ledger_unavailable)
    }

    #[tracing::instrument(skip_all, fields(%key))]
    async fn lookup(&self, key: &IdempotencyKey) -> Lookup {
        let found = async {
            let mut conn = self.ledger.acquire().await?;
            entry(&mut conn, key, false).await
        }
        .await;
        match found {
            Ok(Some(entry)) => Lookup::Found(entry.answer()),
            Ok(None) => Lookup::Unknown,
            Err(error) => Lookup::Transient {
                error: format!("simulated provider cannot reach its ledger: {error}"),
            },
        }
    }
}

/// One saga's line of the provider's ledger: approved operations only.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerLine {
    pub saga_id: Uuid,
    pub charges: i64,
    pub charged_cents: i64,
    pub refunds: i64,
    pub refunded_cents: i64,
}

/// The provider's ledger per saga, in saga id order; a saga the provider
/// only declined or voided shows zeros.
#[tracing::instrument(skip_all)]
pub async fn ledger(pool: &PgPool) -> Result<Vec<LedgerLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id,
                count(*) FILTER (WHERE operation = 'charge' AND outcome = 'approved') AS charges,
                coalesce(sum(amount_cents) FILTER (WHERE operation = 'charge' AND outcome = 'approved'), 0)::int8 AS charged_cents,
                count(*) FILTER (WHERE operation = 'refund' AND outcome = 'approved') AS refunds,
                coalesce(sum(amount_cents) FILTER (WHERE operation = 'refund' AND outcome = 'approved'), 0)::int8 AS refunded_cents
         FROM provider_ledger GROUP BY saga_id ORDER BY saga_id",
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_choose_the_behaviour() {
        assert_eq!(Behaviour::of("sim_approve"), Some(Behaviour::Approve));
        assert_eq!(Behaviour::of("sim_decline"), Some(Behaviour::Decline));
        assert_eq!(Behaviour::of("sim_down"), Some(Behaviour::Down));
        assert_eq!(
            Behaviour::of("sim_transient_2"),
            Some(Behaviour::TransientFirst(2))
        );
        assert_eq!(
            Behaviour::of("sim_slow_1"),
            Some(Behaviour::Slow(Duration::from_millis(1)))
        );
        assert_eq!(Behaviour::of("paypal"), None);
        assert_eq!(Behaviour::of("sim_transient_x"), None);
        assert_eq!(Behaviour::of("sim_slow_"), None);
    }

    #[test]
    fn slow_is_capped() {
        assert_eq!(
            Behaviour::of("sim_slow_99999999"),
            Some(Behaviour::Slow(MAX_SLOW))
        );
    }
}
