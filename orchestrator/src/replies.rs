//! The reply consumer: every orchestrator instance consumes the reply
//! queue; each reply advances its saga in one transaction, then is acked.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use saga_shared::broker::{Backoff, Broker, BrokerError};
use saga_shared::messages::Outcome;
use saga_shared::Envelope;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Applied, Store};

pub async fn run_reply_consumer_until_stopped(
    store: Store,
    broker: Arc<Broker>,
    relay: Arc<Notify>,
    prefetch: u16,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let queue = broker.topology().reply_queue();
    let tag = format!("orchestrator-{}", Uuid::new_v4().simple());
    let mut consumer = broker.consume(&queue, &tag, prefetch).await?;
    let limit = Arc::new(Semaphore::new(usize::from(prefetch)));
    let mut in_flight = JoinSet::new();
    let result = loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = stop.cancelled() => break Ok(()),
        };
        let delivery = tokio::select! {
            next = consumer.next() => next,
            _ = stop.cancelled() => break Ok(()),
        };
        match delivery {
            Some(Ok(delivery)) => {
                let (store, broker, relay, stop) =
                    (store.clone(), broker.clone(), relay.clone(), stop.clone());
                in_flight.spawn(async move {
                    process(&store, &broker, &relay, delivery, &stop).await;
                    drop(permit);
                });
            }
            Some(Err(error)) => break Err(error.into()),
            None => break Ok(()),
        }
        while in_flight.try_join_next().is_some() {}
    };
    while in_flight.join_next().await.is_some() {}
    result
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
            Ok(Applied::Advanced) => break,
            Ok(Applied::UnknownSaga) => {
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

async fn dead_letter(broker: &Broker, delivery: &Delivery, reason: &str) {
    let requeue = broker.dead_letter(delivery, reason).await.is_err();
    let _ = if requeue {
        delivery
            .nack(BasicNackOptions {
                requeue: false,
                ..Default::default()
            })
            .await
    } else {
        delivery.ack(BasicAckOptions::default()).await
    };
}
