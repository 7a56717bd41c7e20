//! Exchange and queue names, all under `AMQP_PREFIX`, and their declaration.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::messages::WorkerKind;

/// A message that keeps crashing its consumer is dead-lettered after this
/// many deliveries by the quorum queue itself.
pub const DELIVERY_LIMIT: i32 = 5;

/// Replicas of each quorum queue: a majority (two) survives the loss of
/// any one node of a three-node cluster. RabbitMQ caps it at the nodes the
/// cluster has, so a single node declares the same queues.
pub const QUORUM_GROUP_SIZE: i32 = 3;

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

    /// Declares everything; idempotent, so every service declares it all at
    /// start and none depends on another having started first.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.command_exchange(), ExchangeKind::Topic),
            (self.reply_exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }

        let with_dead_letters = quorum_arguments(Some(&self.dead_letter_exchange()));
        for worker in WorkerKind::ALL {
            let queue = self.command_queue(worker);
            declare_queue(channel, &queue, with_dead_letters.clone()).await?;
            bind(
                channel,
                &queue,
                &self.command_exchange(),
                &Self::command_binding_key(worker),
            )
            .await?;
        }
        declare_queue(channel, &self.reply_queue(), with_dead_letters).await?;
        bind(
            channel,
            &self.reply_queue(),
            &self.reply_exchange(),
            REPLY_ROUTING_KEY,
        )
        .await?;

        declare_queue(channel, &self.dead_letter_queue(), quorum_arguments(None)).await?;
        bind(
            channel,
            &self.dead_letter_queue(),
            &self.dead_letter_exchange(),
            "",
        )
        .await?;
        Ok(())
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

/// A queue's declaration arguments: a quorum queue and, for one that
/// consumers take messages from, where its dead letters go and after how
/// many deliveries. The published contract lists them, because the broker
/// refuses a declaration of the same queue with other arguments.
pub fn queue_arguments(dead_letter_exchange: Option<&str>) -> Vec<(&'static str, QueueArgument)> {
    let mut args = vec![
        ("x-queue-type", QueueArgument::Text("quorum".into())),
        (
            "x-quorum-initial-group-size",
            QueueArgument::Int(QUORUM_GROUP_SIZE),
        ),
    ];
    if let Some(dlx) = dead_letter_exchange {
        args.push(("x-dead-letter-exchange", QueueArgument::Text(dlx.into())));
        args.push(("x-delivery-limit", QueueArgument::Int(DELIVERY_LIMIT)));
    }
    args
}

fn quorum_arguments(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    for (name, value) in queue_arguments(dead_letter_exchange) {
        let value = match value {
            QueueArgument::Text(text) => AMQPValue::LongString(text.into()),
            QueueArgument::Int(n) => AMQPValue::LongInt(n),
        };
        args.insert(name.into(), value);
    }
    args
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(name.into(), options, args).await?;
    Ok(())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
