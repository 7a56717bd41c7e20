//! Reservations past `RETENTION_DAYS` leave the database. A released one
//! (or a tombstone) held nothing; an active one is a completed checkout's
//! stock, shipped long ago, so its quantities leave `on_hand` in the same
//! transaction: on hand = available + held stays true, and `available`
//! does not move.

use sqlx::PgPool;
use uuid::Uuid;

/// Deletes up to `limit` reservations of sagas with ids below `below`,
/// oldest first, in one transaction; how many went. Rows a command holds
/// locked are skipped (taken by the next run).
pub async fn delete_reservations_below(
    pool: &PgPool,
    below: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let gone: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT saga_id, status = 'active' FROM reservations
         WHERE saga_id < $1 ORDER BY saga_id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(below)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if gone.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = gone.iter().map(|(id, _)| *id).collect();
    let active: Vec<Uuid> = gone
        .iter()
        .filter(|(_, active)| *active)
        .map(|(id, _)| *id)
        .collect();
    // Products are locked in SKU order, as a reserve locks them: the two
    // wait for each other, never deadlock.
    sqlx::query(
        "WITH shipped AS (
             SELECT sku, sum(quantity)::int4 AS quantity FROM reservation_lines
             WHERE saga_id = ANY($1) GROUP BY sku
         ),
         locked AS (
             SELECT p.sku FROM products p WHERE p.sku IN (SELECT sku FROM shipped)
             ORDER BY p.sku FOR UPDATE
         )
         UPDATE products p SET on_hand = p.on_hand - s.quantity, updated_at = now()
         FROM shipped s, locked l WHERE p.sku = s.sku AND l.sku = s.sku",
    )
    .bind(&active)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM reservation_lines WHERE saga_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM reservations WHERE saga_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}
