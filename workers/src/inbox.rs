//! The worker inbox: one row per command message handled, holding the reply
//! that was sent for it.

use saga_protocol::messages::{Command, Outcome};
use saga_protocol::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

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

/// A reply as the inbox stores it (and the broker carries it).
pub fn body(reply: &Envelope<Outcome>) -> serde_json::Value {
    serde_json::from_slice(&reply.encode()).expect("an encoded envelope is JSON")
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
    let body = body(reply);
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

/// Claims each command together with its reply, in one statement and no
/// transaction: for a handler whose answer changes nothing, so nothing else
/// has to commit with the claim. Returns, in order, the reply each command
/// is to be answered with: its own, or the one recorded first (a duplicate,
/// in the inbox already or twice in `answered`), so a message is only ever
/// answered one way.
pub async fn claim_answered(
    conn: &mut PgConnection,
    answered: &[(&Envelope<Command>, Envelope<Outcome>)],
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let mut ids = Vec::with_capacity(answered.len());
    let (mut sagas, mut steps, mut attempts, mut replies) = (vec![], vec![], vec![], vec![]);
    for (command, reply) in answered {
        ids.push(command.message_id);
        sagas.push(command.saga_id);
        steps.push(command.step.routing_key());
        attempts.push(command.attempt as i32);
        replies.push(body(reply));
    }
    // A row this statement did not insert is read from its snapshot; one a
    // concurrent transaction committed while the insert waited on it is not
    // in that snapshot (NULL here) and is read again below.
    let recorded: Vec<(Uuid, Option<serde_json::Value>)> = sqlx::query_as(
        "WITH given AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::jsonb[])
                 WITH ORDINALITY AS g (message_id, saga_id, step, attempt, reply, n)
         ), claimed AS (
             INSERT INTO inbox (message_id, saga_id, step, attempt, reply)
             SELECT message_id, saga_id, step, attempt, reply FROM given ORDER BY n
             ON CONFLICT (message_id) DO NOTHING
             RETURNING message_id, reply
         )
         SELECT g.message_id,
                coalesce((SELECT c.reply FROM claimed c WHERE c.message_id = g.message_id),
                         (SELECT i.reply FROM inbox i WHERE i.message_id = g.message_id))
         FROM given g ORDER BY g.n",
    )
    .bind(&ids)
    .bind(&sagas)
    .bind(&steps)
    .bind(&attempts)
    .bind(&replies)
    .fetch_all(&mut *conn)
    .await?;
    let mut bodies = Vec::with_capacity(recorded.len());
    for (message_id, reply) in recorded {
        let reply = match reply {
            Some(reply) => reply,
            None => sqlx::query_scalar::<_, Option<serde_json::Value>>(
                "SELECT reply FROM inbox WHERE message_id = $1",
            )
            .bind(message_id)
            .fetch_one(&mut *conn)
            .await?
            // Only a claim still waiting for its external call has no
            // reply, and a handler that changes nothing makes none; should
            // one be found, the command is tried again later.
            .ok_or_else(|| {
                sqlx::Error::Protocol(format!("command {message_id} is claimed but unanswered"))
            })?,
        };
        bodies.push(reply);
    }
    Ok(bodies)
}
