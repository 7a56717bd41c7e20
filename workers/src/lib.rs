//! The inventory, tax and payment workers on one runtime. A worker is a
//! [`runtime::Handler`]: `(transaction, command) -> outcome`. The runtime owns
//! the broker, the inbox and the reply, so each worker module holds only its
//! business rules.

pub mod cli;
pub mod error;
pub mod import;
pub mod inbox;
pub mod inventory;
pub mod payment;
pub mod retention;
pub mod runtime;
pub mod tax;

pub use error::WorkerError;
