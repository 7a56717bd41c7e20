//! The consumer of a worker kind's queue: each batch of deliveries decoded,
//! handled together where it can be, and every command answered.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::message::Delivery;
use saga_protocol::messages::Command;
use saga_protocol::Envelope;
use saga_shared::broker::{header, Broker};
use saga_shared::consumer::{dead_letter, run_batches_until_stopped, Batching};
use saga_shared::traceparent;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::batch::{handle_batch, Batched};
use super::context::{Context, Received};
use super::delivery::{answer, finish_call, reply_message, requeue, settle_delivery};
use super::Handler;
use crate::WorkerError;

/// Consumes until `stop`, then stops fetching, lets in-flight commands
/// finish, and returns. At most `prefetch` commands are handled at once;
/// commands that are already waiting when one arrives are handled together
/// in one transaction (see [`handle_batch`]).
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
    let handle = |deliveries| {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move { process(&ctx, deliveries, &stop).await }
    };
    let batching = Batching::WHAT_IS_THERE;
    run_batches_until_stopped(&broker, &queue, &tag, prefetch, batching, &stop, handle).await?;
    Ok(())
}

/// The command of `delivery`, or why it can never be handled here.
fn receive<H: Handler>(delivery: &Delivery) -> Result<Envelope<Command>, String> {
    match Envelope::<Command>::decode(&delivery.data) {
        Ok(command) if command.step.worker() == H::KIND => Ok(command),
        Ok(command) => Err(format!(
            "command `{}` is not for the {} worker",
            command.step,
            H::KIND.as_str()
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn command_span<H: Handler>(delivery: &Delivery, command: &Envelope<Command>) -> tracing::Span {
    let span = tracing::info_span!(
        "command",
        saga_id = %command.saga_id,
        step = %command.step,
        attempt = command.attempt,
        worker = H::KIND.as_str(),
    );
    // A child of the relay's publish, whose context the message carries.
    traceparent::continue_from(&span, header(delivery, traceparent::HEADER).as_deref());
    span
}

async fn process<H: Handler>(
    ctx: &Context<H>,
    deliveries: Vec<Delivery>,
    stop: &CancellationToken,
) {
    let mut received = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match receive::<H>(&delivery) {
            Ok(command) => received.push(Received {
                span: command_span::<H>(&delivery, &command),
                delivery,
                command,
            }),
            Err(reason) => dead_letter(&ctx.broker, &delivery, &reason).await,
        }
    }
    if received.len() <= 1 {
        // Alone, a command needs no savepoint: the plain path is shortest.
        for one in received {
            answer(ctx, &one.delivery, &one.command, stop)
                .instrument(one.span)
                .await;
        }
        return;
    }
    let commands: Vec<&Envelope<Command>> = received.iter().map(|r| &r.command).collect();
    // Boxed here, where its lifetimes are concrete, so the spawned batch
    // future is provably `Send`.
    let handled = match handle_batch(&ctx.handler, &ctx.pool, &commands)
        .boxed()
        .await
    {
        Ok(handled) => handled,
        Err(error) => {
            // Nothing of the batch committed (or, if the commit's answer was
            // lost, the inbox answers what did): each goes on alone.
            tracing::warn!(%error, commands = received.len(), "batch failed; handling each alone");
            let mut alone = Vec::with_capacity(received.len());
            for one in &received {
                alone.push(
                    answer(ctx, &one.delivery, &one.command, stop)
                        .instrument(one.span.clone())
                        .boxed(),
                );
            }
            futures::future::join_all(alone).await;
            return;
        }
    };
    let (mut replied, mut outgoing) = (Vec::new(), Vec::new());
    let mut later = Vec::new();
    for (one, handled) in received.iter().zip(handled) {
        match handled {
            Batched::Reply(reply) => {
                outgoing.push(reply_message(
                    ctx,
                    &one.delivery,
                    &one.command,
                    &reply,
                    &one.span,
                ));
                replied.push(one);
            }
            Batched::Call(call) => later.push((one, Some(call))),
            Batched::Alone(error) => {
                tracing::info!(parent: &one.span, %error, "command failed in its batch; handling it alone");
                later.push((one, None));
            }
            Batched::NotTried => later.push((one, None)),
            Batched::Panicked => {
                tracing::error!(parent: &one.span, "handler panicked; command requeued");
                requeue(&one.delivery).await;
            }
        }
    }
    // Every reply is sent before any confirm is awaited: one wait for all.
    // The external calls start meanwhile.
    let replies = async {
        if outgoing.is_empty() {
            return;
        }
        let confirmed = ctx.broker.publish_all(&outgoing, CONFIRM_WITHIN).await;
        for (one, confirmed) in replied.iter().zip(confirmed) {
            settle_delivery(&one.delivery, confirmed).await;
        }
    };
    let mut rest = Vec::with_capacity(later.len());
    for (one, call) in later {
        let span = one.span.clone();
        rest.push(match call {
            Some(call) => finish_call(ctx, one, call, stop).instrument(span).boxed(),
            None => answer(ctx, &one.delivery, &one.command, stop)
                .instrument(span)
                .boxed(),
        });
    }
    futures::future::join(replies, futures::future::join_all(rest)).await;
}

/// How long a batch's replies may wait for their confirms; an unconfirmed
/// reply's command is requeued and answered again from the inbox.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);
