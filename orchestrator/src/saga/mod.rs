//! The checkout saga: its state, the pure engine that moves it, and the
//! retry policy. Nothing here does I/O.

pub mod engine;
pub mod model;
pub mod policy;

pub use engine::{handle, start, Effect, Event, HistoryEntry, Transition};
pub use model::{CheckoutRequest, ClientStatus, Saga, SagaStatus};
pub use policy::RetryPolicy;
