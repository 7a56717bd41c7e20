//! Charges and refunds, keyed by saga id: the saga's payment row is locked
//! (or created) before the provider is asked anything, so a retried or
//! concurrent command never moves money twice.

use saga_shared::messages::{
    reason, ChargePayment, Charged, Command, Outcome, Refunded, StepResult,
};
use saga_shared::{Envelope, WorkerKind};
use sqlx::PgConnection;
use uuid::Uuid;

use super::outage::{self, OUTAGE_ERROR};
use super::provider::{ChargeRequest, PaymentProvider, ProviderAnswer, RefundRequest};
use super::simulator::Simulator;
use crate::runtime::{not_handled, Handler};

#[derive(Debug, Clone, Default)]
pub struct Payment<P = Simulator> {
    provider: P,
}

impl<P: PaymentProvider> Payment<P> {
    pub fn new(provider: P) -> Self {
        Payment { provider }
    }
}

impl<P: PaymentProvider> Handler for Payment<P> {
    const KIND: WorkerKind = WorkerKind::Payment;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        match &command.payload {
            Command::Charge(request) => self.charge(conn, command.saga_id, request).await,
            Command::Refund(_) => self.refund(conn, command.saga_id).await,
            other => Ok(not_handled(Self::KIND, other)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Charged,
    Declined,
    Refunded,
}

impl Status {
    fn parse(text: &str) -> Result<Status, sqlx::Error> {
        match text {
            "pending" => Ok(Status::Pending),
            "charged" => Ok(Status::Charged),
            "declined" => Ok(Status::Declined),
            "refunded" => Ok(Status::Refunded),
            other => Err(sqlx::Error::Protocol(format!(
                "payment status `{other}` is not one this worker knows"
            ))),
        }
    }
}

/// The saga's payment row, as locked by this transaction.
#[derive(sqlx::FromRow)]
struct PaymentRow {
    status: String,
    amount_cents: i64,
    refunded_cents: i64,
    currency: Option<String>,
    payment_method: Option<String>,
    provider_reference: Option<Uuid>,
    transient_failures: i32,
    rejection_reason: Option<String>,
    rejection_detail: Option<String>,
}

async fn lock(conn: &mut PgConnection, saga_id: Uuid) -> Result<(Status, PaymentRow), sqlx::Error> {
    let row: PaymentRow = sqlx::query_as(
        "SELECT status, amount_cents, refunded_cents, currency, payment_method,
                provider_reference, transient_failures, rejection_reason, rejection_detail
         FROM payments WHERE saga_id = $1 FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((Status::parse(&row.status)?, row))
}

fn reference_of(saga_id: Uuid, row: &PaymentRow) -> Result<Uuid, sqlx::Error> {
    row.provider_reference.ok_or_else(|| {
        sqlx::Error::Protocol(format!(
            "charged payment of saga {saga_id} has no provider reference"
        ))
    })
}

fn refunded(refunded_cents: i64) -> Outcome {
    Outcome::Ok(StepResult::Refunded(Refunded { refunded_cents }))
}

fn outage_transient() -> Outcome {
    Outcome::Transient {
        error: OUTAGE_ERROR.to_owned(),
    }
}

impl<P: PaymentProvider> Payment<P> {
    /// Charges once per saga; a repeat answers what the first one did.
    async fn charge(
        &self,
        conn: &mut PgConnection,
        saga_id: Uuid,
        request: &ChargePayment,
    ) -> Result<Outcome, sqlx::Error> {
        if request.amount_cents < 0 {
            return Ok(Outcome::rejected(
                reason::INVALID_COMMAND,
                format!("amount {} is negative", request.amount_cents),
            ));
        }
        sqlx::query(
            "INSERT INTO payments (saga_id, status, currency, payment_method, customer_id)
             VALUES ($1, 'pending', $2, $3, $4)
             ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(saga_id)
        .bind(&request.currency)
        .bind(&request.payment_method)
        .bind(&request.customer_id)
        .execute(&mut *conn)
        .await?;
        let (status, row) = lock(conn, saga_id).await?;
        match status {
            Status::Pending => {}
            Status::Charged => {
                return Ok(Outcome::Ok(StepResult::Charged(Charged {
                    payment_id: reference_of(saga_id, &row)?,
                    amount_cents: row.amount_cents,
                })));
            }
            Status::Declined => {
                return Ok(Outcome::Rejected {
                    reason: row
                        .rejection_reason
                        .unwrap_or_else(|| reason::PAYMENT_DECLINED.to_owned()),
                    detail: row.rejection_detail.unwrap_or_default(),
                });
            }
            Status::Refunded => {
                return Ok(Outcome::rejected(
                    reason::ALREADY_COMPENSATED,
                    format!(
                        "the payment of saga {saga_id} was already refunded; nothing is charged"
                    ),
                ));
            }
        }
        if outage::is_on(conn).await? {
            return Ok(outage_transient());
        }
        let answer = self
            .provider
            .charge(&ChargeRequest {
                saga_id,
                amount_cents: request.amount_cents,
                currency: &request.currency,
                payment_method: &request.payment_method,
                customer_id: &request.customer_id,
                transient_failures: row.transient_failures.unsigned_abs(),
            })
            .await;
        match answer {
            ProviderAnswer::Approved { reference } => {
                sqlx::query(
                    "UPDATE payments SET status = 'charged', amount_cents = $2, currency = $3,
                         payment_method = $4, customer_id = $5, provider_reference = $6,
                         updated_at = now()
                     WHERE saga_id = $1",
                )
                .bind(saga_id)
                .bind(request.amount_cents)
                .bind(&request.currency)
                .bind(&request.payment_method)
                .bind(&request.customer_id)
                .bind(reference)
                .execute(&mut *conn)
                .await?;
                Ok(Outcome::Ok(StepResult::Charged(Charged {
                    payment_id: reference,
                    amount_cents: request.amount_cents,
                })))
            }
            ProviderAnswer::Declined { reason: detail } => {
                decline(conn, saga_id, reason::PAYMENT_DECLINED, detail).await
            }
            ProviderAnswer::UnsupportedMethod { method } => {
                let detail = format!("payment method `{method}` is not supported");
                decline(conn, saga_id, reason::INVALID_PAYMENT_METHOD, detail).await
            }
            ProviderAnswer::Transient { error } => {
                // The count is what `sim_transient_N` and real backoff
                // policies need; the row stays pending for the next try.
                sqlx::query(
                    "UPDATE payments SET transient_failures = transient_failures + 1,
                         updated_at = now()
                     WHERE saga_id = $1",
                )
                .bind(saga_id)
                .execute(&mut *conn)
                .await?;
                Ok(Outcome::Transient { error })
            }
        }
    }

    /// Refunds what the saga was charged; a no-op when nothing was. A refund
    /// before any charge leaves a `refunded` row so that a late charge does
    /// nothing.
    async fn refund(&self, conn: &mut PgConnection, saga_id: Uuid) -> Result<Outcome, sqlx::Error> {
        let tombstone = sqlx::query(
            "INSERT INTO payments (saga_id, status) VALUES ($1, 'refunded')
             ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(saga_id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if tombstone {
            return Ok(refunded(0));
        }
        let (status, row) = lock(conn, saga_id).await?;
        match status {
            Status::Charged => {}
            // A repeat answers what the first refund did.
            Status::Refunded => return Ok(refunded(row.refunded_cents)),
            Status::Declined => return Ok(refunded(0)),
            Status::Pending => {
                // Only failed attempts so far: close the payment so that a
                // late charge does nothing.
                sqlx::query(
                    "UPDATE payments SET status = 'refunded', updated_at = now() WHERE saga_id = $1",
                )
                .bind(saga_id)
                .execute(&mut *conn)
                .await?;
                return Ok(refunded(0));
            }
        }
        if outage::is_on(conn).await? {
            return Ok(outage_transient());
        }
        let answer = self
            .provider
            .refund(&RefundRequest {
                saga_id,
                reference: reference_of(saga_id, &row)?,
                amount_cents: row.amount_cents,
                currency: row.currency.as_deref().unwrap_or_default(),
                payment_method: row.payment_method.as_deref().unwrap_or_default(),
            })
            .await;
        match answer {
            ProviderAnswer::Approved { .. } => {
                sqlx::query(
                    "UPDATE payments SET status = 'refunded', refunded_cents = amount_cents,
                         updated_at = now()
                     WHERE saga_id = $1",
                )
                .bind(saga_id)
                .execute(&mut *conn)
                .await?;
                Ok(refunded(row.amount_cents))
            }
            ProviderAnswer::Transient { error } => Ok(Outcome::Transient { error }),
            // A compensation has no business "no": money charged must go
            // back. Keep trying, so that the saga parks for support if the
            // provider never agrees.
            ProviderAnswer::Declined { reason } => Ok(Outcome::Transient {
                error: format!("the provider refused the refund: {reason}"),
            }),
            ProviderAnswer::UnsupportedMethod { method } => Ok(Outcome::Transient {
                error: format!(
                    "the provider refused the refund: method `{method}` is not supported"
                ),
            }),
        }
    }
}

async fn decline(
    conn: &mut PgConnection,
    saga_id: Uuid,
    why: &str,
    detail: String,
) -> Result<Outcome, sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET status = 'declined', rejection_reason = $2, rejection_detail = $3,
             updated_at = now()
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(why)
    .bind(&detail)
    .execute(&mut *conn)
    .await?;
    Ok(Outcome::rejected(why, detail))
}
