//! The payment worker's own books: one payment row per saga, its status
//! moving from an intent (`charging`, `refunding`) to an outcome.

use saga_protocol::messages::{ChargePayment, Command};
use saga_protocol::values::{Cents, Currency, CustomerId};
use saga_protocol::Envelope;
use saga_shared::stored;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Charging,
    Charged,
    Declined,
    Refunding,
    Refunded,
}

impl Status {
    fn parse(text: &str) -> Result<Status, sqlx::Error> {
        match text {
            "charging" => Ok(Status::Charging),
            "charged" => Ok(Status::Charged),
            "declined" => Ok(Status::Declined),
            "refunding" => Ok(Status::Refunding),
            "refunded" => Ok(Status::Refunded),
            // A state this build cannot read: permanent, the command is
            // dead-lettered rather than retried.
            other => Err(sqlx::Error::Decode(
                format!("payment status `{other}` is not one this worker knows").into(),
            )),
        }
    }
}

/// The saga's payment row, as locked by this transaction.
pub struct PaymentRow {
    pub amount_cents: Cents,
    pub refunded_cents: Cents,
    pub currency: Option<Currency>,
    pub payment_method: Option<String>,
    pub provider_reference: Option<Uuid>,
    pub transient_failures: i32,
    pub rejection_reason: Option<String>,
    pub rejection_detail: Option<String>,
}

/// The columns of a [`PaymentRow`] and its status, as stored.
#[derive(sqlx::FromRow)]
struct StoredRow {
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

impl StoredRow {
    fn typed(self) -> Result<(Status, PaymentRow), sqlx::Error> {
        Ok((
            Status::parse(&self.status)?,
            PaymentRow {
                amount_cents: Cents::new(self.amount_cents),
                refunded_cents: Cents::new(self.refunded_cents),
                currency: self.currency.map(stored::currency).transpose()?,
                payment_method: self.payment_method,
                provider_reference: self.provider_reference,
                transient_failures: self.transient_failures,
                rejection_reason: self.rejection_reason,
                rejection_detail: self.rejection_detail,
            },
        ))
    }
}

impl PaymentRow {
    /// What the provider approved under the charge key, per our books.
    pub fn approved_charge_cents(&self) -> Option<Cents> {
        self.provider_reference.map(|_| self.amount_cents)
    }
}

/// Locks the saga's payment row, if there is one.
pub async fn lock(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<Option<(Status, PaymentRow)>, sqlx::Error> {
    let row: Option<StoredRow> = sqlx::query_as(
        "SELECT status, amount_cents, refunded_cents, currency, payment_method,
                provider_reference, transient_failures, rejection_reason, rejection_detail
         FROM payments WHERE saga_id = $1 FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(StoredRow::typed).transpose()
}

/// Locks the saga's payment row, which an earlier step wrote. Rows are
/// never deleted: one that is gone (an operator's hand) never comes back by
/// retrying, so the command is dead-lettered.
pub async fn locked(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<(Status, PaymentRow), sqlx::Error> {
    lock(conn, saga_id).await?.ok_or_else(|| {
        sqlx::Error::Decode(format!("the payment intent of saga {saga_id} is gone").into())
    })
}

/// When a charge intent is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentWhen {
    /// Unless a row was there first.
    NoRow,
    /// When the saga has no payment row yet and the outage switch is off,
    /// in one statement: the common first charge. `false` says neither
    /// which of the two stopped it; the caller then looks.
    NoRowAndNoOutage,
}

impl IntentWhen {
    /// The insert, which takes the saga id and the charge's amount,
    /// currency, method and customer as $1 to $5.
    fn insert(self) -> &'static str {
        match self {
            IntentWhen::NoRow => {
                "INSERT INTO payments (saga_id, status, amount_cents, currency, payment_method, customer_id)
         VALUES ($1, 'charging', $2, $3, $4, $5)
         ON CONFLICT (saga_id) DO NOTHING"
            }
            IntentWhen::NoRowAndNoOutage => {
                "INSERT INTO payments (saga_id, status, amount_cents, currency, payment_method, customer_id)
         SELECT $1, 'charging', $2, $3, $4, $5
         WHERE NOT coalesce((SELECT outage FROM provider_settings WHERE id), false)
         ON CONFLICT (saga_id) DO NOTHING"
            }
        }
    }
}

/// Writes the charge intent `when` says; `true` when it wrote it.
pub async fn write_charge_intent(
    conn: &mut PgConnection,
    when: IntentWhen,
    saga_id: Uuid,
    request: &ChargePayment,
) -> Result<bool, sqlx::Error> {
    let statement = sqlx::query(when.insert())
        .bind(saga_id)
        .bind(request.amount_cents.get())
        .bind(request.currency.as_str())
        .bind(&request.payment_method)
        .bind(request.customer_id.as_str());
    wrote_the_row(conn, statement).await
}

/// A first charge's claim and intent in one statement: claims `command` in
/// the inbox (no reply yet: the provider has not answered) and writes the
/// charge intent, when the message is new, the saga has no payment row and
/// the outage switch is off; `true` when it wrote the intent. Committed
/// alone, it is the first phase whole.
///
/// The intent's insert depends on the claim's, so an intent is never
/// written unclaimed. A claim without an intent stays only when a
/// concurrent command of the saga wrote its row first: a bare claim, which
/// the general path takes over as it does one whose call was cut short.
pub async fn claim_with_first_charge_intent(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
    request: &ChargePayment,
) -> Result<bool, sqlx::Error> {
    let written: bool = sqlx::query_scalar(
        "WITH open AS (
             SELECT NOT EXISTS (SELECT 1 FROM inbox WHERE message_id = $6)
                    AND NOT EXISTS (SELECT 1 FROM payments WHERE saga_id = $1)
                    AND NOT coalesce((SELECT outage FROM provider_settings WHERE id), false)
                    AS ok
         ),
         claimed AS (
             INSERT INTO inbox (message_id, saga_id, step, attempt)
             SELECT $6, $1, $7, $8 WHERE (SELECT ok FROM open)
             ON CONFLICT (message_id) DO NOTHING
             RETURNING message_id
         ),
         intent AS (
             INSERT INTO payments
                 (saga_id, status, amount_cents, currency, payment_method, customer_id)
             SELECT $1, 'charging', $2, $3, $4, $5 FROM claimed
             ON CONFLICT (saga_id) DO NOTHING
             RETURNING saga_id
         )
         SELECT EXISTS (SELECT 1 FROM intent)",
    )
    .bind(command.saga_id)
    .bind(request.amount_cents.get())
    .bind(request.currency.as_str())
    .bind(&request.payment_method)
    .bind(request.customer_id.as_str())
    .bind(command.message_id)
    .bind(command.step.routing_key())
    .bind(command.attempt as i32)
    .fetch_one(&mut *conn)
    .await?;
    Ok(written)
}

/// What a charge's settlement writes on a payment still `charging`.
pub enum ChargeSettled<'a> {
    Charged(ApprovedCharge<'a>),
    Declined {
        reason: &'a str,
        detail: &'a str,
    },
    /// A transient provider failure, counted; the intent stays.
    ProviderFailed,
}

/// Wraps a settlement's `SET` list (its own parameters from $4) into one
/// statement with the inbox: the command's inbox row ($1) is locked first,
/// as the general path locks it; the payment ($2) is settled only if it is
/// still `charging` and the command still unanswered; the reply ($3) is
/// recorded only if it was. The result says whether both were written.
macro_rules! settling_with_reply {
    ($set:literal) => {
        concat!(
            "WITH claim AS (
                 SELECT reply FROM inbox WHERE message_id = $1 FOR UPDATE
             ),
             settled AS (
                 UPDATE payments SET ",
            $set,
            ", updated_at = now()
                 WHERE saga_id = $2 AND status = 'charging'
                   AND EXISTS (SELECT 1 FROM claim WHERE reply IS NULL)
                 RETURNING saga_id
             ),
             recorded AS (
                 UPDATE inbox SET reply = $3
                 WHERE message_id = $1 AND EXISTS (SELECT 1 FROM settled)
                 RETURNING message_id
             )
             SELECT EXISTS (SELECT 1 FROM recorded)"
        )
    };
}

/// A charge's second phase whole, in one statement: settles the payment
/// as `settled` says and records `reply` for `command`, or, when the
/// payment moved on (another attempt settled it, a refund cancelled it)
/// or the command was answered meanwhile, writes nothing (`false`).
pub async fn settle_charge_with_reply(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
    settled: &ChargeSettled<'_>,
    reply: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let query = match settled {
        ChargeSettled::Charged(charge) => sqlx::query_scalar(settling_with_reply!(
            "status = 'charged', amount_cents = $4, currency = $5, payment_method = $6,
             customer_id = $7, provider_reference = $8"
        ))
        .bind(command.message_id)
        .bind(command.saga_id)
        .bind(reply)
        .bind(charge.amount_cents.get())
        .bind(charge.currency.as_str())
        .bind(charge.payment_method)
        .bind(charge.customer_id.as_str())
        .bind(charge.reference),
        ChargeSettled::Declined { reason, detail } => sqlx::query_scalar(settling_with_reply!(
            "status = 'declined', amount_cents = 0, rejection_reason = $4,
             rejection_detail = $5"
        ))
        .bind(command.message_id)
        .bind(command.saga_id)
        .bind(reply)
        .bind(*reason)
        .bind(*detail),
        ChargeSettled::ProviderFailed => sqlx::query_scalar(settling_with_reply!(
            "transient_failures = transient_failures + 1"
        ))
        .bind(command.message_id)
        .bind(command.saga_id)
        .bind(reply),
    };
    query.fetch_one(&mut *conn).await
}

/// Runs `statement`, which writes the saga's one payment row or nothing;
/// whether it wrote it.
async fn wrote_the_row(
    conn: &mut PgConnection,
    statement: Query<'_, Postgres, PgArguments>,
) -> Result<bool, sqlx::Error> {
    Ok(statement.execute(&mut *conn).await?.rows_affected() == 1)
}

/// Writes a `refunded` row with nothing charged, so that a late charge
/// does nothing; `false` when a row was there first.
pub async fn write_refund_tombstone(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let tombstone = sqlx::query(
        "INSERT INTO payments (saga_id, status) VALUES ($1, 'refunded')
         ON CONFLICT (saga_id) DO NOTHING",
    );
    wrote_the_row(conn, tombstone.bind(saga_id)).await
}

pub async fn mark_refunding(conn: &mut PgConnection, saga_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments SET status = 'refunding', updated_at = now() WHERE saga_id = $1")
        .bind(saga_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What an approved charge is recorded with.
pub struct ApprovedCharge<'a> {
    pub saga_id: Uuid,
    pub reference: Uuid,
    pub amount_cents: Cents,
    pub currency: &'a Currency,
    pub payment_method: &'a str,
    pub customer_id: &'a CustomerId,
}

/// Records an approved charge on a payment still `charging`; `false` when
/// it moved on (another attempt settled it, a refund cancelled it) or is
/// gone. The update takes the row's lock itself: no read before it.
pub async fn record_charged(
    conn: &mut PgConnection,
    charge: &ApprovedCharge<'_>,
) -> Result<bool, sqlx::Error> {
    let statement = sqlx::query(
        "UPDATE payments SET status = 'charged', amount_cents = $2, currency = $3,
             payment_method = $4, customer_id = $5, provider_reference = $6,
             updated_at = now()
         WHERE saga_id = $1 AND status = 'charging'",
    )
    .bind(charge.saga_id)
    .bind(charge.amount_cents.get())
    .bind(charge.currency.as_str())
    .bind(charge.payment_method)
    .bind(charge.customer_id.as_str())
    .bind(charge.reference);
    wrote_the_row(conn, statement).await
}

/// Records a declined charge on a payment still `charging`; `false` as for
/// [`record_charged`].
pub async fn record_declined(
    conn: &mut PgConnection,
    saga_id: Uuid,
    reason: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let statement = sqlx::query(
        "UPDATE payments SET status = 'declined', amount_cents = 0, rejection_reason = $2,
             rejection_detail = $3, updated_at = now()
         WHERE saga_id = $1 AND status = 'charging'",
    )
    .bind(saga_id)
    .bind(reason)
    .bind(detail);
    wrote_the_row(conn, statement).await
}

/// Counts a transient provider failure on a payment still `charging`: what
/// `sim_transient_N` and real backoff policies need; the intent stays for
/// the next try. `false` as for [`record_charged`].
pub async fn count_provider_failure(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let statement = sqlx::query(
        "UPDATE payments SET transient_failures = transient_failures + 1, updated_at = now()
         WHERE saga_id = $1 AND status = 'charging'",
    )
    .bind(saga_id);
    wrote_the_row(conn, statement).await
}

/// Records what a refund returned in `refunded_cents`. `amount_cents`
/// keeps what was charged, so that a refund short of the charge shows in
/// the books (and to the auditor) rather than netting them to zero. A
/// charge never recorded as approved (the refund overtook it, or found it
/// at the provider) was what the refund returned: everything that moved
/// under its key, or nothing when the provider voided it.
pub async fn record_refunded(
    conn: &mut PgConnection,
    saga_id: Uuid,
    amount_cents: Cents,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET status = 'refunded', refunded_cents = $2,
             amount_cents = CASE WHEN provider_reference IS NULL THEN $2 ELSE amount_cents END,
             updated_at = now()
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(amount_cents.get())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
