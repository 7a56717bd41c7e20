//! The reply consumer: every orchestrator instance consumes the reply
//! queue; each reply advances its saga (one conditional write of state,
//! timeline and commands, which the store hands to the relay once
//! committed), then is acked.
//!
//! Replies that are ready together are applied together: one transaction,
//! one commit, then each is acked. Nothing waits to fill a batch, so a
//! lone reply goes alone, as fast as before; under load the replies that
//! arrived while a batch committed form the next one (at most
//! [`BATCHES_AT_ONCE`] batches run at once, so that they do).

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use saga_protocol::messages::Outcome;
use saga_protocol::printable;
use saga_protocol::Envelope;
use saga_shared::broker::{header, Broker, BrokerError};
use saga_shared::consumer::{
    dead_letter, hold_until_settled, run_batches_until_stopped, Batching, Settled,
};
use saga_shared::failure::Classify;
use saga_shared::traceparent;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::reply_senders::ReplySenders;
use crate::store::{BatchedReply, Store, StoreError};

/// The most replies one transaction applies.
pub const MAX_BATCH: usize = 64;
/// Batches applied at once: more would only queue on two cores, fewer
/// would leave the database idle while a batch's commit is flushed.
const BATCHES_AT_ONCE: usize = 2;

pub async fn run_reply_consumer_until_stopped(
    store: Store,
    broker: Arc<Broker>,
    senders: Arc<ReplySenders>,
    prefetch: u16,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let queue = broker.topology().reply_queue();
    let tag = format!("orchestrator-{}", Uuid::new_v4().simple());
    let batching = Batching {
        max: MAX_BATCH,
        at_once: Some(BATCHES_AT_ONCE),
    };
    let handle = |batch: Vec<Delivery>| {
        let (store, broker, stop) = (store.clone(), broker.clone(), stop.clone());
        let senders = senders.clone();
        async move { apply_batch(&store, &broker, &senders, batch, &stop).await }
    };
    run_batches_until_stopped(&broker, &queue, &tag, prefetch, batching, &stop, handle).await
}

/// A decoded reply, its delivery and its span.
struct Ready {
    delivery: Delivery,
    reply: Envelope<Outcome>,
    span: tracing::Span,
}

async fn apply_batch(
    store: &Store,
    broker: &Broker,
    senders: &ReplySenders,
    batch: Vec<Delivery>,
    stop: &CancellationToken,
) {
    let mut ready = Vec::with_capacity(batch.len());
    for delivery in batch {
        match Envelope::<Outcome>::decode(&delivery.data) {
            Ok(reply) => {
                let sender = delivery.properties.user_id().as_ref().map(|u| u.as_str());
                if let Some(reason) = senders.refuse(reply.step, sender) {
                    metrics::counter!(crate::metrics::REPLIES_REFUSED, "step" => reply.step.routing_key())
                        .increment(1);
                    dead_letter(broker, &delivery, &reason).await;
                    continue;
                }
                let span = reply_span(&reply, &delivery);
                ready.push(Ready {
                    delivery,
                    reply,
                    span,
                });
            }
            Err(error) => dead_letter(broker, &delivery, &error.to_string()).await,
        }
    }
    if ready.len() > 1 {
        // Sagas written in the order of their ids, in every batch: two
        // batches never wait for each other's rows in a cycle. The sort is
        // stable, so two replies of one saga keep their order.
        ready.sort_by_key(|r| r.reply.saga_id);
        let replies: Vec<BatchedReply> = ready
            .iter()
            .map(|r| BatchedReply {
                reply: &r.reply,
                span: r.span.clone(),
            })
            .collect();
        match store.apply_replies(&replies).await {
            Ok(results) => {
                drop(replies);
                metrics::counter!(crate::metrics::REPLY_COMMITS).increment(1);
                for (r, result) in ready.into_iter().zip(results) {
                    settle_applied(broker, &r.delivery, &r.reply, result)
                        .instrument(r.span)
                        .await;
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, replies = ready.len(), "reply batch failed; applying its replies one at a time");
            }
        }
    }
    for r in ready {
        apply_alone(store, broker, &r.delivery, &r.reply, stop)
            .instrument(r.span)
            .await;
    }
}

/// Acks a reply its batch applied, or dead-letters one it refused alone.
async fn settle_applied(
    broker: &Broker,
    delivery: &Delivery,
    reply: &Envelope<Outcome>,
    result: Result<(), StoreError>,
) {
    match result {
        Ok(()) => {
            count(reply);
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            let reason = printable(&error.describe()).into_owned();
            tracing::error!(%reason, "message can never be handled; dead-lettering it");
            dead_letter(broker, delivery, &reason).await;
        }
    }
}

fn reply_span(reply: &Envelope<Outcome>, delivery: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "reply",
        saga_id = %reply.saga_id,
        step = %reply.step,
        attempt = reply.attempt,
        outcome = reply.payload.label(),
    );
    // A child of the worker's command span, whose context the reply carries.
    traceparent::continue_from(&span, header(delivery, traceparent::HEADER).as_deref());
    span
}

fn count(reply: &Envelope<Outcome>) {
    metrics::counter!(
        crate::metrics::REPLIES,
        "step" => reply.step.routing_key(),
        "outcome" => reply.payload.label()
    )
    .increment(1);
}

/// One reply in its own transaction, held and retried while it fails
/// transiently, dead-lettered if it never can be applied.
async fn apply_alone(
    store: &Store,
    broker: &Broker,
    delivery: &Delivery,
    reply: &Envelope<Outcome>,
    stop: &CancellationToken,
) {
    match hold_until_settled(delivery, stop, || store.apply_reply(reply)).await {
        Settled::Done(()) => {
            metrics::counter!(crate::metrics::REPLY_COMMITS).increment(1);
            count(reply);
        }
        Settled::Permanent(reason) => return dead_letter(broker, delivery, &reason).await,
        Settled::Stopped => return,
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
}
