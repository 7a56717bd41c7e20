//! The auditor: a read-only operator tool that checks the checkout
//! invariants ("nothing lost") across every service's database. It is the
//! one component allowed to read another service's tables, and it only
//! reads them.

pub mod config;
pub mod facts;
pub mod invariants;
pub mod report;

pub use config::{Config, ConfigError};
pub use facts::{AuditError, Database, Sources};
pub use invariants::{Invariant, Violation};
pub use report::{Report, Summary};

/// Reads every database once and checks every invariant.
pub async fn audit(sources: &Sources) -> Result<Report, AuditError> {
    let facts = facts::load(sources).await?;
    Ok(Report {
        violations: invariants::check(&facts, sources.deadline_grace),
        summary: Summary::of(&facts),
    })
}
