//! The inventory worker: a catalogue of products and, per saga, one
//! reservation of stock. Per SKU, on hand = available + held by active
//! reservations, always.

pub mod catalogue;
pub mod handler;
pub mod prices;
pub mod reservation;
pub mod retention;
pub mod rules;
pub mod store;

pub use handler::Inventory;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/inventory");
pub static SCHEMA: saga_shared::schema::Schema =
    saga_shared::schema::Schema::new("inventory", &MIGRATOR);
