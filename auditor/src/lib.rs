//! The auditor: a read-only operator tool that checks the checkout
//! invariants ("nothing lost") across every service's database. It is the
//! one component allowed to read another service's tables, and it only
//! reads them.

pub mod config;
pub mod facts;
pub mod invariants;
pub mod report;
pub mod stripe;

pub use config::{Config, ConfigError};
pub use facts::{AuditError, Database, Sources};
pub use invariants::{Invariant, Violation};
pub use report::{Report, Summary};

/// Reads every database once and checks every invariant, the provider's
/// side from the simulator's ledger.
pub async fn audit(sources: &Sources) -> Result<Report, AuditError> {
    audit_with(sources, None).await
}

/// [`audit`], the provider's side read from Stripe when `stripe` is given.
pub async fn audit_with(
    sources: &Sources,
    stripe: Option<&stripe::StripeAudit>,
) -> Result<Report, AuditError> {
    let mut facts = facts::load(sources).await?;
    let mut books = None;
    if let Some(stripe) = stripe {
        let read = stripe::read(stripe, &sources.payment, facts.now.timestamp())
            .await
            .map_err(AuditError::Provider)?;
        facts.ledger = read.ledger.clone();
        facts::recheck_unknown(sources, &mut facts).await?;
        books = Some(read);
    }
    let mut violations = invariants::check(&facts, sources.deadline_grace);
    let mut notes = Vec::new();
    if let Some(books) = books {
        violations.extend(invariants::confirmed_orphans(&books.confirmed_orphans));
        violations.sort();
        notes = report::stripe_notes(&books);
    }
    Ok(Report {
        violations,
        summary: Summary::of(&facts),
        notes,
    })
}
