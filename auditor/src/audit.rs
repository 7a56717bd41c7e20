//! One audit, a slice of sagas at a time: memory is that of a slice, not of
//! the history.
//!
//! A full audit walks every saga in id order, a slice of [`SLICE`] at a
//! time, with the records of the same id range in the workers' databases
//! (so a record whose saga is gone is seen with its range too), then checks
//! the stock and the idempotency keys once, summed by the servers. An
//! incremental audit reads only the sagas that finished since its watermark
//! (less a margin for commits in flight) and the live ones, with the
//! records of those sagas and of any saga created since: its cost follows
//! the new checkouts, not the history. It leaves the stock and the keys to
//! the full audit, whose reads grow with the catalogue and the history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_protocol::saga_id::uuid_v7_floor;
use uuid::Uuid;

use crate::facts::LedgerLine;
use crate::invariants::{self, Violation};
use crate::report::{Report, Summary};
use crate::snapshots::{known_now, unknown_ids, Slice, Snapshots};
use crate::stripe::{StripeAudit, StripeBooks};
use crate::{AuditError, Sources};

/// Sagas read at a time by a full audit.
pub const SLICE: i64 = 5_000;
/// How far before its watermark an incremental audit looks: a saga whose
/// transition committed just after the last snapshot was taken may carry
/// an `updated_at` from just before it.
pub const WATERMARK_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What an audit covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Full,
    /// What changed since this watermark (an earlier audit's `as_of`).
    Since(DateTime<Utc>),
}

pub async fn run(
    sources: &Sources,
    stripe: Option<&StripeAudit>,
    scope: Scope,
) -> Result<Report, AuditError> {
    run_in_slices(sources, stripe, scope, SLICE).await
}

/// [`run`], a full audit reading `slice` sagas at a time.
pub async fn run_in_slices(
    sources: &Sources,
    stripe: Option<&StripeAudit>,
    scope: Scope,
    slice: i64,
) -> Result<Report, AuditError> {
    let mut snapshots = Snapshots::take(sources).await?;
    // Read after the orchestrator's snapshot, as the workers' databases are.
    let books = match stripe {
        None => None,
        Some(stripe) => Some(
            crate::stripe::read(stripe, &sources.payment, snapshots.now.timestamp())
                .await
                .map_err(AuditError::Provider)?,
        ),
    };
    let stripe_ledger: Option<BTreeMap<Uuid, LedgerLine>> = books
        .as_ref()
        .map(|books: &StripeBooks| books.ledger.iter().map(|(k, v)| (*k, *v)).collect());
    let mut audit = Audit {
        violations: Vec::new(),
        summary: Summary::default(),
    };
    match scope {
        Scope::Full => {
            let mut after = Uuid::nil();
            loop {
                let sagas = snapshots.sagas_after(after, slice).await?;
                let through = match sagas.last() {
                    Some(last) if sagas.len() as i64 == slice => last.id,
                    // The last slice takes every record above it too.
                    _ => Uuid::max(),
                };
                let slice = Slice::range(after, through);
                audit
                    .slice(sources, &mut snapshots, sagas, &slice, &stripe_ledger)
                    .await?;
                if through == Uuid::max() {
                    break;
                }
                after = through;
            }
            let (products, held) = snapshots.stock().await?;
            audit.summary.skus = products.len();
            audit
                .violations
                .extend(invariants::check_stock(&products, held));
            let shared = snapshots.shared_keys().await?;
            audit.violations.extend(invariants::check_keys(&shared));
        }
        Scope::Since(watermark) => {
            let since =
                watermark - chrono::Duration::from_std(WATERMARK_MARGIN).unwrap_or_default();
            let ids = snapshots.changed_since(since).await?;
            let sagas = snapshots.sagas_by_id(&ids).await?;
            // Records of sagas created since: an orphan among them is new.
            let created_since = uuid_v7_floor(since.into());
            let slice = Slice::ids_and_newer(ids, created_since);
            audit
                .slice(sources, &mut snapshots, sagas, &slice, &stripe_ledger)
                .await?;
        }
    }
    let mut violations = audit.violations;
    let mut notes = Vec::new();
    if let Some(books) = books {
        violations.extend(invariants::confirmed_orphans(&books.confirmed_orphans));
        notes = crate::report::stripe_notes(&books);
    }
    violations.sort();
    Ok(Report {
        violations,
        summary: audit.summary,
        notes,
        as_of: snapshots.now,
        scope,
    })
}

struct Audit {
    violations: Vec<Violation>,
    summary: Summary,
}

impl Audit {
    async fn slice(
        &mut self,
        sources: &Sources,
        snapshots: &mut Snapshots,
        sagas: Vec<crate::facts::Saga>,
        slice: &Slice,
        stripe_ledger: &Option<BTreeMap<Uuid, LedgerLine>>,
    ) -> Result<(), AuditError> {
        let mut facts = snapshots.facts_of(sagas, slice).await?;
        if let Some(ledger) = stripe_ledger {
            facts.ledger = ledger
                .range((
                    std::ops::Bound::Excluded(slice.after),
                    std::ops::Bound::Included(slice.through),
                ))
                .chain(slice.ids.iter().filter_map(|id| ledger.get_key_value(id)))
                .map(|(id, line)| (*id, *line))
                .collect();
        }
        // A record whose saga this snapshot does not know may be a saga
        // created since: asked again, now.
        facts.created_since = known_now(sources, &unknown_ids(&facts)).await?;
        self.violations
            .extend(invariants::check_sagas(&facts, sources.deadline_grace));
        self.summary.add(&Summary::of(&facts));
        Ok(())
    }
}
