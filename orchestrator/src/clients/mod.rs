//! Checkout clients: the storefronts and apps allowed to call
//! `/v1/checkouts`, each with its own key, its own checkouts and its own
//! limits.

mod keys;
pub mod limits;
mod rate;
mod registry;

pub use keys::{digest, generate_key, valid_name, KeyDigest, SeededKeys, NAME_RULE};
pub use limits::{ClientLimits, LimitOverrides};
pub use rate::RateRefused;
pub use registry::{run_registry_until_stopped, Client, Clients};
