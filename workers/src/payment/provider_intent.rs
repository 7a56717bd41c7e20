//! The provider's PaymentIntent for a saga's charge, in our books: written
//! once, between creating the PaymentIntent and confirming it, each
//! statement on its own (no transaction is held across a provider call).
//! The first id written wins; a refund that finds none writes [`VOID`], so
//! that a charge still creating its PaymentIntent can never confirm one.

use sqlx::PgPool;
use uuid::Uuid;

/// The mark a refund leaves where no PaymentIntent was recorded yet.
pub const VOID: &str = "void";

/// What the books hold for a saga's PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// None yet: no PaymentIntent of this saga was confirmed.
    Nothing,
    /// A refund came first; no PaymentIntent may be confirmed.
    Void,
    Intent(String),
}

impl Recorded {
    fn from_column(value: Option<String>) -> Recorded {
        match value {
            None => Recorded::Nothing,
            Some(value) if value == VOID => Recorded::Void,
            Some(id) => Recorded::Intent(id),
        }
    }
}

/// The saga's recorded PaymentIntent.
pub async fn recorded(pool: &PgPool, saga_id: Uuid) -> Result<Recorded, sqlx::Error> {
    Ok(Recorded::from_column(
        column(pool, saga_id).await?.flatten(),
    ))
}

/// The column, `None` when the saga has no payment row.
async fn column(pool: &PgPool, saga_id: Uuid) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("SELECT provider_intent_id FROM payments WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_optional(pool)
        .await
}

/// Records `value` (an id, or [`VOID`]) unless something was recorded
/// first; what the books hold afterwards, ours or the earlier one.
async fn record_first(pool: &PgPool, saga_id: Uuid, value: &str) -> Result<Recorded, sqlx::Error> {
    let written: Option<String> = sqlx::query_scalar(
        "UPDATE payments SET provider_intent_id = $2, updated_at = now()
         WHERE saga_id = $1 AND provider_intent_id IS NULL
         RETURNING provider_intent_id",
    )
    .bind(saga_id)
    .bind(value)
    .fetch_optional(pool)
    .await?;
    if written.is_some() {
        return Ok(Recorded::from_column(written));
    }
    // Read in a statement of its own, whose snapshot (unlike one taken with
    // the update's) sees what a concurrent writer committed first.
    match column(pool, saga_id).await? {
        Some(value) => Ok(Recorded::from_column(value)),
        // The row is written before any provider call and never deleted.
        None => Err(sqlx::Error::Decode(
            format!("the payment intent of saga {saga_id} is gone").into(),
        )),
    }
}

/// Records the PaymentIntent `id` created for the saga's charge.
pub async fn record(pool: &PgPool, saga_id: Uuid, id: &str) -> Result<Recorded, sqlx::Error> {
    record_first(pool, saga_id, id).await
}

/// Marks the saga's charge void where no PaymentIntent was recorded.
pub async fn void(pool: &PgPool, saga_id: Uuid) -> Result<Recorded, sqlx::Error> {
    record_first(pool, saga_id, VOID).await
}
