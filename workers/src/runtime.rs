//! The worker runtime: consume a worker kind's queue, run each command's
//! handler in one transaction with the inbox, publish the reply with a
//! confirm, then ack.

use std::future::Future;
use std::sync::Arc;

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
pub trait Handler: Send + Sync + 'static {
    const KIND: WorkerKind;

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Outcome, sqlx::Error>> + Send + 'a;
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
        traceparent: header(delivery, traceparent::HEADER)
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

/// One transaction: inbox claim, effect, recorded reply. Returns the reply
/// body to publish (the recorded one for a duplicate).
async fn handle_once<H: Handler>(
    ctx: &Context<H>,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    let mut tx = ctx.pool.begin().await?;
    if let Some(reply) = inbox::claim(&mut tx, command).await? {
        tx.commit().await?;
        tracing::info!("duplicate command: sending the recorded reply");
        return Ok(reply);
    }
    let outcome = ctx.handler.handle(&mut tx, command).await?;
    tracing::info!(outcome = outcome.label(), "command handled");
    let reply = command.reply(outcome);
    let body = inbox::record(&mut tx, command, &reply).await?;
    tx.commit().await?;
    Ok(body)
}
