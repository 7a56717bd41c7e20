//! The reply consumer: every orchestrator instance consumes the reply
//! queue; each reply advances its saga (one conditional write of state,
//! timeline and commands), then is acked.

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use saga_shared::broker::{header, Broker, BrokerError};
use saga_shared::consumer::{dead_letter, hold_until_settled, run_consumer_until_stopped, Settled};
use saga_shared::messages::Outcome;
use saga_shared::{traceparent, Envelope};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::store::Store;

pub async fn run_reply_consumer_until_stopped(
    store: Store,
    broker: Arc<Broker>,
    relay: Arc<Notify>,
    prefetch: u16,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let queue = broker.topology().reply_queue();
    let tag = format!("orchestrator-{}", Uuid::new_v4().simple());
    let handle = |delivery| {
        let (store, broker, relay, stop) =
            (store.clone(), broker.clone(), relay.clone(), stop.clone());
        async move { process(&store, &broker, &relay, delivery, &stop).await }
    };
    run_consumer_until_stopped(&broker, &queue, &tag, prefetch, &stop, handle).await
}

async fn process(
    store: &Store,
    broker: &Broker,
    relay: &Notify,
    delivery: Delivery,
    stop: &CancellationToken,
) {
    let reply = match Envelope::<Outcome>::decode(&delivery.data) {
        Ok(reply) => reply,
        Err(error) => return dead_letter(broker, &delivery, &error.to_string()).await,
    };
    let span = tracing::info_span!(
        "reply",
        saga_id = %reply.saga_id,
        step = %reply.step,
        attempt = reply.attempt,
        outcome = reply.payload.label(),
    );
    // A child of the worker's command span, whose context the reply carries.
    traceparent::continue_from(&span, header(&delivery, traceparent::HEADER).as_deref());
    async {
        match hold_until_settled(&delivery, stop, || store.apply_reply(&reply)).await {
            Settled::Done(()) => {
                metrics::counter!(
                    crate::metrics::REPLIES,
                    "step" => reply.step.routing_key(),
                    "outcome" => reply.payload.label()
                )
                .increment(1);
            }
            Settled::Permanent(reason) => return dead_letter(broker, &delivery, &reason).await,
            Settled::Stopped => return,
        }
        relay.notify_one();
        let _ = delivery.ack(BasicAckOptions::default()).await;
    }
    .instrument(span)
    .await
}
