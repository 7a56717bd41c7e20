//! End-to-end tests: the real orchestrator and the three real workers as
//! tokio tasks, talking over the local RabbitMQ, each on its own fresh
//! PostgreSQL database, under a random AMQP prefix.

mod binary;
mod budget;
mod checkout;
mod console;
mod crashes;
mod failures;
mod idempotency;
mod metrics;
mod openapi;
mod outages;
mod poison;
mod run_command;
mod sagactl;
mod support_api;
mod system;
mod validation;
