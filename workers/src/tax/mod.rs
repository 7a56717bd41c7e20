//! The tax worker: tax per line from the ship-to country and region and the
//! line's tax category, in basis points, rounded half up per line.

pub mod handler;
pub mod rates;
pub mod rules;

pub use handler::Tax;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/tax");
pub static SCHEMA: saga_shared::schema::Schema = saga_shared::schema::Schema::new("tax", &MIGRATOR);
