//! The worker inbox: one row per command message handled, holding the reply
//! that was sent for it.

use saga_shared::messages::{Command, Outcome};
use saga_shared::Envelope;
use sqlx::PgConnection;

/// Claims `command` for this transaction. `Some(reply)` means it was handled
/// before (the recorded reply is to be sent again, nothing else done). A
/// concurrent duplicate blocks on the primary key until the first commits.
/// A claim without a reply (its external call was cut short) is claimed
/// again: the handler's first phase finds its intent and resumes it.
pub async fn claim(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (message_id, saga_id, step, attempt) VALUES ($1, $2, $3, $4)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(command.message_id)
    .bind(command.saga_id)
    .bind(command.step.routing_key())
    .bind(command.attempt as i32)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let reply: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT reply FROM inbox WHERE message_id = $1 FOR UPDATE")
            .bind(command.message_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(reply)
}

/// Records the reply for a claimed command, in the same transaction as its
/// effect. When a concurrent delivery of the same message recorded one first
/// (both resumed one unanswered claim), that reply wins, so a message is
/// only ever answered one way.
pub async fn record(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
    reply: &Envelope<Outcome>,
) -> Result<serde_json::Value, sqlx::Error> {
    let body: serde_json::Value =
        serde_json::from_slice(&reply.encode()).expect("an encoded envelope is JSON");
    let recorded: Option<serde_json::Value> = sqlx::query_scalar(
        "WITH first AS (
             UPDATE inbox SET reply = $2 WHERE message_id = $1 AND reply IS NULL
             RETURNING reply
         )
         SELECT coalesce((SELECT reply FROM first), (SELECT reply FROM inbox WHERE message_id = $1))",
    )
    .bind(command.message_id)
    .bind(&body)
    .fetch_one(&mut *conn)
    .await?;
    Ok(recorded.unwrap_or(body))
}

/// Locks a claimed command's inbox row. A second transaction of the same
/// command takes it before any row of its effect, as the first took it with
/// its claim: two deliveries of one message then always lock in the same
/// order and never deadlock.
pub async fn lock(conn: &mut PgConnection, command: &Envelope<Command>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM inbox WHERE message_id = $1 FOR UPDATE")
        .bind(command.message_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
