//! One delivery answered: its reply published with a confirm, then the
//! delivery acked, requeued or dead-lettered.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use saga_protocol::messages::Command;
use saga_protocol::Envelope;
use saga_shared::broker::{header, BrokerError, Outgoing};
use saga_shared::consumer::{dead_letter, hold_until_settled, Settled};
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_shared::traceparent;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::command::handle_command;
use super::context::{Context, Received};
use super::settlement::record_settlement;
use super::{ExternalCall, Handler};

/// Acks a command whose reply the broker confirmed; requeues it otherwise
/// (its redelivery is answered from the inbox).
pub(super) async fn settle_delivery(delivery: &Delivery, confirmed: Result<(), BrokerError>) {
    match confirmed {
        Ok(()) => {
            // One ack per delivery: a `multiple` ack would also ack what
            // other batches on this channel are still handling.
            if !matches!(delivery.ack(BasicAckOptions::default()).await, Ok(true)) {
                tracing::warn!(
                    "ack not sent; the command will be redelivered and answered from the inbox"
                );
            }
        }
        Err(error) => {
            tracing::error!(%error, "reply not confirmed; requeueing the command");
            requeue(delivery).await;
        }
    }
}

pub(super) async fn requeue(delivery: &Delivery) {
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

/// The second phase of a command whose first phase committed with its
/// batch. A failure here runs the whole command again alone: the first
/// phase then finds its intent and resumes it.
pub(super) async fn finish_call<H: Handler>(
    ctx: &Context<H>,
    one: &Received,
    call: ExternalCall,
    stop: &CancellationToken,
) {
    let settled = async {
        let settlement = call.run().await;
        record_settlement(&ctx.pool, &one.command, settlement).await
    }
    .await;
    match settled {
        Ok(reply) => {
            let outgoing = reply_message(ctx, &one.delivery, &one.command, &reply, &one.span);
            let confirmed = ctx.broker.publish(&outgoing).await;
            settle_delivery(&one.delivery, confirmed).await;
        }
        Err(error) => {
            tracing::warn!(%error, "settling after the external call failed; handling it again");
            answer(ctx, &one.delivery, &one.command, stop).await;
        }
    }
}

pub(super) async fn answer<H: Handler>(
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
    let outgoing = reply_message(ctx, delivery, command, &reply, &tracing::Span::current());
    let confirmed = ctx.broker.publish(&outgoing).await;
    settle_delivery(delivery, confirmed).await;
}

/// The reply message for a recorded reply body.
pub(super) fn reply_message<H: Handler>(
    ctx: &Context<H>,
    delivery: &Delivery,
    command: &Envelope<Command>,
    reply: &serde_json::Value,
    span: &tracing::Span,
) -> Outgoing {
    let message_id = reply
        .get("message_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    Outgoing {
        exchange: ctx.broker.topology().reply_exchange(),
        routing_key: REPLY_ROUTING_KEY.to_owned(),
        body: serde_json::to_vec(reply).expect("JSON value serializes"),
        message_id,
        saga_id: command.saga_id,
        message_type: command.step.reply_type(),
        // The orchestrator's handling of the reply becomes a child of this
        // command's span; without an exporter the command's own value
        // travels on.
        traceparent: traceparent::of(span)
            .or_else(|| header(delivery, traceparent::HEADER))
            .unwrap_or_else(|| traceparent::for_saga(command.saga_id)),
    }
}

async fn handle_once<H: Handler>(
    ctx: &Context<H>,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    handle_command(&ctx.handler, &ctx.pool, command).await
}
