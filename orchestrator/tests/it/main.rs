//! End-to-end tests: the real orchestrator and the three real workers as
//! tokio tasks, talking over the local RabbitMQ, each on its own fresh
//! PostgreSQL database, under a random AMQP prefix (or, in `tls`, a TLS-only
//! broker and database of their own).

mod amounts;
mod answers;
mod binary;
mod broker_alarm;
mod budget;
mod checkout;
mod clients;
mod cluster;
mod console;
mod crashes;
mod dashboard;
mod failover;
mod failures;
mod handoff;
mod http_bounds;
mod idempotency;
mod latency;
mod metrics;
mod node_loss;
mod openapi;
mod outages;
mod parked_ttl;
mod payment_crashes;
mod poison;
mod python_tax;
mod relay;
mod reply_batches;
mod reply_mismatch;
mod reply_senders;
mod retention;
mod run_command;
mod saga_tally;
mod sagactl;
mod search;
mod stripe;
mod support_api;
mod support_input;
mod system;
mod tls;
mod traces;
mod validation;
