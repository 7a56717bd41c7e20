//! RabbitMQ plumbing: connect (and reconnect) with backoff, publish with
//! confirms, consume with manual acks, and dead-letter with a reason.
//!
//! `Broker` sits on top of the module: the session below it keeps the
//! connection, the alarms follow what the broker says of it, publishing
//! puts messages on its channel, and the backoff paces the retries.

mod alarms;
mod backoff;
mod error;
mod publish;
mod session;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use crate::tls::{self, CaFile};
use crate::topology::Topology;

use self::alarms::Alarms;
use self::session::{ClusterNodes, Sessions};

pub use self::alarms::Blocked;
pub use self::backoff::Backoff;
pub use self::error::BrokerError;
pub use self::publish::{Outgoing, ERROR_HEADER};
pub use self::session::node_address;

/// A RabbitMQ client that outlives its connections: when the connection
/// drops (a broker restart, a network cut, a cluster node lost), the next
/// use reconnects, going through the cluster's nodes with backoff and
/// jitter, and redeclares the topology. Consumers built on
/// [`Broker::consume`] resume through `run_consumer_until_stopped`;
/// publishes that failed are the caller's to retry (the outbox relay and
/// the worker runtime do).
pub struct Broker {
    sessions: Sessions,
    alarms: Arc<Alarms>,
    /// The RabbitMQ user of `AMQP_URL` (every node's URL names the same).
    user: String,
}

impl Broker {
    /// Connects (retrying with backoff until `stop`), enables confirms and
    /// declares the topology. `url` is one node's URL, or several
    /// (a cluster's nodes) separated by commas.
    #[tracing::instrument(skip_all, fields(prefix = topology.prefix()))]
    pub async fn connect(
        url: &str,
        topology: Topology,
        name: &str,
        stop: &CancellationToken,
    ) -> Result<Broker, BrokerError> {
        Self::connect_with_ca(url, None, topology, name, stop).await
    }

    /// [`Broker::connect`], verifying an `amqps://` broker against `ca`
    /// (`AMQP_CA_FILE`, or the URL's `cacertfile`) rather than the system's
    /// CA store. A refused certificate is not retried: it is
    /// [`BrokerError::Tls`].
    pub async fn connect_with_ca(
        url: &str,
        ca: Option<&CaFile>,
        topology: Topology,
        name: &str,
        stop: &CancellationToken,
    ) -> Result<Broker, BrokerError> {
        tls::install_crypto_provider();
        let nodes = ClusterNodes::parse(url)?;
        // The prefix in the name tells one deployment's (or test's)
        // connections from another's in the broker's tools.
        let name = format!("{name} {}", topology.prefix());
        let alarms = Arc::new(Alarms::new(name.clone()));
        let broker = Broker {
            user: nodes.user(),
            sessions: Sessions::new(nodes, ca, topology, name, alarms.clone(), stop),
            alarms,
        };
        broker.sessions.session().await?;
        Ok(broker)
    }

    /// `Some` while RabbitMQ blocks this client's publishes (a resource
    /// alarm): what it publishes waits, unconfirmed, until the alarm clears.
    pub fn blocked(&self) -> Option<Blocked> {
        self.alarms.blocked()
    }

    /// Returns once RabbitMQ no longer blocks publishing (at once if it
    /// does not).
    pub async fn unblocked(&self) {
        self.alarms.unblocked().await
    }

    pub fn topology(&self) -> &Topology {
        self.sessions.topology()
    }

    /// The RabbitMQ user this client connects as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the connection is up. Its publishing channel may be between
    /// two (the next publish opens a new one): that is no outage.
    pub fn is_connected(&self) -> bool {
        self.node().is_some()
    }

    /// `host:port` of the node the live connection reached.
    pub fn node(&self) -> Option<String> {
        self.sessions.node()
    }

    /// `Some(since)` while the broker refuses every publish (nacks, or no
    /// confirm in time) though it is connected: a cluster whose queues have
    /// lost their majority. Cleared by the next confirmed publish.
    pub fn refusing_since(&self) -> Option<DateTime<Utc>> {
        self.alarms.refusing_since()
    }

    /// Publishes and waits for the broker's confirm. An unroutable message is
    /// a failure, not a success: it would otherwise be silently dropped.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        self.publish_pipelined(std::slice::from_ref(message), None)
            .await
            .pop()
            .expect("one result per message")
    }

    /// Publishes every message without waiting in between, then waits once
    /// (at most `confirm_within`) for all their confirms: one round trip for
    /// the whole batch. Each message gets its own result, in order, so one
    /// the broker refuses fails alone and the others still count as sent.
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    pub async fn publish_all(
        &self,
        messages: &[Outgoing],
        confirm_within: Duration,
    ) -> Vec<Result<(), BrokerError>> {
        self.publish_pipelined(messages, Some(confirm_within)).await
    }

    async fn publish_pipelined(
        &self,
        messages: &[Outgoing],
        confirm_within: Option<Duration>,
    ) -> Vec<Result<(), BrokerError>> {
        // From before the session: a reconnect counts against the wait.
        let confirm_by =
            confirm_within.map(|within| (tokio::time::Instant::now() + within, within));
        let session = match self.sessions.session().await {
            Ok(session) => session,
            Err(error) => return messages.iter().map(|_| Err(error.clone())).collect(),
        };
        let results =
            publish::publish_confirmed(&session.publisher, &self.user, messages, confirm_by).await;
        if self.alarms.note_outcomes(&results) {
            self.sessions.replace_refused_publisher(&session).await;
        }
        results
    }

    /// Declares the whole topology again, on a channel of its own (so a
    /// declaration the broker refuses closes no channel anyone publishes
    /// on): a queue deleted under a running system comes back.
    #[tracing::instrument(skip_all, fields(prefix = self.topology().prefix()))]
    pub async fn redeclare(&self) -> Result<(), BrokerError> {
        let session = self.sessions.session().await?;
        self.topology().declare(&session.connection).await?;
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
        let channel = self
            .sessions
            .session()
            .await?
            .connection
            .create_channel()
            .await?;
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
        let session = self.sessions.session().await?;
        publish::dead_letter(
            &session.publisher,
            &self.user,
            self.topology().dead_letter_exchange(),
            delivery,
            reason,
        )
        .await
    }

    /// A plain channel (tests and tools use it to declare or inspect).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self
            .sessions
            .session()
            .await?
            .connection
            .create_channel()
            .await?)
    }

    pub async fn close(&self) {
        self.sessions.close().await
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
