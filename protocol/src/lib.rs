//! The checkout saga's wire protocol: the commands the orchestrator sends,
//! the replies the workers send back, the envelope both travel in, and
//! the domain values they carry (money as integer minor units among them,
//! never a float). Types and their JSON only: no broker, no
//! database, no telemetry, so a worker in another language can be written
//! from this crate (and from the JSON Schemas generated from it, in
//! `contract/`).

pub mod envelope;
pub mod messages;
pub mod saga_id;
pub mod status;
pub mod text;
pub mod values;

pub use envelope::{Envelope, ENVELOPE_VERSION};
pub use messages::{Step, WorkerKind};
pub use text::printable;
