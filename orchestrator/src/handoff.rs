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

use tokio::sync::mpsc;
use tokio::time::Instant;
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
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.due_in.is_none()
    }

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

/// The writing side: the store, which hands over after each commit.
#[derive(Debug, Clone)]
pub struct Lane(mpsc::UnboundedSender<HandOff>);

/// The relay's side.
pub type LaneReceiver = mpsc::UnboundedReceiver<HandOff>;

/// Unbounded: what it holds is bounded by the transitions in flight (reply
/// prefetch and HTTP concurrency), each already committed; a bounded lane
/// that refused one would leave its rows waiting out their lease.
pub fn lane() -> (Lane, LaneReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Lane(tx), rx)
}

impl Lane {
    /// False when the relay is gone (stopping): the rows then wait out
    /// their lease, and whichever relay is up publishes them.
    pub fn hand(&self, handoff: HandOff) -> bool {
        handoff.is_empty() || self.0.send(handoff).is_ok()
    }
}
