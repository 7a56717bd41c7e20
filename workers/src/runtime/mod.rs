//! The worker runtime: consume a worker kind's queue, run each command's
//! handler in one transaction with the inbox (or, for a call to another
//! party, in two around that call), publish the reply with a confirm, then
//! ack. A handler may write its common case as one statement that is the
//! whole transaction (see [`Handler::at_once`]); the runtime tries it
//! first and falls back to the general path when it does not apply.

mod batch;
mod command;
mod consumer;
mod context;
mod delivery;
mod settlement;

use std::future::Future;

use saga_protocol::messages::{reason, Command, Outcome};
use saga_protocol::{Envelope, WorkerKind};
use sqlx::PgConnection;

pub use batch::{handle_batch, Batched};
pub use command::handle_command;
pub use consumer::run_worker_until_stopped;
pub use settlement::{ExternalCall, Settlement};

/// A worker's business rules. `handle` runs inside the transaction that also
/// records the inbox row, so its effect and the reply commit together. An
/// `Err` means infrastructure failed: nothing commits and the command is
/// tried again.
///
/// A worker whose effect happens at another party (the payment provider)
/// cannot put that effect in our transaction, so it overrides [`decide`]
/// instead: its first phase commits an intent with the inbox claim, the
/// runtime makes the external call holding no connection, and a second
/// transaction records the outcome and the reply.
///
/// [`decide`]: Handler::decide
pub trait Handler: Send + Sync + 'static {
    const KIND: WorkerKind;

    /// True for a handler that changes nothing: its answer comes from
    /// reads alone, so no effect has to commit with the inbox claim. The
    /// runtime then reads outside any transaction and records the claim
    /// with its reply in one statement (a duplicate is answered with the
    /// reply recorded first), which saves the transaction and two of its
    /// statements per command.
    const READS_ONLY: bool = false;

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Outcome, sqlx::Error>> + Send + 'a;

    /// The common case of a command as one statement: inbox claim, effect
    /// (or, for an external call, its committed intent) and recorded reply,
    /// all or nothing. Outside a transaction that statement is the whole
    /// transaction, so the command costs one round trip instead of a
    /// `BEGIN`, a claim, the handler's statements, a record and a `COMMIT`.
    ///
    /// `None`: the case did not apply (a duplicate, an existing row, not
    /// enough stock, the outage switch...) and the statement wrote nothing
    /// but, at most, a bare inbox claim (no reply, no effect), which the
    /// general path takes over as it takes over the claim of a call cut
    /// short. The runtime then runs the general path on the same
    /// connection. A unique violation means it lost a race to a concurrent
    /// command; outside a transaction nothing of it committed and the
    /// general path runs too.
    fn at_once<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Option<AtOnce>, sqlx::Error>> + Send + 'a {
        let _ = (conn, command);
        async { Ok(None) }
    }

    /// The first phase, in the inbox transaction. One-phase workers answer
    /// at once through [`Handler::handle`].
    fn decide<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Decision, sqlx::Error>> + Send + 'a {
        async move { self.handle(conn, command).await.map(Decision::Answer) }
    }
}

/// What the first phase of a command concluded.
pub enum Decision {
    /// The answer, to record and send now.
    Answer(Outcome),
    /// Commit what the first phase wrote (an intent), then make this call
    /// with no transaction open and no connection held.
    Call(ExternalCall),
}

/// What a handler's one-statement path did.
pub enum AtOnce {
    /// The command is claimed, done and its reply recorded: the reply body.
    Replied(serde_json::Value),
    /// The command is claimed and its intent written: the call remains.
    Call(ExternalCall),
}

/// A handler's answer to a command of another worker kind. The runtime
/// dead-letters those before any handler sees them; a handler's catch-all
/// arm refuses with this rather than leave the command to be retried.
pub fn not_handled(kind: WorkerKind, command: &Command) -> Outcome {
    Outcome::rejected(
        reason::INVALID_COMMAND,
        format!(
            "the {} worker does not handle `{}`",
            kind.as_str(),
            command.step()
        ),
    )
}
