//! The auditor: a read-only operator tool that checks the checkout
//! invariants ("nothing lost") across every service's database. It is the
//! one component allowed to read another service's tables, and it only
//! reads them.

pub mod audit;
pub mod config;
pub mod facts;
pub mod invariants;
pub mod report;
pub mod run_state;
pub mod snapshots;
pub mod stripe;

pub use audit::Scope;
pub use config::{Config, ConfigError};
pub use facts::{AuditError, Database, Sources};
pub use invariants::{Invariant, Violation};
pub use report::{Report, Summary};

/// A full audit: every invariant over every saga, the provider's side from
/// the simulator's ledger.
pub async fn audit(sources: &Sources) -> Result<Report, AuditError> {
    audit_with(sources, None).await
}

/// [`audit`], the provider's side read from Stripe when `stripe` is given.
pub async fn audit_with(
    sources: &Sources,
    stripe: Option<&stripe::StripeAudit>,
) -> Result<Report, AuditError> {
    audit::run(sources, stripe, Scope::Full).await
}
