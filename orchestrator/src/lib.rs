//! The saga orchestrator: HTTP API, saga engine, store, outbox relay and
//! reply consumer, deadline timer and support tools.

pub mod admin_tokens;
pub mod app;
pub mod archive;
mod batch_timer;
pub mod checkout_view;
pub mod clients;
pub mod config;
pub mod dead_letters;
pub mod deadlines;
pub mod duration_text;
pub mod gauges;
pub mod handoff;
pub mod http;
pub mod listener;
pub mod metrics;
mod named_secrets;
pub mod parked;
pub mod relay;
pub mod replies;
pub mod reply_senders;
pub mod retention;
pub mod saga;
pub mod store;
