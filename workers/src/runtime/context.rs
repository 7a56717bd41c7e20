//! What the runtime's parts pass each other: the worker's handler with its
//! pool and broker, and a command as received.

use std::sync::Arc;

use lapin::message::Delivery;
use saga_protocol::messages::Command;
use saga_protocol::Envelope;
use saga_shared::broker::Broker;
use sqlx::PgPool;

/// The handler a worker runs, with what it runs on.
pub(super) struct Context<H> {
    pub(super) handler: H,
    pub(super) pool: PgPool,
    pub(super) broker: Arc<Broker>,
}

/// A decoded command and the delivery that brought it.
pub(super) struct Received {
    pub(super) delivery: Delivery,
    pub(super) command: Envelope<Command>,
    pub(super) span: tracing::Span,
}
