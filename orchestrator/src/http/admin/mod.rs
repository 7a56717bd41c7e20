//! The support API, one file per resource: find sagas, read their
//! timelines, retry or cancel them, alone or in bulk; the failures, dead
//! letters and refused commands behind them; the console's numbers; the
//! checkout clients. Every route needs a support bearer token
//! ([`Actor`](super::auth::Actor)).

pub mod bulk_retry;
pub mod clients;
pub mod dead_letters;
pub mod failures;
pub mod json_body;
pub mod outbox;
pub mod park_extension;
pub mod reason;
pub mod saga_actions;
pub mod saga_detail;
pub mod saga_id;
pub mod saga_list;
pub mod saga_search;
pub mod stats;

pub mod page;
pub mod query;

mod field;
