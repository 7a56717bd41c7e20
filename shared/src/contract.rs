//! The published message contract, `contract/` at the root of the
//! repository: a JSON Schema of the envelope, of every command's payload
//! and of every reply's payload, and an AsyncAPI document of the exchanges,
//! queues, routing keys and AMQP properties they travel with. Everything is
//! derived from the wire types and the topology, so the published contract
//! cannot drift from what the services send; CI regenerates it and compares
//! it with the last release's.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::broker::ERROR_HEADER;
use crate::topology::{
    queue_arguments, QueueArgument, Topology, DELIVERY_LIMIT, REPLY_ROUTING_KEY,
};
use crate::traceparent;
use saga_protocol::envelope::{Envelope, ENVELOPE_VERSION};
use saga_protocol::messages::{
    CalculateTax, ChargePayment, Charged, RefundPayment, Refunded, ReleaseStock, Released,
    ReplyPayload, ReserveStock, Reserved, Step, TaxCalculated, WorkerKind,
};

/// Stands for `AMQP_PREFIX` in the names of exchanges and queues; an AsyncAPI
/// channel parameter where the name is a channel's address.
const PREFIX: &str = "{prefix}";

/// The AMQP bindings' version these documents follow.
const AMQP_BINDING_VERSION: &str = "0.3.0";

/// Every generated file, by its path under `contract/`, as written: keys
/// sorted and a trailing newline, so a change shows as a small diff.
pub fn files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (name, schema) in schemas() {
        files.insert(format!("schemas/{name}.json"), to_text(&schema));
    }
    files.insert("asyncapi.json".to_owned(), to_text(&asyncapi()));
    files
}

/// The schemas by name: `envelope`, each command's payload by its type and
/// each reply's payload by its type.
pub fn schemas() -> BTreeMap<String, Value> {
    let mut schemas = BTreeMap::new();
    schemas.insert("envelope".to_owned(), schema::<Envelope<Value>>());
    for step in Step::ALL {
        schemas.insert(step.routing_key().to_owned(), command_schema(step));
        schemas.insert(step.reply_type(), reply_schema(step));
    }
    schemas
}

fn command_schema(step: Step) -> Value {
    match step {
        Step::Reserve => schema::<ReserveStock>(),
        Step::CalculateTax => schema::<CalculateTax>(),
        Step::Charge => schema::<ChargePayment>(),
        Step::Release => schema::<ReleaseStock>(),
        Step::Refund => schema::<RefundPayment>(),
    }
}

fn reply_schema(step: Step) -> Value {
    let mut schema = match step {
        Step::Reserve => schema::<ReplyPayload<Reserved>>(),
        Step::CalculateTax => schema::<ReplyPayload<TaxCalculated>>(),
        Step::Charge => schema::<ReplyPayload<Charged>>(),
        Step::Release => schema::<ReplyPayload<Released>>(),
        Step::Refund => schema::<ReplyPayload<Refunded>>(),
    };
    // The generic type's name means nothing outside Rust.
    schema["title"] = format!("{} payload", step.reply_type()).into();
    schema
}

/// Draft-07, the JSON Schema dialect that AsyncAPI's own schema format
/// extends and that validators in every language read.
fn schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// A key of the AsyncAPI document, where keys end up as identifiers in
/// generated code: `inventory.reserve.reply` is `inventoryReserveReply`.
fn camel(name: &str) -> String {
    let mut out = String::new();
    for (i, part) in name.split('.').enumerate() {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.push(first);
            } else {
                out.extend(first.to_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

fn steps_of(worker: WorkerKind) -> impl Iterator<Item = Step> {
    Step::ALL.into_iter().filter(move |s| s.worker() == worker)
}

fn reply_key(step: Step) -> String {
    camel(&step.reply_type())
}

fn channel_message_refs(channel: &str, keys: impl IntoIterator<Item = String>) -> Value {
    keys.into_iter()
        .map(|key| json!({ "$ref": format!("#/channels/{channel}/messages/{key}") }))
        .collect()
}

/// An AsyncAPI operation: `action` ("send" or "receive") of the messages
/// `keys` on the channel `channel`.
fn operation(
    action: &str,
    channel: &str,
    summary: impl Into<String>,
    keys: impl IntoIterator<Item = String>,
    bindings: &Value,
) -> Value {
    json!({
        "action": action,
        "channel": { "$ref": format!("#/channels/{channel}") },
        "summary": summary.into(),
        "messages": channel_message_refs(channel, keys),
        "bindings": bindings,
    })
}

/// `operation`, answered on the replies channel with the messages `keys`.
fn replied(mut operation: Value, keys: impl IntoIterator<Item = String>) -> Value {
    operation["reply"] = json!({
        "channel": { "$ref": "#/channels/replies" },
        "messages": channel_message_refs("replies", keys),
    });
    operation
}

fn component_message_refs(keys: impl IntoIterator<Item = String>) -> Value {
    let map: Map<String, Value> = keys
        .into_iter()
        .map(|key| {
            let reference = json!({ "$ref": format!("#/components/messages/{key}") });
            (key, reference)
        })
        .collect();
    Value::Object(map)
}

fn exchange_channel(
    name: String,
    kind: &str,
    address: Value,
    description: String,
    messages: Value,
) -> Value {
    json!({
        "address": address,
        "description": description,
        "messages": messages,
        "bindings": { "amqp": {
            "is": "routingKey",
            "exchange": { "name": name, "type": kind, "durable": true, "autoDelete": false },
            "bindingVersion": AMQP_BINDING_VERSION,
        }},
    })
}

/// How `Topology::declare` treats a queue, which the contract check reads:
/// a build that never redeclares an existing queue can change the
/// arguments it creates queues with without breaking another build.
pub const DECLARATION: &str =
    "an existing queue is used as it is (a passive check); x-queue-arguments apply only when the queue is created, and x-queue-policy is the RabbitMQ policy `<prefix>checkout-work-queues`";

/// A durable quorum queue as `Topology::declare` makes it.
fn queue_channel(
    name: String,
    dead_letters: Option<String>,
    bound: Value,
    description: String,
    messages: Value,
) -> Value {
    let arguments: Map<String, Value> = queue_arguments()
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                QueueArgument::Text(text) => Value::from(text),
                QueueArgument::Int(n) => Value::from(n),
            };
            (name.to_owned(), value)
        })
        .collect();
    // A work queue's changeable settings are the policy's, not arguments.
    let policy = dead_letters
        .map(|dlx| json!({ "dead-letter-exchange": dlx, "delivery-limit": DELIVERY_LIMIT }));
    json!({
        "address": name,
        "description": description,
        "parameters": { "prefix": { "$ref": "#/components/parameters/prefix" } },
        "messages": messages,
        "bindings": { "amqp": {
            "is": "queue",
            "queue": { "name": name, "durable": true, "exclusive": false, "autoDelete": false },
            "bindingVersion": AMQP_BINDING_VERSION,
        }},
        "x-queue-arguments": arguments,
        "x-declaration": DECLARATION,
        "x-queue-policy": policy,
        "x-bound-to": bound,
    })
}

/// The envelope with its `step`, `type` and `payload` pinned to one message.
fn envelope_payload(step: Step, message_type: &str) -> Value {
    json!({
        "allOf": [
            { "$ref": "./schemas/envelope.json" },
            {
                "type": "object",
                "properties": {
                    "step": { "const": step.routing_key() },
                    "type": { "const": message_type },
                    "payload": { "$ref": format!("./schemas/{message_type}.json") },
                },
            },
        ],
    })
}

fn envelope_message(step: Step, message_type: &str, summary: String) -> Value {
    json!({
        "name": message_type,
        "title": message_type,
        "summary": summary,
        "contentType": "application/json",
        "correlationId": { "$ref": "#/components/correlationIds/sagaId" },
        "headers": { "$ref": "#/components/schemas/headers" },
        "payload": envelope_payload(step, message_type),
        "bindings": { "amqp": {
            "messageType": message_type,
            "bindingVersion": AMQP_BINDING_VERSION,
        }},
        "x-amqp-properties": {
            "content_type": "application/json",
            "delivery_mode": 2,
            "type": message_type,
            "message_id": "the envelope's message_id",
            "correlation_id": "the envelope's saga_id",
            "timestamp": "when it was published, in seconds since the Unix epoch",
        },
    })
}

fn asyncapi() -> Value {
    let topology = Topology::new(PREFIX);
    let publish = json!({ "amqp": {
        "deliveryMode": 2,
        "mandatory": true,
        "timestamp": true,
        "bindingVersion": AMQP_BINDING_VERSION,
    }});
    let consume = json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING_VERSION } });

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    for step in Step::ALL {
        let key = camel(step.routing_key());
        let worker = step.worker().as_str();
        messages.insert(
            key.clone(),
            envelope_message(
                step,
                step.routing_key(),
                format!("A command to the {worker} worker."),
            ),
        );
        messages.insert(
            reply_key(step),
            envelope_message(
                step,
                &step.reply_type(),
                format!("The {worker} worker's answer to `{step}`: ok, rejected or transient."),
            ),
        );
        channels.insert(
            key.clone(),
            exchange_channel(
                topology.command_exchange(),
                "topic",
                step.routing_key().into(),
                format!("`{step}` commands on the command exchange."),
                component_message_refs([key.clone()]),
            ),
        );
        operations.insert(
            format!("send{}", capitalized(&key)),
            replied(
                operation(
                    "send",
                    &key,
                    format!("The orchestrator sends `{step}` (from its outbox, after a commit)."),
                    [key.clone()],
                    &publish,
                ),
                [reply_key(step)],
            ),
        );
    }

    channels.insert(
        "replies".to_owned(),
        exchange_channel(
            topology.reply_exchange(),
            "direct",
            REPLY_ROUTING_KEY.into(),
            "Every reply, on the reply exchange; any orchestrator instance may take it.".into(),
            component_message_refs(Step::ALL.into_iter().map(reply_key)),
        ),
    );
    operations.insert(
        "sendReply".to_owned(),
        operation(
            "send",
            "replies",
            "A worker answers a command: same saga_id, step and attempt, only after its database transaction committed; it acks the command once the reply is confirmed.",
            Step::ALL.into_iter().map(reply_key),
            &publish,
        ),
    );

    for worker in WorkerKind::ALL {
        let key = format!("{}Commands", worker.as_str());
        let steps: Vec<String> = steps_of(worker).map(|s| camel(s.routing_key())).collect();
        let replies: Vec<String> = steps_of(worker).map(reply_key).collect();
        channels.insert(
            key.clone(),
            queue_channel(
                topology.command_queue(worker),
                Some(topology.dead_letter_exchange()),
                json!([{
                    "exchange": topology.command_exchange(),
                    "routingKey": Topology::command_binding_key(worker),
                }]),
                format!(
                    "The {} worker's queue, shared by all its copies (competing consumers).",
                    worker.as_str()
                ),
                component_message_refs(steps.clone()),
            ),
        );
        operations.insert(
            format!("receive{}", capitalized(&key)),
            replied(
                operation(
                    "receive",
                    &key,
                    format!(
                        "The {} worker takes its commands. A redelivered message_id gets the reply it got before; a body it cannot read is dead-lettered.",
                        worker.as_str()
                    ),
                    steps,
                    &consume,
                ),
                replies,
            ),
        );
    }

    channels.insert(
        "orchestratorReplies".to_owned(),
        queue_channel(
            topology.reply_queue(),
            Some(topology.dead_letter_exchange()),
            json!([{ "exchange": topology.reply_exchange(), "routingKey": REPLY_ROUTING_KEY }]),
            "The queue every orchestrator instance takes replies from.".into(),
            component_message_refs(Step::ALL.into_iter().map(reply_key)),
        ),
    );
    operations.insert(
        "receiveReplies".to_owned(),
        operation(
            "receive",
            "orchestratorReplies",
            "The orchestrator takes replies; one for another attempt than the awaited one is recorded and ignored.",
            Step::ALL.into_iter().map(reply_key),
            &consume,
        ),
    );

    messages.insert(
        "deadLetter".to_owned(),
        json!({
            "name": "dead-letter",
            "title": "dead letter",
            "summary": "A message that could not be handled, as it was, with why.",
            "description": format!(
                "The original body, properties and headers, plus `{ERROR_HEADER}`. A consumer sends it here when the body is not UTF-8 or JSON, the envelope version or message type is unknown, or the payload is invalid. A message that crashed its consumer {DELIVERY_LIMIT} times is dead-lettered by RabbitMQ itself, with `x-death` instead of `{ERROR_HEADER}`."
            ),
            "headers": { "$ref": "#/components/schemas/deadLetterHeaders" },
            "payload": { "description": "The original body, unchanged; it may not be JSON." },
        }),
    );
    channels.insert(
        "deadLetterExchange".to_owned(),
        exchange_channel(
            topology.dead_letter_exchange(),
            "fanout",
            Value::Null,
            "Dead letters, published with an empty routing key (a fanout exchange ignores it)."
                .into(),
            component_message_refs(["deadLetter".to_owned()]),
        ),
    );
    channels.insert(
        "deadLetters".to_owned(),
        queue_channel(
            topology.dead_letter_queue(),
            None,
            json!([{ "exchange": topology.dead_letter_exchange(), "routingKey": "" }]),
            "Every dead letter, kept for support to inspect.".into(),
            component_message_refs(["deadLetter".to_owned()]),
        ),
    );
    operations.insert(
        "sendDeadLetter".to_owned(),
        operation(
            "send",
            "deadLetterExchange",
            "Any consumer takes a message it can never handle off its queue: it publishes a copy here, then acks the original.",
            ["deadLetter".to_owned()],
            &publish,
        ),
    );
    operations.insert(
        "receiveDeadLetters".to_owned(),
        operation(
            "receive",
            "deadLetters",
            "The orchestrator records dead letters for the support API.",
            ["deadLetter".to_owned()],
            &consume,
        ),
    );

    let traceparent_header = json!({
        "type": "string",
        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C trace context: the handler's span is a child of it, so one checkout is one trace across services.",
    });
    let schemas: Map<String, Value> = schemas()
        .into_keys()
        .map(|name| {
            let reference = json!({ "$ref": format!("./schemas/{name}.json") });
            (camel(&name), reference)
        })
        .chain([
            (
                "headers".to_owned(),
                json!({
                    "type": "object",
                    "properties": { (traceparent::HEADER): traceparent_header },
                    "required": [traceparent::HEADER],
                }),
            ),
            (
                "deadLetterHeaders".to_owned(),
                json!({
                    "type": "object",
                    "properties": {
                        (traceparent::HEADER): traceparent_header,
                        (ERROR_HEADER): {
                            "type": "string",
                            "description": "Why the message was dead-lettered.",
                        },
                        "x-original-exchange": { "type": "string" },
                        "x-original-routing-key": { "type": "string" },
                        "x-death": { "description": "Set by RabbitMQ when the queue dead-lettered it." },
                    },
                }),
            ),
        ])
        .collect();

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Checkout saga messages",
            "version": ENVELOPE_VERSION.to_string(),
            "description": format!(
                "The commands the saga orchestrator sends to the inventory, tax and payment workers, and their replies, over RabbitMQ (AMQP 0-9-1). The version is the envelope's. `{PREFIX}` in a name is the deployment's `AMQP_PREFIX` (empty by default). Readers ignore fields they do not know; a breaking change comes as a new envelope version or message type."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "parameters": {
                "prefix": {
                    "description": "AMQP_PREFIX: prepended to every exchange and queue name.",
                    "default": "",
                },
            },
            "correlationIds": {
                "sagaId": {
                    "description": "The saga id: the envelope's saga_id, also sent as the AMQP correlation_id property.",
                    "location": "$message.payload#/saga_id",
                },
            },
        },
    })
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Pretty JSON with every object's keys sorted, whatever order the map type
/// of this build of `serde_json` keeps, and a final newline.
fn to_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value)).expect("JSON values serialize");
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, &Value> = map.iter().collect();
            Value::Object(
                ordered
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
