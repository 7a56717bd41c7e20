//! A call to another party made between the two transactions of a
//! command, and the recording of its answer.

use std::future::Future;

use futures::future::BoxFuture;
use saga_protocol::messages::{Command, Outcome};
use saga_protocol::Envelope;
use sqlx::{Connection, PgConnection, PgPool};

use crate::inbox;

/// A call to another party: it owns what it needs (it outlives the first
/// transaction) and yields how to record its answer.
pub struct ExternalCall(BoxFuture<'static, Settlement>);

impl ExternalCall {
    pub fn new(call: impl Future<Output = Settlement> + Send + 'static) -> Self {
        ExternalCall(Box::pin(call))
    }

    /// Makes the call. Hold no connection while it runs.
    pub async fn run(self) -> Settlement {
        self.0.await
    }
}

/// Records an external call's answer in the second transaction and returns
/// the outcome to reply. It must be idempotent: a redelivered command may
/// have settled the same call meanwhile.
pub struct Settlement {
    settle: Box<Settle>,
    at_once: Option<Box<SettleAtOnce>>,
}

/// The boxed form of a settlement: records in the connection's transaction.
type Settle =
    dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>> + Send;

/// The boxed form of a one-statement settlement: see
/// [`Settlement::with_one_statement`].
type SettleAtOnce = dyn for<'c> FnOnce(
        &'c mut PgConnection,
        &'c Envelope<Command>,
    ) -> BoxFuture<'c, Result<Option<serde_json::Value>, sqlx::Error>>
    + Send;

impl Settlement {
    pub fn new(
        settle: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>>
            + Send
            + 'static,
    ) -> Self {
        Settlement {
            settle: Box::new(settle),
            at_once: None,
        }
    }

    /// Adds the common case as one statement: it takes the command's inbox
    /// row lock first (as the general path does), records the answer and
    /// the reply, all or nothing, and returns the reply body; `None` when
    /// it did not apply and wrote nothing. The general settlement then
    /// runs as before.
    pub fn with_one_statement(
        mut self,
        at_once: impl for<'c> FnOnce(
                &'c mut PgConnection,
                &'c Envelope<Command>,
            )
                -> BoxFuture<'c, Result<Option<serde_json::Value>, sqlx::Error>>
            + Send
            + 'static,
    ) -> Self {
        self.at_once = Some(Box::new(at_once));
        self
    }

    /// Records the answer in `conn`'s transaction; the outcome to reply.
    pub async fn settle(self, conn: &mut PgConnection) -> Result<Outcome, sqlx::Error> {
        (self.settle)(conn).await
    }
}

/// The second phase: records an external call's answer and the reply, in
/// one statement when the settlement has one that applies, else in a
/// transaction that takes the inbox row's lock first. The reply body.
pub(super) async fn record_settlement(
    pool: &PgPool,
    command: &Envelope<Command>,
    settlement: Settlement,
) -> Result<serde_json::Value, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Settlement { settle, at_once } = settlement;
    if let Some(at_once) = at_once {
        if let Some(body) = at_once(&mut conn, command).await? {
            tracing::info!("command handled after an external call, in one statement");
            return Ok(body);
        }
    }
    let mut tx = conn.begin().await?;
    inbox::lock(&mut tx, command).await?;
    let outcome = settle(&mut tx).await?;
    tracing::info!(
        outcome = outcome.label(),
        "command handled after an external call"
    );
    let body = inbox::record(&mut tx, command, &command.reply(outcome)).await?;
    tx.commit().await?;
    Ok(body)
}
