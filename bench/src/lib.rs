//! `checkout-bench`: sizes a deployment of the checkout system. Closed and
//! open loops against a running system, the machine's floor measured in the
//! same run, CSV and plot of the results; idle CPU, and a year of history
//! loaded behind a running system to measure it again.

pub mod checkout;
pub mod closed_loop;
pub mod compare;
pub mod error;
pub mod floor;
pub mod floor_broker;
pub mod floor_postgres;
pub mod history;
pub mod idle;
pub mod latency;
pub mod open_loop;
pub mod plot;
pub mod results;
pub mod schedule;
pub mod service_usage;
pub mod step;
pub mod verdict;
