//! RabbitMQ plumbing: connect (and reconnect) with backoff, publish with
//! confirms, consume with manual acks, and dead-letter with a reason.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, DefaultConnectionBuilder,
};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::tls::{self, CaFile, TlsRefused};
use crate::topology::{Topology, TopologyError};
use crate::traceparent;

/// Header that carries why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-error";

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

    /// Between tries of a message held while the database or the broker is
    /// away: quick at first (a blip), at most 5 s apart (an outage).
    pub fn holding() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Between attempts to reach a server again (connect, consume, listen).
    pub fn reconnecting() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
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

/// RabbitMQ blocks publishing connections while a resource alarm (memory
/// or disk watermark) is raised; it says so with `connection.blocked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The broker's words, e.g. `low on memory`.
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// One live connection and its confirm-mode publishing channel.
struct Session {
    connection: Arc<Connection>,
    /// `host:port` of the node this connection reached.
    node: String,
    publisher: Channel,
    /// Stops the connection's alarm watcher once no session uses the
    /// connection any more.
    watcher: Arc<DropGuard>,
}

impl Session {
    fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// A RabbitMQ client that outlives its connections: when the connection
/// drops (a broker restart, a network cut, a cluster node lost), the next
/// use reconnects, going through the cluster's nodes with backoff and
/// jitter, and redeclares the topology. Consumers built on
/// [`Broker::consume`] resume through `run_consumer_until_stopped`;
/// publishes that failed are the caller's to retry (the outbox relay and
/// the worker runtime do).
pub struct Broker {
    nodes: ClusterNodes,
    /// The CA an `amqps://` broker's certificate must chain to (none: the
    /// system's store), and the variable that named it, for errors.
    tls: OwnedTLSConfig,
    ca_variable: &'static str,
    name: String,
    /// The RabbitMQ user of `AMQP_URL` (every node's URL names the same).
    user: String,
    topology: Topology,
    session: std::sync::Mutex<Option<Arc<Session>>>,
    /// One reconnect at a time; the others wait for its session.
    connecting: tokio::sync::Mutex<()>,
    /// Whether the broker blocks the current connection's publishes.
    blocked: Arc<watch::Sender<Option<Blocked>>>,
    /// Since when every publish has been nacked or left unconfirmed (a
    /// cluster whose queues lack a majority of nodes).
    refusing: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// When a refused publishing channel was last replaced.
    replaced_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// When a lost connection was last replaced by one to another node.
    reconnected_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    stop: CancellationToken,
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
        let broker = Broker {
            user: nodes.user(),
            nodes,
            tls: OwnedTLSConfig {
                identity: None,
                cert_chain: ca.map(|ca| ca.pem().to_owned()),
            },
            ca_variable: ca.map_or("AMQP_URL", |ca| ca.variable),
            // The prefix in the name tells one deployment's (or test's)
            // connections from another's in the broker's tools.
            name: format!("{name} {}", topology.prefix()),
            topology,
            session: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            blocked: Arc::new(watch::Sender::new(None)),
            refusing: std::sync::Mutex::new(None),
            replaced_at: std::sync::Mutex::new(None),
            reconnected_at: std::sync::Mutex::new(None),
            stop: stop.clone(),
        };
        broker.session().await?;
        Ok(broker)
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .expect("session lock is never poisoned")
            .clone()
    }

    /// The live session, reconnecting first if the last one died.
    async fn session(&self) -> Result<Arc<Session>, BrokerError> {
        if let Some(session) = self.current().filter(|s| s.is_healthy()) {
            return Ok(session);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(session) = self.current().filter(|s| s.is_healthy()) {
            return Ok(session);
        }
        let previous = self.current();
        // Only the publishing channel died (the broker closed it over a
        // refused publish): a new one on the same connection leaves every
        // consumer channel, and its in-flight acks, alone.
        if let Some(old) = previous
            .as_ref()
            .filter(|s| s.connection.status().connected())
        {
            match self.open_publisher(&old.connection).await {
                Ok(publisher) => {
                    let session = Arc::new(Session {
                        connection: old.connection.clone(),
                        node: old.node.clone(),
                        publisher,
                        watcher: old.watcher.clone(),
                    });
                    self.replace(session.clone());
                    tracing::info!(name = %self.name, "publishing channel reopened");
                    return Ok(session);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot reopen the publishing channel; reconnecting")
                }
            }
        }
        if let Some(old) = &previous {
            let _ = old.connection.close(320, "reconnecting".into()).await;
        }
        let session = Arc::new(self.open().await?);
        self.replace(session.clone());
        if previous.is_some() {
            *self.reconnected_at.lock().expect("lock is never poisoned") =
                Some(tokio::time::Instant::now());
            tracing::info!(name = %self.name, node = %session.node, "reconnected to RabbitMQ; topology redeclared");
        }
        Ok(session)
    }

    fn replace(&self, session: Arc<Session>) {
        *self.session.lock().expect("session lock is never poisoned") = Some(session);
    }

    /// A confirm-mode channel on `connection`, with the topology declared.
    async fn open_publisher(&self, connection: &Connection) -> Result<Channel, BrokerError> {
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.topology.declare(connection).await?;
        Ok(publisher)
    }

    /// A new connection, publisher channel and declared topology, retrying
    /// until it works or `stop`: each round tries every node once, from a
    /// random one (so that clients spread over the cluster and do not all
    /// land on the same survivor), and rounds are apart by a backoff with
    /// jitter. lapin's own connection recovery stays off: it knows one URI
    /// only, and two recoveries would race.
    async fn open(&self) -> Result<Session, BrokerError> {
        let mut backoff = Backoff::reconnecting();
        loop {
            for url in self.nodes.round() {
                let node = node_address(url);
                let attempt = tokio::time::timeout(CONNECT_WITHIN, self.try_open(url, &node));
                let error = tokio::select! {
                    attempt = attempt => match attempt {
                        Ok(Ok(session)) => return Ok(session),
                        // Retrying cannot mend a certificate or a queue
                        // declared otherwise: say so at once.
                        Ok(Err(error @ (BrokerError::Tls(_) | BrokerError::TopologyConflict(_)))) => {
                            tracing::error!(%node, %error, "cannot use RabbitMQ");
                            return Err(error);
                        }
                        Ok(Err(error @ BrokerError::TopologyMissing(_))) => {
                            tracing::warn!(%node, %error, "waiting for the broker topology");
                            break;
                        }
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => format!("no answer within {CONNECT_WITHIN:?}"),
                    },
                    _ = self.stop.cancelled() => return Err(BrokerError::Stopped),
                };
                if self.nodes.len() > 1 {
                    tracing::warn!(%node, %error, "RabbitMQ node not reachable; trying the next");
                } else {
                    tracing::warn!(%node, %error, "RabbitMQ not reachable");
                }
            }
            let wait = backoff.next_delay();
            tracing::warn!(
                ?wait,
                nodes = self.nodes.len(),
                "no RabbitMQ node reachable; retrying"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return Err(BrokerError::Stopped),
            }
        }
    }

    async fn try_open(&self, url: &str, node: &str) -> Result<Session, BrokerError> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let connection = DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(properties)
            .with_tls_config(self.tls.clone())
            .connect()
            .await
            .map_err(|error| match tls::handshake_failure(&error) {
                Some(reason) => BrokerError::Tls(TlsRefused::broker(self.ca_variable, reason)),
                None => BrokerError::from(error),
            })?;
        let publisher = self.open_publisher(&connection).await?;
        // A new connection starts unblocked: the broker tells it anew if
        // its alarm still stands.
        self.blocked.send_replace(None);
        let watching = self.stop.child_token();
        tokio::spawn(watch_alarms(
            connection.events_listener(),
            self.name.clone(),
            self.blocked.clone(),
            watching.clone(),
        ));
        tracing::info!(name = %self.name, %node, "connected to RabbitMQ");
        Ok(Session {
            connection: Arc::new(connection),
            node: node.to_owned(),
            publisher,
            watcher: Arc::new(watching.drop_guard()),
        })
    }

    /// `Some` while RabbitMQ blocks this client's publishes (a resource
    /// alarm): what it publishes waits, unconfirmed, until the alarm clears.
    pub fn blocked(&self) -> Option<Blocked> {
        self.blocked.borrow().clone()
    }

    /// Returns once RabbitMQ no longer blocks publishing (at once if it
    /// does not).
    pub async fn unblocked(&self) {
        let mut state = self.blocked.subscribe();
        let _ = state.wait_for(Option::is_none).await;
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
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
        self.current()
            .filter(|s| s.connection.status().connected())
            .map(|s| s.node.clone())
    }

    /// `Some(since)` while the broker refuses every publish (nacks, or no
    /// confirm in time) though it is connected: a cluster whose queues have
    /// lost their majority. Cleared by the next confirmed publish.
    pub fn refusing_since(&self) -> Option<DateTime<Utc>> {
        *self
            .refusing
            .lock()
            .expect("refusing lock is never poisoned")
    }

    /// Whether refusals have lasted long enough, and the last replacement
    /// is long enough ago, to replace the publishing channel now. Only
    /// soon after a reconnect (a node was lost): a queue that refuses
    /// publishes of its own accord (full, say) is no reason, and the
    /// channel's other publishes would fail with it.
    fn time_to_replace(&self) -> bool {
        let after_node_loss = self
            .reconnected_at
            .lock()
            .expect("lock is never poisoned")
            .is_some_and(|at| at.elapsed() < REPLACE_REFUSED_WITHIN);
        if !after_node_loss {
            return false;
        }
        let lasting = self
            .refusing_since()
            .is_some_and(|since| Utc::now() - since >= chrono::Duration::seconds(1));
        let mut replaced_at = self.replaced_at.lock().expect("lock is never poisoned");
        let now = tokio::time::Instant::now();
        if !lasting || replaced_at.is_some_and(|at| now - at < REPLACE_REFUSED_EVERY) {
            return false;
        }
        *replaced_at = Some(now);
        true
    }

    /// Follows whether the broker refuses publishes; true when every one
    /// of `results` was refused.
    fn note_outcomes(&self, results: &[Result<(), BrokerError>]) -> bool {
        let confirmed = results.iter().any(Result::is_ok);
        let refused = results.iter().any(|r| {
            matches!(
                r,
                Err(BrokerError::Nacked { .. } | BrokerError::Unconfirmed { .. })
            )
        });
        let mut refusing = self
            .refusing
            .lock()
            .expect("refusing lock is never poisoned");
        if confirmed {
            if let Some(since) = refusing.take() {
                let refused_ms = (Utc::now() - since).num_milliseconds();
                tracing::info!(name = %self.name, refused_ms, "RabbitMQ confirms publishes again");
            }
        } else if refused && refusing.is_none() {
            tracing::warn!(name = %self.name, "RabbitMQ refuses publishes (nacked or unconfirmed); a queue may have lost its majority");
            *refusing = Some(Utc::now());
        }
        !confirmed && refused
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
        let confirm_by = confirm_within.map(|within| tokio::time::Instant::now() + within);
        let session = match self.session().await {
            Ok(session) => session,
            Err(error) => return messages.iter().map(|_| Err(error.clone())).collect(),
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let published = session
                .publisher
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.body,
                    message.properties(&self.user),
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
            let confirmation = match confirm_by.zip(confirm_within) {
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
        if self.note_outcomes(&results) && self.time_to_replace() {
            // After a quorum queue's leader died, a channel that published
            // to it went on being nacked long after a new leader was
            // elected (RabbitMQ 3.10, the node-loss test), while a fresh
            // channel was not: the next publish opens one. Seldom, since
            // what else is in flight on the channel fails with it.
            let closing = session.publisher.close(200, "publishes refused".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        }
        results
    }

    /// Declares the whole topology again, on a channel of its own (so a
    /// declaration the broker refuses closes no channel anyone publishes
    /// on): a queue deleted under a running system comes back.
    #[tracing::instrument(skip_all, fields(prefix = self.topology.prefix()))]
    pub async fn redeclare(&self) -> Result<(), BrokerError> {
        let session = self.session().await?;
        self.topology.declare(&session.connection).await?;
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
        let channel = self.session().await?.connection.create_channel().await?;
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
            .with_user_id(self.user.as_str().into())
            .with_headers(headers);
        let confirm = self
            .session()
            .await?
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
        Ok(self.session().await?.connection.create_channel().await?)
    }

    pub async fn close(&self) {
        let session = self
            .session
            .lock()
            .expect("session lock is never poisoned")
            .take();
        if let Some(session) = session {
            // The goodbye is a courtesy: a broker that does not answer it
            // within a moment is left without one.
            let goodbye = session.connection.close(200, "bye".into());
            if tokio::time::timeout(Duration::from_secs(2), goodbye)
                .await
                .is_err()
            {
                tracing::warn!("RabbitMQ did not answer the connection close; leaving anyway");
            }
        }
    }
}

/// How long one node may take to accept a connection and the topology
/// before the next node is tried: a node that is half down (its port
/// open, its Erlang VM stuck) must not hold the client.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// At most this often a publishing channel whose publishes are all refused
/// is replaced by a fresh one.
const REPLACE_REFUSED_EVERY: Duration = Duration::from_secs(5);

/// How long after a reconnect a refused publishing channel may be replaced.
const REPLACE_REFUSED_WITHIN: Duration = Duration::from_secs(120);

/// The node URLs of `AMQP_URL`: one, or a cluster's several separated by
/// commas.
#[derive(Debug, Clone)]
struct ClusterNodes(Vec<String>);

impl ClusterNodes {
    fn parse(urls: &str) -> Result<ClusterNodes, BrokerError> {
        let nodes: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err(BrokerError::NoNodes);
        }
        Ok(ClusterNodes(nodes))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The user the first node's URL names (AMQP's default, `guest`, if
    /// none): a cluster's nodes share their users.
    fn user(&self) -> String {
        use std::str::FromStr;
        lapin::uri::AMQPUri::from_str(&self.0[0])
            .map(|uri| uri.authority.userinfo.username)
            .unwrap_or_else(|_| "guest".to_owned())
    }

    /// Every node once, from a random one on.
    fn round(&self) -> impl Iterator<Item = &str> {
        let start = rand::random_range(0..self.0.len());
        self.0[start..]
            .iter()
            .chain(&self.0[..start])
            .map(String::as_str)
    }
}

/// `host:port` of an AMQP URL, without its credentials, fit to show.
pub fn node_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if url.starts_with("amqps://") {
        5671
    } else {
        5672
    };
    if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// Follows one connection's `connection.blocked` and `unblocked` notices
/// into `state`, and says each change once in the log (not once per
/// message held).
async fn watch_alarms(
    events: impl Stream<Item = lapin::Event>,
    name: String,
    state: Arc<watch::Sender<Option<Blocked>>>,
    stop: CancellationToken,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.cancelled() => break,
        };
        match event {
            Some(lapin::Event::ConnectionBlocked(reason)) => {
                let since = Utc::now();
                let newly = state.send_if_modified(|blocked| {
                    let newly = blocked.is_none();
                    if newly {
                        *blocked = Some(Blocked {
                            reason: reason.clone(),
                            since,
                        });
                    }
                    newly
                });
                if newly {
                    tracing::warn!(%name, %reason, "RabbitMQ is blocking publishes (a resource alarm); messages wait until it clears");
                }
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                if let Some(was) = state.send_replace(None) {
                    let blocked_ms = (Utc::now() - was.since).num_milliseconds();
                    tracing::info!(%name, blocked_ms, "RabbitMQ no longer blocks publishes");
                }
            }
            Some(_) => {}
            None => break,
        }
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

    /// Log lines, kept for a test to read.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_alarm_is_followed_and_logged_once_per_change() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let state = Arc::new(watch::Sender::new(None));
        let mut seen = state.subscribe();
        let (events, received) = futures::channel::mpsc::unbounded();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let watcher = tokio::spawn(watch_alarms(
                    received,
                    "orchestrator t.".into(),
                    state.clone(),
                    CancellationToken::new(),
                ));
                // The broker repeats itself: one change, one line.
                for _ in 0..3 {
                    events
                        .unbounded_send(lapin::Event::ConnectionBlocked("low on memory".into()))
                        .unwrap();
                }
                let blocked = seen.wait_for(Option::is_some).await.unwrap().clone();
                assert_eq!(blocked.unwrap().reason, "low on memory");
                events.unbounded_send(lapin::Event::Connected).unwrap();
                events
                    .unbounded_send(lapin::Event::ConnectionUnblocked)
                    .unwrap();
                events
                    .unbounded_send(lapin::Event::ConnectionUnblocked)
                    .unwrap();
                drop(events);
                watcher.await.unwrap();
            })
        });
        assert_eq!(*state.borrow(), None);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        assert_eq!(logged("RabbitMQ is blocking publishes"), 1, "{text}");
        assert_eq!(logged("reason=low on memory"), 1, "{text}");
        assert_eq!(logged("RabbitMQ no longer blocks publishes"), 1, "{text}");
    }

    #[test]
    fn a_cluster_url_is_every_node_in_turn_from_a_random_one() {
        let nodes = ClusterNodes::parse(
            "amqp://u:p@10.0.0.1:5681/%2f, amqp://u:p@10.0.0.2:5682/%2f,amqp://u:p@10.0.0.3/%2f,",
        )
        .unwrap();
        assert_eq!(nodes.len(), 3);
        let mut starts = std::collections::HashSet::new();
        for _ in 0..200 {
            let round: Vec<&str> = nodes.round().collect();
            let mut sorted = round.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                nodes.0.iter().map(String::as_str).collect::<Vec<_>>()
            );
            // In turn: each node's successor is the next in the list.
            let at = |u: &str| nodes.0.iter().position(|n| n == u).unwrap();
            for pair in round.windows(2) {
                assert_eq!(at(pair[1]), (at(pair[0]) + 1) % 3, "{round:?}");
            }
            starts.insert(round[0]);
        }
        assert_eq!(starts.len(), 3, "every node gets to be first");
        assert!(matches!(
            ClusterNodes::parse(" , "),
            Err(BrokerError::NoNodes)
        ));
    }

    #[test]
    fn a_node_is_shown_without_its_credentials() {
        assert_eq!(
            node_address("amqp://guest:secret@127.0.0.1:5682/%2f"),
            "127.0.0.1:5682"
        );
        assert_eq!(
            node_address("amqp://rabbit-2/vhost?heartbeat=5"),
            "rabbit-2:5672"
        );
        assert_eq!(
            node_address("amqps://u:p@mq.example.com"),
            "mq.example.com:5671"
        );
        assert_eq!(node_address("amqp://u:p@[::1]:5681/%2f"), "[::1]:5681");
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }
}
