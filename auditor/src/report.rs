//! What an audit found, and how it prints: one line per violation, then a
//! summary line.

use std::fmt;

use crate::facts::{Facts, SagaStatus};
use crate::invariants::Violation;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sagas: usize,
    pub completed: usize,
    pub compensated: usize,
    pub cancelled: usize,
    pub suspended: usize,
    /// Running or compensating.
    pub in_flight: usize,
    pub skus: usize,
    /// Sagas gone to the archive whose stock or money records are still
    /// kept by the workers (their own retention is longer): not audited.
    pub archived: usize,
}

impl Summary {
    /// Adds the counts of another slice of the same audit.
    pub fn add(&mut self, other: &Summary) {
        self.sagas += other.sagas;
        self.completed += other.completed;
        self.compensated += other.compensated;
        self.cancelled += other.cancelled;
        self.suspended += other.suspended;
        self.in_flight += other.in_flight;
        self.skus += other.skus;
        self.archived += other.archived;
    }

    pub fn of(facts: &Facts) -> Summary {
        let mut summary = Summary {
            sagas: facts.sagas.len(),
            skus: facts.products.len(),
            ..Summary::default()
        };
        let known: std::collections::HashSet<_> = facts.sagas.iter().map(|s| s.id).collect();
        let archived: std::collections::HashSet<_> = facts
            .reservations
            .keys()
            .chain(facts.payments.keys())
            .chain(facts.ledger.keys())
            .filter(|id| !known.contains(id) && facts.may_be_archived(id))
            .collect();
        summary.archived = archived.len();
        for saga in &facts.sagas {
            match saga.status {
                Ok(SagaStatus::Completed) => summary.completed += 1,
                Ok(SagaStatus::Compensated) => summary.compensated += 1,
                Ok(SagaStatus::Cancelled) => summary.cancelled += 1,
                Ok(SagaStatus::Suspended) => summary.suspended += 1,
                Ok(SagaStatus::Running | SagaStatus::Compensating) => summary.in_flight += 1,
                // Counted in the total, and reported as a violation.
                Err(_) => {}
            }
        }
        summary
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub summary: Summary,
    /// What is worth saying that is no violation: orphans cancelled or
    /// left, PaymentIntents of other systems.
    pub notes: Vec<String>,
    /// The orchestrator's clock at its snapshot: the next incremental
    /// audit's watermark.
    pub as_of: chrono::DateTime<chrono::Utc>,
    pub scope: crate::Scope,
}

/// The notes of a `--provider stripe` audit.
pub fn stripe_notes(books: &crate::stripe::StripeBooks) -> Vec<String> {
    let mut notes = Vec::new();
    for orphan in &books.cancelled {
        notes.push(format!(
            "CANCELLED orphan PaymentIntent {} saga={} (unconfirmed, {} never moved)",
            orphan.intent, orphan.saga, orphan.amount
        ));
    }
    for orphan in &books.unconfirmed_orphans {
        notes.push(format!(
            "ORPHAN unconfirmed PaymentIntent {} saga={} ({}, nothing moved; --cancel-orphans cancels it)",
            orphan.intent, orphan.saga, orphan.status
        ));
    }
    if books.foreign > 0 {
        notes.push(format!(
            "NOTE {} PaymentIntents carry no saga_id: not this system's, not audited",
            books.foreign
        ));
    }
    notes
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VIOLATION {} saga=", self.invariant.name())?;
        match self.saga {
            Some(id) => write!(f, "{id}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " sku={} {}",
            self.sku.as_deref().unwrap_or("-"),
            self.facts
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for violation in &self.violations {
            writeln!(f, "{violation}")?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        let s = &self.summary;
        if s.archived > 0 {
            writeln!(
                f,
                "NOTE {} archived sagas still have worker records (kept longer); not audited",
                s.archived
            )?;
        }
        let what = match self.scope {
            crate::Scope::Full => String::new(),
            crate::Scope::Since(watermark) => format!(
                " changed since {} (stock and keys: full audits only)",
                watermark.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        };
        writeln!(
            f,
            "audited {} sagas{what} (completed {}, compensated {}, cancelled {}, suspended {}, \
             in flight {}), {} skus: {} violations",
            s.sagas,
            s.completed,
            s.compensated,
            s.cancelled,
            s.suspended,
            s.in_flight,
            s.skus,
            self.violations.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Invariant;
    use uuid::Uuid;

    #[test]
    fn prints_one_line_per_violation_then_the_summary() {
        let report = Report {
            violations: vec![
                Violation {
                    invariant: Invariant::CompletedCharged,
                    saga: Some(Uuid::from_u128(1)),
                    sku: None,
                    facts: "expected charge 2145 USD cents, found charged 4290 USD refunded 0"
                        .into(),
                },
                Violation {
                    invariant: Invariant::StockConserved,
                    saga: None,
                    sku: Some("sku-a".into()),
                    facts: "on_hand 10".into(),
                },
            ],
            summary: Summary {
                sagas: 3,
                completed: 1,
                compensated: 1,
                in_flight: 1,
                skus: 2,
                ..Summary::default()
            },
            notes: Vec::new(),
            as_of: chrono::Utc::now(),
            scope: crate::Scope::Full,
        };
        assert_eq!(
            report.to_string(),
            "VIOLATION completed-charged saga=00000000-0000-0000-0000-000000000001 sku=- \
             expected charge 2145 USD cents, found charged 4290 USD refunded 0\n\
             VIOLATION stock-conserved saga=- sku=sku-a on_hand 10\n\
             audited 3 sagas (completed 1, compensated 1, cancelled 0, suspended 0, \
             in flight 1), 2 skus: 2 violations\n"
        );
    }
}
