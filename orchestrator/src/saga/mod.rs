//! The checkout saga: its state, the pure engine that moves it, and the
//! retry policies. Nothing here does I/O.

pub mod engine;
pub mod expectations;
pub mod model;
pub mod policy;

pub use engine::{
    act, expire_park, handle, start, Action, Context, Deadline, Effect, Event, HistoryEntry,
    Transition, WrongState,
};
pub use expectations::Mismatch;
pub use model::{CheckoutRequest, ClientStatus, Phase, Saga, SagaStatus};
pub use policy::{OnExhausted, RetryPolicy, StepPolicies};
