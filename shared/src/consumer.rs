//! Consuming a queue: bounded concurrency, a handler that panics is
//! requeued (the quorum queue's delivery limit then dead-letters a message
//! that keeps crashing it), consuming again after a lost connection, and on
//! stop: stop fetching, drain, return.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::{Backoff, Broker, BrokerError};
use crate::failure::Classify;
use saga_protocol::printable;

/// Runs `handle` for each delivery of `queue`, at most `prefetch` at once,
/// until `stop`; then lets the in-flight ones finish. `handle` owns the
/// delivery's ack or nack. A lost connection or channel does not end it:
/// it consumes again once the broker is back (deliveries that were in
/// flight are redelivered, and the inbox answers those already handled).
pub async fn run_consumer_until_stopped<F, Fut>(
    broker: &Broker,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
    stop: &CancellationToken,
    handle: F,
) -> Result<(), BrokerError>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let one = |mut batch: Vec<Delivery>| handle(batch.pop().expect("a batch is never empty"));
    run_batches_until_stopped(
        broker,
        queue,
        consumer_tag,
        prefetch,
        Batching::ONE_AT_A_TIME,
        stop,
        one,
    )
    .await
}

/// The most deliveries one batch takes: past this, a longer transaction
/// holds its row locks longer than the commits it saves are worth.
pub const MAX_BATCH: usize = 32;

/// How a consumer forms batches of what is already there.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// The most deliveries in one batch (1: one at a time).
    pub max: usize,
    /// The most batches handled at once (`None`: as many as `prefetch`
    /// allows). A bound makes the deliveries that arrive meanwhile wait and
    /// form the next batch: fewer, larger commits.
    pub at_once: Option<usize>,
}

impl Batching {
    const ONE_AT_A_TIME: Batching = Batching {
        max: 1,
        at_once: None,
    };

    /// Every delivery that is already there when one arrives (at most
    /// [`MAX_BATCH`] and the free share of `prefetch`). It never waits to
    /// fill a batch: a lone delivery is handled at once, alone. Should the
    /// handler panic, the whole batch is requeued (no ack was sent for any
    /// of it, as acks follow the batch's commit and confirms).
    pub const WHAT_IS_THERE: Batching = Batching {
        max: MAX_BATCH,
        at_once: None,
    };
}

/// The one consuming loop: batches of what is already there, as
/// `batching` says, bounded by `prefetch` deliveries in all.
pub async fn run_batches_until_stopped<F, Fut>(
    broker: &Broker,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
    batching: Batching,
    stop: &CancellationToken,
    handle: F,
) -> Result<(), BrokerError>
where
    F: Fn(Vec<Delivery>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max_batch = batching.max.max(1);
    let batches = Arc::new(Semaphore::new(
        batching.at_once.unwrap_or(usize::from(prefetch)).max(1),
    ));
    let limit = Arc::new(Semaphore::new(usize::from(prefetch)));
    let mut in_flight = JoinSet::new();
    let fresh = Backoff::reconnecting;
    let mut backoff = fresh();
    while !stop.is_cancelled() {
        let mut consumer = match broker.consume(queue, consumer_tag, prefetch).await {
            Ok(consumer) => consumer,
            Err(BrokerError::Stopped) => break,
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, %queue, ?wait, "cannot consume; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        tracing::info!(%queue, prefetch, max_batch, "consuming");
        let lost = loop {
            let batch_permit = tokio::select! {
                permit = batches.clone().acquire_owned() => permit.expect("semaphore never closes"),
                _ = stop.cancelled() => break None,
            };
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => permit.expect("semaphore never closes"),
                _ = stop.cancelled() => break None,
            };
            let first = tokio::select! {
                next = consumer.next() => next,
                _ = stop.cancelled() => break None,
            };
            let mut batch = match first {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(error)) => break Some(error.to_string()),
                None => break Some("the broker ended the consumer".to_owned()),
            };
            backoff = fresh();
            let mut permits = vec![permit];
            let mut ended = None;
            // Only what is already buffered: polling once never waits.
            while batch.len() < max_batch {
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    break;
                };
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => {
                        batch.push(delivery);
                        permits.push(permit);
                    }
                    Some(Some(Err(error))) => {
                        ended = Some(error.to_string());
                        break;
                    }
                    Some(None) => {
                        ended = Some("the broker ended the consumer".to_owned());
                        break;
                    }
                    None => break,
                }
            }
            let ackers: Vec<_> = batch.iter().map(|d| d.acker.clone()).collect();
            let handling = AssertUnwindSafe(handle(batch)).catch_unwind();
            in_flight.spawn(async move {
                if handling.await.is_err() {
                    tracing::error!(
                        deliveries = ackers.len(),
                        "handler panicked; its messages requeued"
                    );
                    for acker in ackers {
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
                drop(permits);
                drop(batch_permit);
            });
            while in_flight.try_join_next().is_some() {}
            if let Some(why) = ended {
                break Some(why);
            }
        };
        let Some(why) = lost else {
            // Drain while the consumer (and so its channel) is still open:
            // dropping it cancels the consumer and closes the channel, and
            // the in-flight acks would fail and their messages be handled
            // again elsewhere.
            while in_flight.join_next().await.is_some() {}
            break;
        };
        let wait = backoff.next_delay();
        tracing::warn!(%queue, error = %why, ?wait, "consumer lost; consuming again");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
    while in_flight.join_next().await.is_some() {}
    tracing::info!(%queue, "consumer stopped");
    Ok(())
}

/// Takes a message that can never be handled off its queue: a copy goes to
/// the dead-letter queue with `reason` in `x-error`, then the original is
/// acked, so the queue behind it keeps flowing.
pub async fn dead_letter(broker: &Broker, delivery: &Delivery, reason: &str) {
    let reason = printable(reason);
    match broker.dead_letter(delivery, &reason).await {
        Ok(()) => {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            // Reject without requeue: the queue's own dead-letter exchange
            // keeps the message, without our reason header.
            tracing::error!(%error, "could not dead-letter with a reason; rejecting");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// How trying to handle a delivery ended.
#[derive(Debug)]
pub enum Settled<T> {
    Done(T),
    /// It can never succeed: the reason, fit to store and show.
    Permanent(String),
    /// Stopped while it was failing transiently: it was requeued.
    Stopped,
}

/// The one retry loop of every consumer. Tries `attempt` until it succeeds
/// or fails permanently; a transient failure holds the delivery (no ack,
/// no nack: a nack would count towards the delivery limit and dead-letter
/// good messages during an outage) and tries again with backoff. On stop
/// the delivery is requeued for another consumer.
pub async fn hold_until_settled<T, E, F, Fut>(
    delivery: &Delivery,
    stop: &CancellationToken,
    mut attempt: F,
) -> Settled<T>
where
    E: Classify,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::holding();
    loop {
        let error = match attempt().await {
            Ok(done) => return Settled::Done(done),
            Err(error) if error.is_permanent() => {
                let reason = printable(&error.describe()).into_owned();
                tracing::error!(%reason, "message can never be handled; dead-lettering it");
                return Settled::Permanent(reason);
            }
            Err(error) => error,
        };
        let wait = backoff.next_delay();
        tracing::warn!(%error, ?wait, "message not handled; holding it and retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {
                let _ = delivery
                    .nack(BasicNackOptions { requeue: true, ..Default::default() })
                    .await;
                return Settled::Stopped;
            }
        }
    }
}
