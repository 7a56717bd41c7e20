//! The RabbitMQ half of the floor: persistent messages on a quorum queue,
//! each publish confirmed, consumed and acked one by one as the services do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

use crate::error::BenchError;
use crate::floor::ProbeFigures;
use crate::latency::Latencies;

const LOADED: u8 = 0;
const ALONE: u8 = 1;

/// Runs the probe on its own randomly named queue, deleted at the end.
pub async fn probe(
    amqp_url: &str,
    publishers: usize,
    length: Duration,
) -> Result<ProbeFigures, BenchError> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let queue = format!("bench-floor-{:08x}", rand::random::<u32>());
    let control = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    control
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    let result = measure(&connection, &queue, publishers, length).await;
    control
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "bench done".into()).await?;
    result
}

async fn measure(
    connection: &Connection,
    queue: &str,
    publishers: usize,
    length: Duration,
) -> Result<ProbeFigures, BenchError> {
    // Payloads carry their publish time from this origin: publisher and
    // consumer share the process, so one monotonic clock times both ends.
    let origin = Instant::now();
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(256, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "bench-floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel::<(u8, Duration)>();
    let consuming = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let phase = delivery.data.first().copied().unwrap_or(LOADED);
            let sent = delivery
                .data
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let latency = origin.elapsed().saturating_sub(Duration::from_nanos(sent));
            delivery.ack(BasicAckOptions::default()).await?;
            if delivered_tx.send((phase, latency)).is_err() {
                break;
            }
        }
        Ok::<(), lapin::Error>(())
    });

    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..publishers {
        let channel = publisher(connection).await?;
        let queue = queue.to_owned();
        let published = published.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                publish(&channel, &queue, LOADED, origin).await?;
                published.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BenchError>(())
        });
    }
    let mut loaded = Latencies::default();
    let mut delivered_in_time = 0u64;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => joined.expect("a publisher does not panic")?,
                None => break,
            },
            Some((_, latency)) = delivered.recv() => {
                loaded.record(latency);
                if Instant::now() <= deadline {
                    delivered_in_time += 1;
                }
            }
        }
    }
    // What is still queued is delivered before the one-at-a-time phase, so
    // that phase measures an empty queue.
    let total = published.load(Ordering::Relaxed);
    let drain_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while loaded.len() < total {
        match tokio::time::timeout_at(drain_by, delivered.recv()).await {
            Ok(Some((_, latency))) => loaded.record(latency),
            _ => return Err(BenchError::Undelivered(Duration::from_secs(30))),
        }
    }
    let loaded_rate = delivered_in_time as f64 / length.as_secs_f64();

    let channel = publisher(connection).await?;
    let mut alone = Latencies::default();
    let deadline = Instant::now() + length;
    while Instant::now() < deadline {
        publish(&channel, queue, ALONE, origin).await?;
        match tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await {
            Ok(Some((ALONE, latency))) => alone.record(latency),
            _ => return Err(BenchError::Undelivered(Duration::from_secs(10))),
        }
    }
    // Cancel the consumer and wait for RabbitMQ's cancel-ok before the
    // queue goes: a consumer dropped with the task sends its cancel late,
    // and a cancel-ok that crosses the queue's deletion is a protocol error
    // that closes the connection (seen in CI).
    consumer_channel
        .basic_cancel("bench-floor".into(), BasicCancelOptions::default())
        .await?;
    consuming.abort();
    consumer_channel
        .close(200, "floor probe done".into())
        .await?;
    Ok(ProbeFigures {
        clients: publishers,
        loaded_rate,
        loaded: loaded.summary(),
        alone: alone.summary(),
    })
}

async fn publisher(connection: &Connection) -> Result<Channel, BenchError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn publish(
    channel: &Channel,
    queue: &str,
    phase: u8,
    origin: Instant,
) -> Result<(), BenchError> {
    let mut payload = [0u8; 64];
    payload[0] = phase;
    let sent = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
    payload[1..9].copy_from_slice(&sent.to_le_bytes());
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    if confirmation.is_ack() {
        Ok(())
    } else {
        Err(BenchError::NotConfirmed)
    }
}
