//! The dead-letter recorder: every message that could not be handled ends
//! in the dead-letter queue; the orchestrator instances consume it and keep
//! each one, with its saga and reason, in the `dead_letters` table that the
//! support API lists.

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;
use saga_protocol::printable;
use saga_shared::broker::{header, Broker, ERROR_HEADER};
use saga_shared::consumer::{hold_until_settled, run_consumer_until_stopped, Settled};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::dead_letters::NewDeadLetter;
use crate::store::Store;

/// Bytes of a dead letter's body kept for reading.
const PREVIEW_BYTES: usize = 2048;

pub async fn run_dead_letter_recorder_until_stopped(
    store: Store,
    broker: Arc<Broker>,
    prefetch: u16,
    stop: CancellationToken,
) {
    let queue = broker.topology().dead_letter_queue();
    let tag = format!("dead-letters-{}", Uuid::new_v4().simple());
    let handle = |delivery| {
        let (store, stop) = (store.clone(), stop.clone());
        async move { record(&store, delivery, &stop).await }
    };
    let _ = run_consumer_until_stopped(&broker, &queue, &tag, prefetch, &stop, handle).await;
}

/// Why RabbitMQ itself dead-lettered a message (`x-death`), when no
/// consumer said why: the delivery limit, a rejection, an expiry.
fn death_reason(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let field = |name: &str| match first.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let reason = field("reason")?;
    Some(match field("queue") {
        Some(queue) => format!("{reason} (queue {queue})"),
        None => reason,
    })
}

fn preview(body: &[u8]) -> String {
    let cut = &body[..body.len().min(PREVIEW_BYTES)];
    printable(&String::from_utf8_lossy(cut)).into_owned()
}

/// A dead letter as stored: every text printable, whatever the message held.
fn record_of(delivery: &Delivery) -> NewDeadLetter {
    let clean = |text: Option<String>| text.map(|t| printable(&t).into_owned());
    let short =
        |value: &Option<lapin::types::ShortString>| clean(value.as_ref().map(|v| v.to_string()));
    let properties = &delivery.properties;
    let reason = header(delivery, ERROR_HEADER)
        .or_else(|| death_reason(delivery))
        .unwrap_or_else(|| "unknown".to_owned());
    NewDeadLetter {
        saga_id: properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<Uuid>().ok()),
        reason: printable(&reason).into_owned(),
        message_id: short(properties.message_id()),
        message_type: short(properties.kind()),
        original_exchange: clean(header(delivery, "x-original-exchange")),
        routing_key: clean(header(delivery, "x-original-routing-key")),
        body_bytes: i32::try_from(delivery.data.len()).unwrap_or(i32::MAX),
        body_preview: preview(&delivery.data),
    }
}

async fn record(store: &Store, delivery: Delivery, stop: &CancellationToken) {
    let mut record = record_of(&delivery);
    let mut stripped = false;
    loop {
        match hold_until_settled(&delivery, stop, || store.record_dead_letter(&record)).await {
            Settled::Done(()) => break,
            Settled::Stopped => return,
            // The recorder is the end of the line: a dead letter it cannot
            // store is kept with what can always be stored, rather than
            // dead-lettered again (it would come straight back here).
            Settled::Permanent(why) if !stripped => {
                record = record.stripped(&why);
                stripped = true;
            }
            Settled::Permanent(why) => {
                tracing::error!(message_id = ?record.message_id, %why, "dead letter cannot be recorded; dropped");
                break;
            }
        }
    }
    tracing::warn!(saga_id = ?record.saga_id, reason = %record.reason, "dead letter recorded");
    metrics::counter!(crate::metrics::DEAD_LETTERS).increment(1);
    let _ = delivery.ack(BasicAckOptions::default()).await;
}
