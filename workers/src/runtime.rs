//! The worker runtime: consume a worker kind's queue, run each command's
//! handler in one transaction with the inbox (or, for a call to another
//! party, in two around that call), publish the reply with a confirm, then
//! ack.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use saga_shared::broker::{header, Broker, Outgoing};
use saga_shared::consumer::{dead_letter, hold_until_settled, run_consumer_until_stopped, Settled};
use saga_shared::messages::{reason, Command, Outcome};
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_shared::{traceparent, Envelope, WorkerKind};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::inbox;
use crate::WorkerError;

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

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Outcome, sqlx::Error>> + Send + 'a;

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
pub struct Settlement(Box<Settle>);

/// The boxed form of a settlement: records in the connection's transaction.
type Settle =
    dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>> + Send;

impl Settlement {
    pub fn new(
        settle: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>>
            + Send
            + 'static,
    ) -> Self {
        Settlement(Box::new(settle))
    }

    /// Records the answer in `conn`'s transaction; the outcome to reply.
    pub async fn settle(self, conn: &mut PgConnection) -> Result<Outcome, sqlx::Error> {
        (self.0)(conn).await
    }
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

struct Context<H> {
    handler: H,
    pool: PgPool,
    broker: Arc<Broker>,
}

/// Consumes until `stop`, then stops fetching, lets in-flight commands
/// finish, and returns. At most `prefetch` commands are handled at once.
pub async fn run_worker_until_stopped<H: Handler>(
    handler: H,
    pool: PgPool,
    broker: Arc<Broker>,
    prefetch: u16,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let queue = broker.topology().command_queue(H::KIND);
    let tag = format!("{}-{}", H::KIND.as_str(), Uuid::new_v4().simple());
    let ctx = Arc::new(Context {
        handler,
        pool,
        broker: broker.clone(),
    });
    let handle = |delivery| {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move { process(&ctx, delivery, &stop).await }
    };
    run_consumer_until_stopped(&broker, &queue, &tag, prefetch, &stop, handle).await?;
    Ok(())
}

async fn process<H: Handler>(ctx: &Context<H>, delivery: Delivery, stop: &CancellationToken) {
    let command = match Envelope::<Command>::decode(&delivery.data) {
        Ok(command) if command.step.worker() == H::KIND => command,
        Ok(command) => {
            let reason = format!(
                "command `{}` is not for the {} worker",
                command.step,
                H::KIND.as_str()
            );
            return dead_letter(&ctx.broker, &delivery, &reason).await;
        }
        Err(error) => return dead_letter(&ctx.broker, &delivery, &error.to_string()).await,
    };
    let span = tracing::info_span!(
        "command",
        saga_id = %command.saga_id,
        step = %command.step,
        attempt = command.attempt,
        worker = H::KIND.as_str(),
    );
    // A child of the relay's publish, whose context the message carries.
    traceparent::continue_from(&span, header(&delivery, traceparent::HEADER).as_deref());
    answer(ctx, &delivery, &command, stop)
        .instrument(span)
        .await
}

async fn answer<H: Handler>(
    ctx: &Context<H>,
    delivery: &Delivery,
    command: &Envelope<Command>,
    stop: &CancellationToken,
) {
    let reply = match hold_until_settled(delivery, stop, || handle_once(ctx, command)).await {
        Settled::Done(reply) => reply,
        Settled::Permanent(reason) => return dead_letter(&ctx.broker, delivery, &reason).await,
        Settled::Stopped => return,
    };
    let message_id = reply
        .get("message_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    let outgoing = Outgoing {
        exchange: ctx.broker.topology().reply_exchange(),
        routing_key: REPLY_ROUTING_KEY.to_owned(),
        body: serde_json::to_vec(&reply).expect("JSON value serializes"),
        message_id,
        saga_id: command.saga_id,
        message_type: command.step.reply_type(),
        // The orchestrator's handling of the reply becomes a child of this
        // command's span; without an exporter the command's own value
        // travels on.
        traceparent: traceparent::of(&tracing::Span::current())
            .or_else(|| header(delivery, traceparent::HEADER))
            .unwrap_or_else(|| traceparent::for_saga(command.saga_id)),
    };
    match ctx.broker.publish(&outgoing).await {
        Ok(()) => {
            if !matches!(delivery.ack(BasicAckOptions::default()).await, Ok(true)) {
                tracing::warn!(
                    "ack not sent; the command will be redelivered and answered from the inbox"
                );
            }
        }
        Err(error) => {
            tracing::error!(%error, "reply not confirmed; requeueing the command");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

async fn handle_once<H: Handler>(
    ctx: &Context<H>,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    handle_command(&ctx.handler, &ctx.pool, command).await
}

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
    let mut tx = pool.begin().await?;
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
    let settlement = call.run().await;
    let mut tx = pool.begin().await?;
    let outcome = settlement.settle(&mut tx).await?;
    tracing::info!(
        outcome = outcome.label(),
        "command handled after an external call"
    );
    let body = inbox::record(&mut tx, command, &command.reply(outcome)).await?;
    tx.commit().await?;
    Ok(body)
}
