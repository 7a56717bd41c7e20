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

use std::time::Duration;

use std::sync::Arc;

use saga_shared::broker::Broker;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// How long a handed row is left to the instance that wrote it: long
/// enough for a publish and its confirm under load, short enough that a
/// command an instance died holding is sent soon by another.
pub const LEASE: Duration = Duration::from_secs(3);

/// A command committed with its transition, as the relay publishes it.
#[derive(Debug, Clone)]
pub struct Handed {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub routing_key: String,
    pub message_type: String,
    pub body: String,
    pub traceparent: String,
    pub attempt: u32,
}

/// What one committed transition (or batch of them) leaves the relay.
#[derive(Debug)]
pub struct HandOff {
    /// Leased rows, to publish now.
    pub commands: Vec<Handed>,
    /// When the earliest row written unleased (a delayed retry) is due:
    /// the relay's timer must not sleep past it.
    pub due_in: Option<Duration>,
    /// When the rows were committed: their lease counts from here.
    pub committed_at: Instant,
}

impl HandOff {
    /// Adds what another transition of the same commit left.
    pub fn merge(&mut self, other: HandOff) {
        self.commands.extend(other.commands);
        self.due_in = match (self.due_in, other.due_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn empty() -> Self {
        HandOff {
            commands: Vec::new(),
            due_in: None,
            committed_at: Instant::now(),
        }
    }
}

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
    pool: PgPool,
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
pub fn lane(pool: PgPool, broker: Arc<Broker>, wake: Arc<Notify>) -> (Lane, Confirmed) {
    // Unbounded: it holds what publishes confirmed until the relay's next
    // delete, which runs as soon as it is woken.
    let (confirmed, rows) = mpsc::unbounded_channel();
    let publishing = TaskTracker::new();
    let publisher = Publisher {
        pool,
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

    /// Publishes what one commit handed over, from a task of its own.
    pub fn hand(&self, handoff: HandOff) {
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
            let published = crate::relay::publish_handed(
                &publisher.pool,
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
