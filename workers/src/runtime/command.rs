//! One command handled alone: the one-statement path when it applies, else
//! the inbox claim, the handler and the recorded reply in a transaction.

use saga_protocol::messages::Command;
use saga_protocol::Envelope;
use sqlx::{Connection, PgConnection, PgPool};

use super::settlement::record_settlement;
use super::{AtOnce, Decision, Handler};
use crate::inbox;

/// Inbox claim, effect, recorded reply: one transaction for a one-phase
/// handler; for an external call, the claim and the intent commit first,
/// the call runs with no connection held, and a second transaction records
/// its outcome and the reply. Returns the reply body to publish (the
/// recorded one for a duplicate).
#[tracing::instrument(skip_all, fields(message_id = %command.message_id))]
pub async fn handle_command<H: Handler>(
    handler: &H,
    pool: &PgPool,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    if H::READS_ONLY {
        let mut conn = pool.acquire().await?;
        let outcome = handler.handle(&mut conn, command).await?;
        tracing::info!(outcome = outcome.label(), "command handled");
        let answered = [(command, command.reply(outcome))];
        let mut replies = inbox::claim_answered(&mut conn, &answered).await?;
        return Ok(replies.pop().expect("a reply per answer"));
    }
    let mut conn = pool.acquire().await?;
    match at_once(handler, &mut conn, command).await? {
        Some(AtOnce::Replied(reply)) => {
            tracing::info!("command handled in one statement");
            return Ok(reply);
        }
        Some(AtOnce::Call(call)) => {
            drop(conn);
            return record_settlement(pool, command, call.run().await).await;
        }
        None => {}
    }
    // The same connection: no second checkout from the pool.
    let mut tx = conn.begin().await?;
    if let Some(reply) = inbox::claim(&mut tx, command).await? {
        tx.commit().await?;
        tracing::info!("duplicate command: sending the recorded reply");
        return Ok(reply);
    }
    let call = match handler.decide(&mut tx, command).await? {
        Decision::Answer(outcome) => {
            tracing::info!(outcome = outcome.label(), "command handled");
            let body = inbox::record(&mut tx, command, &command.reply(outcome)).await?;
            tx.commit().await?;
            return Ok(body);
        }
        Decision::Call(call) => call,
    };
    // The claim stays without a reply: a redelivery runs the first phase
    // again, finds the intent, and the handler asks the other party what
    // became of it.
    tx.commit().await?;
    // No connection is held during the call.
    drop(conn);
    record_settlement(pool, command, call.run().await).await
}

/// The handler's one-statement path, outside any transaction. A unique
/// violation is a race lost to a concurrent command of the same saga or
/// message: the statement committed nothing, and the general path, which
/// waits for that command, answers.
async fn at_once<H: Handler>(
    handler: &H,
    conn: &mut PgConnection,
    command: &Envelope<Command>,
) -> Result<Option<AtOnce>, sqlx::Error> {
    match handler.at_once(conn, command).await {
        Err(error) if is_unique_violation(&error) => {
            tracing::info!(%error, "one-statement path lost a race; taking the general path");
            Ok(None)
        }
        done => done,
    }
}

/// SQLSTATE 23505.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}
