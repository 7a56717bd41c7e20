//! The outage switch: one row in the payment database, so every copy of the
//! worker sees the operator's choice at its next charge or refund.

use sqlx::PgConnection;

/// The transient error every charge and refund gets while the switch is on.
pub const OUTAGE_ERROR: &str = "payment provider outage";

pub async fn is_on(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce((SELECT outage FROM provider_settings WHERE id), false)")
        .fetch_one(conn)
        .await
}

pub async fn set(conn: &mut PgConnection, on: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_settings (id, outage) VALUES (true, $1)
         ON CONFLICT (id) DO UPDATE SET outage = EXCLUDED.outage",
    )
    .bind(on)
    .execute(conn)
    .await?;
    Ok(())
}
