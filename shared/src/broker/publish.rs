//! Publishing with confirms: a message and the properties the design
//! requires, a batch pipelined under one wait for its confirms, and a
//! delivery's copy to the dead-letter exchange with the reason.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::time::Instant;
use uuid::Uuid;

use super::error::BrokerError;
use crate::traceparent;

/// Header that carries why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-error";

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
    /// `user` is the connection's RabbitMQ user: stamped as `user_id`,
    /// which RabbitMQ checks against the connection, so a consumer can
    /// trust who sent a message (the orchestrator checks replies by it).
    fn properties(&self, user: &str) -> BasicProperties {
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
            .with_user_id(user.into())
            .with_headers(headers)
    }
}

/// Publishes every message on `publisher` without waiting in between, then
/// waits for their confirms: until `confirm_by` (instant, and how long that
/// was, for the error) if given, else for as long as the broker takes.
/// One result per message, in order.
pub(super) async fn publish_confirmed(
    publisher: &Channel,
    user: &str,
    messages: &[Outgoing],
    confirm_by: Option<(Instant, Duration)>,
) -> Vec<Result<(), BrokerError>> {
    let mut pending = Vec::with_capacity(messages.len());
    for message in messages {
        let published = publisher
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                message.properties(user),
            )
            .await;
        match published {
            Ok(confirm) => pending.push(Ok(confirm)),
            Err(error) => {
                // The channel is gone: neither this message nor any
                // after it was sent.
                let error = BrokerError::from(error);
                pending.extend(
                    std::iter::repeat_with(|| Err(error.clone()))
                        .take(messages.len() - pending.len()),
                );
                break;
            }
        }
    }
    let mut results = Vec::with_capacity(messages.len());
    for (message, confirm) in messages.iter().zip(pending) {
        let confirm = match confirm {
            Ok(confirm) => confirm,
            Err(error) => {
                results.push(Err(error));
                continue;
            }
        };
        let confirmation = match confirm_by {
            Some((by, waited)) => match tokio::time::timeout_at(by, confirm).await {
                Ok(confirmation) => confirmation,
                Err(_) => {
                    results.push(Err(BrokerError::Unconfirmed {
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                        waited,
                    }));
                    continue;
                }
            },
            None => confirm.await,
        };
        results.push(judge(message, confirmation));
    }
    results
}

/// Sends a copy of `delivery` to `exchange`, the dead-letter exchange,
/// with `reason` in its `x-error` header.
pub(super) async fn dead_letter(
    publisher: &Channel,
    user: &str,
    exchange: String,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), BrokerError> {
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
    if let Some(sender) = delivery.properties.user_id() {
        headers.insert(
            "x-original-user-id".into(),
            AMQPValue::LongString(sender.as_str().into()),
        );
    }
    // Published by this connection: RabbitMQ refuses a user_id other
    // than the connection's own, so the sender's moves to a header.
    let properties = delivery
        .properties
        .clone()
        .with_user_id(user.into())
        .with_headers(headers);
    let confirm = publisher
        .basic_publish(
            exchange.as_str().into(),
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
            exchange,
            routing_key: String::new(),
        }),
        Confirmation::Nack(_) => Err(BrokerError::Nacked {
            exchange,
            routing_key: String::new(),
        }),
        Confirmation::NotRequested => Err(BrokerError::NotConfirmed),
    }
}

/// A message's confirm as a result: a returned (unroutable) message is a
/// failure, not a success, or it would be silently dropped.
fn judge(
    message: &Outgoing,
    confirmation: Result<Confirmation, lapin::Error>,
) -> Result<(), BrokerError> {
    let (exchange, routing_key) = (message.exchange.clone(), message.routing_key.clone());
    match confirmation? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable {
            exchange,
            routing_key,
        }),
        Confirmation::Nack(_) => Err(BrokerError::Nacked {
            exchange,
            routing_key,
        }),
        Confirmation::NotRequested => Err(BrokerError::NotConfirmed),
    }
}
