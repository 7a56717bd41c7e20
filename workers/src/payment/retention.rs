//! Money records past `MONEY_RETENTION_DAYS` (seven years by default, what
//! bookkeeping law commonly asks) leave the database: finished payments and
//! the provider ledger's lines. A payment still in flight (`charging`,
//! `refunding`) stays, however old, until its outcome is recorded.

use sqlx::PgPool;
use uuid::Uuid;

/// Deletes up to `limit` finished payments of sagas with ids below `below`,
/// oldest first, with their ledger lines, in one transaction; how many
/// payments went.
pub async fn delete_payments_below(
    pool: &PgPool,
    below: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT saga_id FROM payments
         WHERE saga_id < $1 AND status IN ('charged', 'declined', 'refunded')
         ORDER BY saga_id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(below)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM provider_ledger WHERE saga_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM payments WHERE saga_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Deletes up to `limit` ledger lines of sagas below `below` that have no
/// payment (the simulator's books of a saga whose payment row never came).
pub async fn delete_ledger_below(
    pool: &PgPool,
    below: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM provider_ledger WHERE reference IN (
             SELECT l.reference FROM provider_ledger l
             WHERE l.saga_id < $1
               AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.saga_id = l.saga_id)
             ORDER BY l.saga_id LIMIT $2)",
    )
    .bind(below)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
