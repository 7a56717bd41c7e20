//! Exchange and queue names, all under `AMQP_PREFIX`, and their declaration.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use saga_protocol::messages::WorkerKind;

/// A message that keeps crashing its consumer is dead-lettered after this
/// many deliveries by the quorum queue itself.
pub const DELIVERY_LIMIT: i32 = 5;

/// The routing key of every reply on the reply exchange.
pub const REPLY_ROUTING_KEY: &str = "reply";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn command_exchange(&self) -> String {
        format!("{}checkout.commands", self.prefix)
    }

    pub fn reply_exchange(&self) -> String {
        format!("{}checkout.replies", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}checkout.dead-letters", self.prefix)
    }

    pub fn command_queue(&self, worker: WorkerKind) -> String {
        format!("{}{}.commands", self.prefix, worker.as_str())
    }

    /// The key that binds a worker kind's queue to the command exchange:
    /// every command whose routing key starts with the kind's name.
    pub fn command_binding_key(worker: WorkerKind) -> String {
        format!("{}.*", worker.as_str())
    }

    pub fn reply_queue(&self) -> String {
        format!("{}orchestrator.replies", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}checkout.dead-letters", self.prefix)
    }

    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = WorkerKind::ALL
            .iter()
            .map(|w| self.command_queue(*w))
            .collect();
        queues.push(self.reply_queue());
        queues.push(self.dead_letter_queue());
        queues
    }

    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.command_exchange(),
            self.reply_exchange(),
            self.dead_letter_exchange(),
        ]
    }

    /// Declares whatever is missing; idempotent, so every service runs it
    /// at start and none depends on another having started first.
    ///
    /// A queue that exists is left as it is (checked passively, never
    /// redeclared): RabbitMQ refuses a declaration whose arguments differ
    /// from the queue's, so a build that redeclared with arguments of its
    /// own could never start beside queues an older release created. What
    /// may change over a queue's life (its delivery limit, where it
    /// dead-letters) is a policy ([`Topology::policies`]), which applies
    /// to live queues; a new queue is declared with `x-queue-type` alone,
    /// the one argument that can be neither a policy nor changed.
    /// Each step takes a channel of its own, since a passive declaration of
    /// a missing queue, or a refused one, closes its channel.
    pub async fn declare(&self, connection: &Connection) -> Result<(), TopologyError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let channel = connection.create_channel().await?;
        for (name, kind) in [
            (self.command_exchange(), ExchangeKind::Topic),
            (self.reply_exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Fanout),
        ] {
            match channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
            {
                Ok(()) => {}
                // A least-privilege user (a worker's) may not declare: the
                // topology is the orchestrator's, and must exist already.
                Err(error) if reply_code(&error) == Some(403) => {
                    return self.verify(connection).await;
                }
                Err(error) => return Err(TopologyError::judge("exchange", &name, error)),
            }
        }

        // Each queue with the one binding that feeds it.
        let bindings = WorkerKind::ALL
            .into_iter()
            .map(|worker| {
                (
                    self.command_queue(worker),
                    self.command_exchange(),
                    Self::command_binding_key(worker),
                )
            })
            .chain([
                (
                    self.reply_queue(),
                    self.reply_exchange(),
                    REPLY_ROUTING_KEY.to_owned(),
                ),
                (
                    self.dead_letter_queue(),
                    self.dead_letter_exchange(),
                    String::new(),
                ),
            ]);
        for (queue, exchange, key) in bindings {
            declare_queue(connection, &queue).await?;
            bind(&channel, &queue, &exchange, &key).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Checks, without declaring anything (passive declarations need no
    /// permission), that every exchange and queue exists.
    async fn verify(&self, connection: &Connection) -> Result<(), TopologyError> {
        for exchange in self.exchanges() {
            check_exchange(connection, &exchange).await?;
        }
        for queue in self.queues() {
            check_queue(connection, &queue).await?;
        }
        Ok(())
    }

    /// The queue settings that may change between releases, as RabbitMQ
    /// policies (applied to live queues, unlike declaration arguments):
    /// the work queues (commands and replies) dead-letter to this prefix's
    /// dead-letter exchange, and a message that keeps crashing its
    /// consumer is dead-lettered after [`DELIVERY_LIMIT`] deliveries.
    pub fn policies(&self) -> Vec<Policy> {
        let work_queues: Vec<String> = WorkerKind::ALL
            .iter()
            .map(|w| self.command_queue(*w))
            .chain([self.reply_queue()])
            .collect();
        vec![Policy {
            name: format!("{}checkout-work-queues", self.prefix),
            pattern: exactly_one_of(&work_queues),
            definition: serde_json::json!({
                "dead-letter-exchange": self.dead_letter_exchange(),
                "delivery-limit": DELIVERY_LIMIT,
            }),
        }]
    }

    /// Removes every queue and exchange of this prefix (tests clean up with it).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.into(), Default::default())
                .await?;
        }
        for exchange in self.exchanges() {
            channel
                .exchange_delete(exchange.into(), Default::default())
                .await?;
        }
        Ok(())
    }
}

/// The value of a queue's declaration argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueArgument {
    Text(String),
    Int(i32),
}

/// The arguments a queue is created with, when it does not exist yet: the
/// one that can be neither a policy nor changed. The published contract
/// lists them.
pub fn queue_arguments() -> Vec<(&'static str, QueueArgument)> {
    vec![("x-queue-type", QueueArgument::Text("quorum".into()))]
}

fn creation_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    for (name, value) in queue_arguments() {
        let value = match value {
            QueueArgument::Text(text) => AMQPValue::LongString(text.into()),
            QueueArgument::Int(n) => AMQPValue::LongInt(n),
        };
        args.insert(name.into(), value);
    }
    args
}

/// A RabbitMQ policy: settings applied by the broker to every queue whose
/// name matches `pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    pub definition: serde_json::Value,
}

/// A regular expression that matches exactly these names: a policy's
/// pattern is a regex, and a prefix may hold regex metacharacters.
pub(crate) fn exactly_one_of(names: &[String]) -> String {
    let escaped: Vec<String> = names.iter().map(|n| escape_regex(n)).collect();
    format!("^({})$", escaped.join("|"))
}

fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Why the topology could not be declared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopologyError {
    /// What exists differs from what this build declares (an argument,
    /// an exchange's type). Retrying cannot mend it: an operator must.
    #[error("{kind} '{name}' exists with other settings than this build declares ({argument}): {detail}. Retrying cannot fix this; see docs/upgrading.md")]
    Conflict {
        kind: &'static str,
        name: String,
        argument: String,
        detail: String,
    },
    /// This user may not declare the topology (a worker's least-privilege
    /// user), and part of it is not there yet: the orchestrator, or
    /// `orchestrator topology`, declares it. Waiting mends it.
    #[error("{kind} '{name}' does not exist yet, and this RabbitMQ user may not declare it: start the orchestrator or run `orchestrator topology`")]
    Missing { kind: &'static str, name: String },
    /// The broker or the connection failed under the declaration.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
}

impl TopologyError {
    fn judge(kind: &'static str, name: &str, error: lapin::Error) -> TopologyError {
        match reply_code(&error) {
            Some(406) => {
                let detail = match error.kind() {
                    lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
                    _ => error.to_string(),
                };
                TopologyError::Conflict {
                    kind,
                    name: name.to_owned(),
                    argument: conflicting_argument(&detail),
                    detail,
                }
            }
            _ => TopologyError::Amqp(error),
        }
    }
}

/// The AMQP reply code of a channel or connection error (404, 406, ...).
fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// The argument RabbitMQ names in "inequivalent arg 'x-…' for queue …",
/// or what else differs (durable, type, ...).
fn conflicting_argument(detail: &str) -> String {
    detail
        .split_once("inequivalent arg '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(argument, _)| argument.to_owned())
        .unwrap_or_else(|| "its declaration".to_owned())
}

/// Checks that the exchange `name` exists, by a passive declaration (no
/// permission needed) on a channel of its own: a 404 closes the channel.
async fn check_exchange(connection: &Connection, name: &str) -> Result<(), TopologyError> {
    let channel = connection.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
    found(&channel, "exchange", name, declared).await
}

/// As [`check_exchange`], for the queue `name`.
async fn check_queue(connection: &Connection, name: &str) -> Result<(), TopologyError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
        .map(|_| ());
    found(&channel, "queue", name, declared).await
}

/// What a passive declaration of the `kind` `name` answered: it is there
/// (and the channel is done with), it is missing, or the broker objects.
async fn found(
    channel: &Channel,
    kind: &'static str,
    name: &str,
    declared: Result<(), lapin::Error>,
) -> Result<(), TopologyError> {
    match declared {
        Ok(()) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(())
        }
        Err(error) if reply_code(&error) == Some(404) => Err(TopologyError::Missing {
            kind,
            name: name.to_owned(),
        }),
        Err(error) => Err(TopologyError::judge(kind, name, error)),
    }
}

/// A quorum queue, if it is not there yet: see [`Topology::declare`].
async fn declare_queue(connection: &Connection, name: &str) -> Result<(), TopologyError> {
    match check_queue(connection, name).await {
        Err(TopologyError::Missing { .. }) => {}
        checked => return checked,
    }
    let channel = connection.create_channel().await?;
    let args = creation_arguments();
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // Another process may declare it between the check and here; the same
    // arguments are accepted, others (an older release's) are a conflict.
    let declared = channel
        .queue_declare(name.into(), options, args)
        .await
        .map_err(|error| TopologyError::judge("queue", name, error));
    let _ = channel.close(200, "declared".into()).await;
    declared.map(|_| ())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), TopologyError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| TopologyError::judge("binding of queue", queue, error))
}
