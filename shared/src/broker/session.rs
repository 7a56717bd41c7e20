//! The broker's connection: one live session at a time, opened through the
//! cluster's nodes with backoff and jitter, the topology declared on each,
//! and its publishing channel replaced when the broker closed or spoiled it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::options::ConfirmSelectOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::alarms::Alarms;
use super::backoff::Backoff;
use super::error::BrokerError;
use crate::tls::{self, CaFile, TlsRefused};
use crate::topology::Topology;

/// The log target these lines had before the broker became a module of
/// several files, so that log filters and searches keep finding them.
const LOG_TARGET: &str = "saga_shared::broker";

/// How long one node may take to accept a connection and the topology
/// before the next node is tried: a node that is half down (its port
/// open, its Erlang VM stuck) must not hold the client.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// At most this often a publishing channel whose publishes are all refused
/// is replaced by a fresh one.
const REPLACE_REFUSED_EVERY: Duration = Duration::from_secs(5);

/// How long after a reconnect a refused publishing channel may be replaced.
const REPLACE_REFUSED_WITHIN: Duration = Duration::from_secs(120);

/// One live connection and its confirm-mode publishing channel.
pub(super) struct Session {
    pub(super) connection: Arc<Connection>,
    /// `host:port` of the node this connection reached.
    node: String,
    pub(super) publisher: Channel,
    /// Stops the connection's alarm watcher once no session uses the
    /// connection any more.
    watcher: Arc<DropGuard>,
}

impl Session {
    fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// The session of a client that outlives its connections, and how to open
/// the next one.
pub(super) struct Sessions {
    nodes: ClusterNodes,
    /// The CA an `amqps://` broker's certificate must chain to (none: the
    /// system's store), and the variable that named it, for errors.
    tls: OwnedTLSConfig,
    ca_variable: &'static str,
    name: String,
    topology: Topology,
    alarms: Arc<Alarms>,
    session: std::sync::Mutex<Option<Arc<Session>>>,
    /// One reconnect at a time; the others wait for its session.
    connecting: tokio::sync::Mutex<()>,
    /// When a refused publishing channel was last replaced.
    replaced_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// When a lost connection was last replaced by one to another node.
    reconnected_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    stop: CancellationToken,
}

impl Sessions {
    /// No session yet: the first use opens one.
    pub(super) fn new(
        nodes: ClusterNodes,
        ca: Option<&CaFile>,
        topology: Topology,
        name: String,
        alarms: Arc<Alarms>,
        stop: &CancellationToken,
    ) -> Sessions {
        Sessions {
            nodes,
            tls: OwnedTLSConfig {
                identity: None,
                cert_chain: ca.map(|ca| ca.pem().to_owned()),
            },
            ca_variable: ca.map_or("AMQP_URL", |ca| ca.variable),
            name,
            topology,
            alarms,
            session: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            replaced_at: std::sync::Mutex::new(None),
            reconnected_at: std::sync::Mutex::new(None),
            stop: stop.clone(),
        }
    }

    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .expect("session lock is never poisoned")
            .clone()
    }

    /// The live session, reconnecting first if the last one died.
    pub(super) async fn session(&self) -> Result<Arc<Session>, BrokerError> {
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
                    tracing::info!(target: LOG_TARGET, name = %self.name, "publishing channel reopened");
                    return Ok(session);
                }
                Err(error) => {
                    tracing::warn!(target: LOG_TARGET, %error, "cannot reopen the publishing channel; reconnecting")
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
            tracing::info!(target: LOG_TARGET, name = %self.name, node = %session.node, "reconnected to RabbitMQ; topology redeclared");
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
                            tracing::error!(target: LOG_TARGET, %node, %error, "cannot use RabbitMQ");
                            return Err(error);
                        }
                        Ok(Err(error @ BrokerError::TopologyMissing(_))) => {
                            tracing::warn!(target: LOG_TARGET, %node, %error, "waiting for the broker topology");
                            break;
                        }
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => format!("no answer within {CONNECT_WITHIN:?}"),
                    },
                    _ = self.stop.cancelled() => return Err(BrokerError::Stopped),
                };
                if self.nodes.len() > 1 {
                    tracing::warn!(target: LOG_TARGET, %node, %error, "RabbitMQ node not reachable; trying the next");
                } else {
                    tracing::warn!(target: LOG_TARGET, %node, %error, "RabbitMQ not reachable");
                }
            }
            let wait = backoff.next_delay();
            tracing::warn!(
                target: LOG_TARGET,
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
        let watching = self.stop.child_token();
        self.alarms.watch(&connection, watching.clone());
        tracing::info!(target: LOG_TARGET, name = %self.name, %node, "connected to RabbitMQ");
        Ok(Session {
            connection: Arc::new(connection),
            node: node.to_owned(),
            publisher,
            watcher: Arc::new(watching.drop_guard()),
        })
    }

    /// `host:port` of the node the live connection reached.
    pub(super) fn node(&self) -> Option<String> {
        self.current()
            .filter(|s| s.connection.status().connected())
            .map(|s| s.node.clone())
    }

    /// Closes `session`'s publishing channel, every one of whose publishes
    /// was refused, if it is time to: the next publish opens a fresh one.
    pub(super) async fn replace_refused_publisher(&self, session: &Session) {
        if !self.time_to_replace() {
            return;
        }
        // After a quorum queue's leader died, a channel that published
        // to it went on being nacked long after a new leader was
        // elected (RabbitMQ 3.10, the node-loss test), while a fresh
        // channel was not: the next publish opens one. Seldom, since
        // what else is in flight on the channel fails with it.
        let closing = session.publisher.close(200, "publishes refused".into());
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
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
            .alarms
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

    pub(super) async fn close(&self) {
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
                tracing::warn!(target: LOG_TARGET, "RabbitMQ did not answer the connection close; leaving anyway");
            }
        }
    }
}

/// The node URLs of `AMQP_URL`: one, or a cluster's several separated by
/// commas.
#[derive(Debug, Clone)]
pub(super) struct ClusterNodes(Vec<String>);

impl ClusterNodes {
    pub(super) fn parse(urls: &str) -> Result<ClusterNodes, BrokerError> {
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
    pub(super) fn user(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
