//! Several waiting commands handled in one transaction, each in its own
//! savepoint.

use std::panic::AssertUnwindSafe;

use futures::future::BoxFuture;
use futures::FutureExt;
use saga_protocol::messages::Command;
use saga_protocol::Envelope;
use sqlx::{PgConnection, PgPool};

use super::{AtOnce, Decision, ExternalCall, Handler};
use crate::inbox;

/// What became of one command of a batch.
pub enum Batched {
    /// Its reply, committed with the batch (recorded before, for a
    /// duplicate).
    Reply(serde_json::Value),
    /// Its first phase committed with the batch; the external call and the
    /// second phase remain.
    Call(ExternalCall),
    /// It failed; nothing of it committed. It is to be handled alone, where
    /// a transient failure is held and retried and a permanent one
    /// dead-letters it.
    Alone(sqlx::Error),
    /// Its handler panicked; nothing of it committed.
    Panicked,
    /// Not tried in the batch (an earlier command found its rows held by
    /// another transaction): to be handled alone.
    NotTried,
}

/// Opens a batch: the first command's savepoint, and how long a command in
/// a batch waits for a row lock before it leaves the batch and is handled
/// alone. Two batches may take the same rows in opposite orders (each
/// command keeps its own rows in order, a batch cannot); the bound turns
/// that deadlock into a short wait and a retry alone, where lock order
/// holds.
const BATCH_START: &str = "SET LOCAL lock_timeout = '50ms'; SAVEPOINT command";

/// Handles `commands` in one transaction with one commit. Each runs inside
/// a savepoint: one that fails is rolled back to it, alone, and the others
/// still commit. `Err` means the transaction itself failed (nothing of it
/// committed, unless only the commit's answer was lost): each command is
/// then to be handled alone.
pub async fn handle_batch<H: Handler>(
    handler: &H,
    pool: &PgPool,
    commands: &[&Envelope<Command>],
) -> Result<Vec<Batched>, sqlx::Error> {
    if H::READS_ONLY {
        return answer_reading(handler, pool, commands).await;
    }
    let mut tx = pool.begin().await?;
    // One round trip sets the lock bound and the first savepoint; each
    // command's success moves the savepoint past it in one more.
    simple(&mut tx, BATCH_START).await?;
    let mut handled = Vec::with_capacity(commands.len());
    let mut contended = false;
    for (n, command) in commands.iter().enumerate() {
        if contended {
            handled.push(Batched::NotTried);
            continue;
        }
        let step = AssertUnwindSafe(first_phase(handler, &mut tx, command).boxed())
            .catch_unwind()
            .await;
        match step {
            Ok(Ok(done)) => {
                // The last command's savepoint is released by the commit:
                // no round trip for a savepoint nothing would use.
                if n + 1 < commands.len() {
                    simple(&mut tx, "RELEASE SAVEPOINT command; SAVEPOINT command").await?;
                }
                handled.push(done);
            }
            Ok(Err(error)) => {
                simple(&mut tx, "ROLLBACK TO SAVEPOINT command").await?;
                // Another transaction holds a row this one wants: the
                // commands after it (often after the same hot stock row)
                // would each wait the whole bound too. They go alone, where
                // they queue for the row once.
                contended = is_lock_timeout(&error);
                handled.push(Batched::Alone(error));
            }
            Err(_) => {
                simple(&mut tx, "ROLLBACK TO SAVEPOINT command").await?;
                handled.push(Batched::Panicked);
            }
        }
    }
    tx.commit().await?;
    Ok(handled)
}

/// A batch for a handler that changes nothing: each command's reads on one
/// connection, outside any transaction, then every claim with its reply in
/// one statement. A command whose reads fail, or whose handler panics, is
/// not claimed; it goes alone as in any batch.
async fn answer_reading<H: Handler>(
    handler: &H,
    pool: &PgPool,
    commands: &[&Envelope<Command>],
) -> Result<Vec<Batched>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut handled = Vec::with_capacity(commands.len());
    let mut answered = Vec::with_capacity(commands.len());
    for command in commands {
        let step = AssertUnwindSafe(handler.handle(&mut conn, command).boxed())
            .catch_unwind()
            .await;
        match step {
            Ok(Ok(outcome)) => {
                tracing::info!(message_id = %command.message_id, outcome = outcome.label(), "command handled");
                answered.push((*command, command.reply(outcome)));
                // Its reply once recorded, below.
                handled.push(None);
            }
            Ok(Err(error)) => handled.push(Some(Batched::Alone(error))),
            Err(_) => handled.push(Some(Batched::Panicked)),
        }
    }
    let mut replies = if answered.is_empty() {
        Vec::new()
    } else {
        inbox::claim_answered(&mut conn, &answered).await?
    }
    .into_iter();
    Ok(handled
        .into_iter()
        .map(|done| {
            done.unwrap_or_else(|| Batched::Reply(replies.next().expect("a reply per answer")))
        })
        .collect())
}

/// SQLSTATE 55P03: a lock not granted within `lock_timeout`.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}

/// Runs `sql` (statements without parameters) in one round trip.
fn simple<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    // A query without arguments goes over the simple protocol, which
    // takes several statements at once.
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

/// Inbox claim, the handler's decision, and for an answer its recorded
/// reply, in the caller's transaction.
async fn first_phase<H: Handler>(
    handler: &H,
    conn: &mut PgConnection,
    command: &Envelope<Command>,
) -> Result<Batched, sqlx::Error> {
    // In the batch's transaction an error of the statement (a lost race
    // included) fails the command's savepoint: it goes alone, where the
    // race is seen as settled.
    match handler.at_once(conn, command).await? {
        Some(AtOnce::Replied(reply)) => {
            tracing::info!(message_id = %command.message_id, "command handled in one statement");
            return Ok(Batched::Reply(reply));
        }
        Some(AtOnce::Call(call)) => return Ok(Batched::Call(call)),
        None => {}
    }
    if let Some(reply) = inbox::claim(conn, command).await? {
        tracing::info!(message_id = %command.message_id, "duplicate command: sending the recorded reply");
        return Ok(Batched::Reply(reply));
    }
    match handler.decide(conn, command).await? {
        Decision::Answer(outcome) => {
            tracing::info!(message_id = %command.message_id, outcome = outcome.label(), "command handled");
            let body = inbox::record(conn, command, &command.reply(outcome)).await?;
            Ok(Batched::Reply(body))
        }
        Decision::Call(call) => Ok(Batched::Call(call)),
    }
}
