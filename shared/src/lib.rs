//! The infrastructure every service of the checkout backend shares: the
//! AMQP topology and broker plumbing, the database and its migrations,
//! configuration, TLS and telemetry. The messages themselves are the
//! `saga-protocol` crate.

pub mod broker;
pub mod broker_commands;
pub mod broker_users;
pub mod config;
pub mod consumer;
pub mod contract;
pub mod database;
pub mod failure;
pub mod queue_policies;
pub mod schema;
pub mod service_config;
pub mod shutdown;
pub mod stored;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod traceparent;
