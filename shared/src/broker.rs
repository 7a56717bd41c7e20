//! RabbitMQ plumbing: connect with backoff, publish with confirms, consume
//! with manual acks, and dead-letter with a reason.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::topology::Topology;
use crate::traceparent;

/// Header that carries why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-error";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused the message (nack) for {exchange}/{routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("no queue is bound for {exchange}/{routing_key}: the message was returned")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("publisher confirms are not enabled on this channel")]
    NotConfirmed,
    #[error("stopped while connecting to RabbitMQ")]
    Stopped,
}

/// Exponential backoff with full jitter: each delay is uniform in
/// `[0, min(cap, base * 2^n)]`, so many clients that lost one broker do not
/// come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling
            .mul_f64(rand::random::<f64>())
            .max(Duration::from_millis(10))
    }
}

/// A message ready to publish: body and the properties the design requires.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub message_type: String,
    pub traceparent: String,
}

impl Outgoing {
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            traceparent::HEADER.into(),
            AMQPValue::LongString(self.traceparent.as_str().into()),
        );
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.message_id.to_string().into())
            .with_correlation_id(self.saga_id.to_string().into())
            .with_type(ShortString::from(self.message_type.as_str()))
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_headers(headers)
    }
}

/// One connection, a confirm-mode channel for publishing, and the topology.
pub struct Broker {
    connection: Connection,
    publisher: Channel,
    topology: Topology,
}

impl Broker {
    /// Connects (retrying with backoff until `stop`), enables confirms and
    /// declares the topology.
    #[tracing::instrument(skip_all, fields(prefix = topology.prefix()))]
    pub async fn connect(
        url: &str,
        topology: Topology,
        name: &str,
        stop: &CancellationToken,
    ) -> Result<Broker, BrokerError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let connection = loop {
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            match Connection::connect(url, properties).await {
                Ok(connection) => break connection,
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, ?wait, "RabbitMQ not reachable yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return Err(BrokerError::Stopped),
                    }
                }
            }
        };
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology.declare(&publisher).await?;
        Ok(Broker {
            connection,
            publisher,
            topology,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Publishes and waits for the broker's confirm. An unroutable message is
    /// a failure, not a success: it would otherwise be silently dropped.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    /// Publishes every message, then waits for all their confirms: one round
    /// trip of latency for the whole batch instead of one per message.
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let confirm = self
                .publisher
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.body,
                    message.properties(),
                )
                .await?;
            pending.push((message, confirm));
        }
        for (message, confirm) in pending {
            let failure = |unroutable: bool| {
                let (exchange, routing_key) =
                    (message.exchange.clone(), message.routing_key.clone());
                if unroutable {
                    BrokerError::Unroutable {
                        exchange,
                        routing_key,
                    }
                } else {
                    BrokerError::Nacked {
                        exchange,
                        routing_key,
                    }
                }
            };
            match confirm.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => return Err(failure(true)),
                Confirmation::Nack(_) => return Err(failure(false)),
                Confirmation::NotRequested => return Err(BrokerError::NotConfirmed),
            }
        }
        Ok(())
    }

    /// Starts a consumer on its own channel, holding at most `prefetch`
    /// unacked deliveries.
    pub async fn consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
    ) -> Result<Consumer, BrokerError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    }

    /// Sends a copy of `delivery` to the dead-letter exchange with `reason`
    /// in its `x-error` header. The caller acks the original afterwards, so
    /// the message is never lost and never blocks its queue.
    #[tracing::instrument(skip_all, fields(queue_key = %delivery.routing_key, reason))]
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        tracing::warn!(reason, "dead-lettering message");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(reason.into()));
        headers.insert(
            "x-original-exchange".into(),
            AMQPValue::LongString(delivery.exchange.as_str().into()),
        );
        headers.insert(
            "x-original-routing-key".into(),
            AMQPValue::LongString(delivery.routing_key.as_str().into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let confirm = self
            .publisher
            .basic_publish(
                self.topology.dead_letter_exchange().into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable {
                exchange: self.topology.dead_letter_exchange(),
                routing_key: String::new(),
            }),
            Confirmation::Nack(_) => Err(BrokerError::Nacked {
                exchange: self.topology.dead_letter_exchange(),
                routing_key: String::new(),
            }),
            Confirmation::NotRequested => Err(BrokerError::NotConfirmed),
        }
    }

    /// A plain channel (tests and tools use it to declare or inspect).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.connection.create_channel().await?)
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// Reads a string header of a delivery.
pub fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }
}
