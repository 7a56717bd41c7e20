//! What every service of the checkout backend shares: the message contract,
//! the AMQP topology and broker plumbing, configuration, TLS,
//! telemetry and money.

pub mod broker;
pub mod broker_commands;
pub mod broker_users;
pub mod config;
pub mod consumer;
pub mod contract;
pub mod database;
pub mod envelope;
pub mod failure;
pub mod messages;
pub mod money;
pub mod queue_policies;
pub mod schema;
pub mod service_config;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod traceparent;

// Its own unit tests, and those of the modules that read variables, use
// it too.
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use envelope::{Envelope, ENVELOPE_VERSION};
pub use messages::{Step, WorkerKind};
