//! The reply consumer: every orchestrator instance consumes the reply
//! queue; each reply advances its saga (one conditional write of state,
//! timeline and commands), then is acked.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use saga_shared::broker::{Backoff, Broker, BrokerError};
use saga_shared::consumer::{dead_letter, run_consumer_until_stopped};
use saga_shared::messages::Outcome;
use saga_shared::Envelope;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Store, StoreError};

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
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match store.apply_reply(&reply).await {
            Ok(()) => break,
            Err(StoreError::UnknownSaga(_)) => {
                let reason = format!("reply for unknown saga {}", reply.saga_id);
                return dead_letter(broker, &delivery, &reason).await;
            }
            Err(error) => {
                // Hold the reply while the database is away rather than
                // burn its delivery count.
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, saga_id = %reply.saga_id, "reply not applied; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {
                        let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                        return;
                    }
                }
            }
        }
    }
    relay.notify_one();
    let _ = delivery.ack(BasicAckOptions::default()).await;
}
