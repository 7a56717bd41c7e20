//! What can go wrong talking to RabbitMQ, and which of it is the broker
//! turning one message away.

use std::time::Duration;

use crate::tls::TlsRefused;
use crate::topology::TopologyError;

#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("RabbitMQ did not confirm the message for {exchange}/{routing_key} within {waited:?}")]
    Unconfirmed {
        exchange: String,
        routing_key: String,
        waited: Duration,
    },
    #[error("publisher confirms are not enabled on this channel")]
    NotConfirmed,
    #[error("stopped while connecting to RabbitMQ")]
    Stopped,
    #[error("AMQP_URL names no RabbitMQ node")]
    NoNodes,
    #[error("{0}")]
    Tls(#[source] TlsRefused),
    /// The broker holds an exchange or queue unlike what this build
    /// declares: permanent, never "not reachable".
    #[error("RabbitMQ topology conflict: {0}")]
    TopologyConflict(#[source] TopologyError),
    /// Part of the topology is missing and this user may not declare it:
    /// waited for, since the orchestrator declares it at its start.
    #[error("{0}")]
    TopologyMissing(#[source] TopologyError),
}

impl From<TopologyError> for BrokerError {
    fn from(error: TopologyError) -> Self {
        match error {
            TopologyError::Amqp(error) => BrokerError::Amqp(error),
            conflict @ TopologyError::Conflict { .. } => BrokerError::TopologyConflict(conflict),
            missing @ TopologyError::Missing { .. } => BrokerError::TopologyMissing(missing),
        }
    }
}

impl BrokerError {
    /// The broker turned this one message away (nacked it, returned it
    /// unroutable, or never confirmed it), as opposed to the connection or
    /// channel failing under every message alike.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            BrokerError::Nacked { .. }
                | BrokerError::Unroutable { .. }
                | BrokerError::Unconfirmed { .. }
        )
    }
}
