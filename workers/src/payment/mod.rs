//! The payment worker: one payment per saga, charged and refunded through a
//! payment provider: Stripe, or a deterministic simulator chosen by payment
//! method; and an operator switch that rehearses a provider outage.

pub mod config;
pub mod handler;
pub mod outage;
pub mod provider;
pub mod provider_intent;
pub mod retention;
pub mod rules;
pub mod simulator;
pub mod store;
pub mod stripe;

#[cfg(feature = "failpoints")]
pub use config::Failpoint;
pub use config::{PaymentConfig, ProviderKind};
pub use handler::Payment;
pub use provider::{IdempotencyKey, Lookup, PaymentProvider, ProviderAnswer};
pub use simulator::{ledger, LedgerLine, Simulator};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/payment");
pub static SCHEMA: saga_shared::schema::Schema =
    saga_shared::schema::Schema::new("payment", &MIGRATOR);
