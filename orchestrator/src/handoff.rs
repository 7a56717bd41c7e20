//! Commands handed from the transition that committed them straight to this
//! instance's relay, so that a checkout's next command is published right
//! after the commit, without the relay first reading it back.
//!
//! The outbox row is still written with the transition (the guarantee),
//! but *leased*: due only [`LEASE`] after its commit. No relay claims it
//! meanwhile, so the instance that wrote it publishes it once, from memory,
//! and then deletes it. Should that instance die first, or its publish
//! fail, the row is there for any relay once the lease runs out (or at
//! once: a publish that failed releases its rows).

use std::sync::Arc;
use std::time::Duration;

use saga_shared::broker::{Broker, BrokerError, Outgoing};
use saga_shared::traceparent;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::store::outbox::{Hand, Outbox, StoredCommand};
pub use crate::store::outbox::{HandOff, Handed, LEASE};

/// How long a batch waits for its confirms. A queue without a leader (its
/// quorum lost) may never confirm; its messages count as refused rather
/// than holding every other command back.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);
/// A handed command whose lease ends within this is left to the claiming
/// path: the lease must outlast its publish and confirm.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// The writing side: the store hands each commit's commands here, and they
/// are published at once, in a task of their own (the committing task goes
/// on to ack its reply or answer its request). Confirmed commands' rows are
/// deleted by the relay, in batches, off the checkout's path.
#[derive(Clone)]
pub struct Lane {
    /// `None`: an instance that dies right after its commits (for tests).
    publisher: Option<Arc<Publisher>>,
}

struct Publisher {
    outbox: Outbox,
    broker: Arc<Broker>,
    /// Wakes the relay's claiming path: for a delayed row, or a handed row
    /// left to it.
    wake: Arc<Notify>,
    confirmed: mpsc::UnboundedSender<Vec<Handed>>,
    /// The publishes in flight, which a stopping relay lets finish.
    publishing: TaskTracker,
}

/// The relay's side: commands published and confirmed, whose rows are to
/// go, and the publishes still in flight.
pub struct Confirmed {
    pub rows: mpsc::UnboundedReceiver<Vec<Handed>>,
    pub publishing: TaskTracker,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("publishing", &self.publisher.is_some())
            .finish()
    }
}

/// A lane publishing through `broker`; the relay woken by `wake` claims
/// what it leaves, and deletes what it confirms (the receiver).
pub fn lane(outbox: Outbox, broker: Arc<Broker>, wake: Arc<Notify>) -> (Lane, Confirmed) {
    // Unbounded: it holds what publishes confirmed until the relay's next
    // delete, which runs as soon as it is woken.
    let (confirmed, rows) = mpsc::unbounded_channel();
    let publishing = TaskTracker::new();
    let publisher = Publisher {
        outbox,
        broker,
        wake,
        confirmed,
        publishing: publishing.clone(),
    };
    let lane = Lane {
        publisher: Some(Arc::new(publisher)),
    };
    (lane, Confirmed { rows, publishing })
}

impl Lane {
    /// A lane that leases rows and never publishes them: what an instance
    /// that dies right after its commits leaves behind.
    pub fn detached() -> Self {
        Lane { publisher: None }
    }
}

impl Hand for Lane {
    /// Publishes what one commit handed over, from a task of its own.
    fn hand(&self, handoff: HandOff) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        if handoff.due_in.is_some() {
            // Its timer must cover the delayed row: the claim finds when.
            publisher.wake.notify_one();
        }
        if handoff.commands.is_empty() {
            return;
        }
        let publisher = publisher.clone();
        let publishing = publisher.publishing.clone();
        publishing.spawn(async move {
            let published = publish_handed(
                &publisher.outbox,
                &publisher.broker,
                handoff.commands,
                handoff.committed_at,
            )
            .await;
            if !published.confirmed.is_empty() {
                // The relay gone (stopping): the rows wait out their
                // lease, and a relay publishes them again, which the
                // workers' inboxes absorb.
                let _ = publisher.confirmed.send(published.confirmed);
            }
            if published.left_to_relay {
                publisher.wake.notify_one();
            }
        });
    }
}

/// What became of commands handed over by their commit.
struct HandedPublish {
    /// Published and confirmed: their rows are to be deleted.
    confirmed: Vec<Handed>,
    /// Some were left to the claiming path (not confirmed, or their lease
    /// about to end): it should look now.
    left_to_relay: bool,
}

/// Publishes commands handed over by the transition that committed them,
/// from memory. The rows of commands not confirmed are released to the
/// claiming path (due at once), which backs off, parks or waits out an
/// outage as for any row.
#[tracing::instrument(level = "debug", skip_all, fields(published, released))]
async fn publish_handed(
    outbox: &Outbox,
    broker: &Broker,
    commands: Vec<Handed>,
    committed_at: Instant,
) -> HandedPublish {
    // Close to its lease's end a row may be claimed by any relay at any
    // moment: leave it to them rather than publish it twice. Under a
    // resource alarm the claiming path holds every row until it clears.
    if committed_at + LEASE - LEASE_MARGIN <= Instant::now() || broker.blocked().is_some() {
        return left_to_relay(outbox, commands).await;
    }
    let spans: Vec<tracing::Span> = commands
        .iter()
        .map(|handed| publish_span(&handed.command, Some(handed.attempt), 0))
        .collect();
    let results =
        publish_with_confirms(broker, commands.iter().map(|c| &c.command).zip(&spans)).await;
    let (mut confirmed, mut unsent) = (Vec::new(), Vec::new());
    for ((command, result), span) in commands.into_iter().zip(results).zip(spans) {
        match result {
            Ok(()) => {
                span.record("outcome", "confirmed");
                confirmed.push(command);
            }
            Err(error) => {
                span.record("outcome", "released");
                span.record("error", tracing::field::display(&error));
                unsent.push(command);
            }
        }
    }
    let span = tracing::Span::current();
    span.record("published", confirmed.len());
    span.record("released", unsent.len());
    metrics::counter!(crate::metrics::OUTBOX_PUBLISHED).increment(confirmed.len() as u64);
    if unsent.is_empty() {
        return HandedPublish {
            confirmed,
            left_to_relay: false,
        };
    }
    tracing::warn!(
        commands = unsent.len(),
        "handed commands not confirmed; the outbox relay takes them over"
    );
    HandedPublish {
        confirmed,
        left_to_relay: left_to_relay(outbox, unsent).await.left_to_relay,
    }
}

/// Leaves `commands` to the claiming path: released when they can be,
/// else (the database away) once their lease ends.
async fn left_to_relay(outbox: &Outbox, commands: Vec<Handed>) -> HandedPublish {
    if let Err(error) = outbox.release(&commands).await {
        tracing::warn!(%error, commands = commands.len(), "cannot release handed commands; they wait out their lease");
    }
    HandedPublish {
        confirmed: Vec::new(),
        left_to_relay: true,
    }
}

/// Publishes committed commands, pipelined, each under its own publish
/// span, and waits up to [`CONFIRM_WITHIN`] for their confirms: the
/// handed path and the claiming path send the same messages.
pub async fn publish_with_confirms<'a>(
    broker: &Broker,
    commands: impl Iterator<Item = (&'a StoredCommand, &'a tracing::Span)>,
) -> Vec<Result<(), BrokerError>> {
    let exchange = broker.topology().command_exchange();
    let messages: Vec<Outgoing> = commands
        .map(|(command, span)| Outgoing {
            exchange: exchange.clone(),
            routing_key: command.routing_key.clone(),
            body: command.body.clone().into_bytes(),
            message_id: command.message_id,
            saga_id: command.saga_id,
            message_type: command.message_type.clone(),
            // The worker's span becomes a child of this publish.
            traceparent: traceparent::of(span).unwrap_or_else(|| command.traceparent.clone()),
        })
        .collect();
    let publishing = std::time::Instant::now();
    let results = broker.publish_all(&messages, CONFIRM_WITHIN).await;
    metrics::histogram!(crate::metrics::RELAY_PUBLISH).record(publishing.elapsed().as_secs_f64());
    results
}

/// One command's publish, from the pipelined send to its confirm: a child
/// of the transition that wrote the row (its context is stored with the
/// row), whichever instance and task publish it, however much later.
/// `attempt`: the saga attempt it carries, `None` in a row an instance of
/// the previous build wrote; a handed command was never refused.
pub fn publish_span(
    command: &StoredCommand,
    attempt: Option<u32>,
    publish_attempts: i32,
) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        saga_id = %command.saga_id,
        routing_key = %command.routing_key,
        attempt,
        publish_attempts,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    traceparent::continue_from(&span, Some(&command.traceparent));
    span
}
