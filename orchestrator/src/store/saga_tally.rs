//! Sagas by status, counted without counting the whole table each time.
//!
//! Live sagas (running, compensating, suspended) are few: they are counted
//! each time through the `(status, id)` index. Finished sagas only grow,
//! and a finished saga never changes status again, so each is counted once.
//! Ids are UUIDv7, ordered by creation: a cut-off follows the clock (less a
//! margin for a saga created but not yet committed), and each count reads
//! only the sagas the cut-off passed since the last one, a range of the
//! primary key. The finished ones among them are settled for good; the
//! live ones (a saga parked for days, a slow compensation) are kept by id
//! and looked up by id at each count until they finish. So one old parked
//! saga costs one lookup, never a recount of everything after it.
//!
//! Retention deletes finished sagas long after they were counted, from
//! whichever instance has its turn, and adds each to `archived_sagas` in
//! the same transaction. Every count reads that table in its statement:
//! what was archived since this tally's first count leaves its settled
//! counts, so every instance counts what the table holds.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use sqlx::PgPool;
use uuid::Uuid;

use super::id_time::{uuid_v7_floor, UNCOMMITTED_MARGIN};
use crate::saga::SagaStatus;

const LIVE: [SagaStatus; 3] = [
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Suspended,
];
const FINISHED: [SagaStatus; 3] = [
    SagaStatus::Completed,
    SagaStatus::Compensated,
    SagaStatus::Cancelled,
];

/// The finished sagas below `settled_below`, counted for good, and the
/// live ones below it, waiting to finish.
#[derive(Debug)]
pub struct SagaTally {
    settled_below: Uuid,
    settled: Vec<(String, i64)>,
    /// Sagas below the cut-off that were live when it passed them.
    waiting: HashSet<Uuid>,
    /// `archived_sagas` as the first count read it: its whole-table count
    /// never saw those.
    archived_at_first_count: Option<Vec<(String, i64)>>,
    uncommitted_margin: Duration,
}

impl Default for SagaTally {
    fn default() -> Self {
        SagaTally::with_margin(UNCOMMITTED_MARGIN)
    }
}

impl SagaTally {
    /// A tally that takes every saga created more than `margin` ago as
    /// committed.
    pub fn with_margin(margin: Duration) -> Self {
        SagaTally {
            settled_below: Uuid::nil(),
            settled: Vec::new(),
            waiting: HashSet::new(),
            archived_at_first_count: None,
            uncommitted_margin: margin,
        }
    }

    /// Below this id every saga is counted for good or waited for by id:
    /// it follows the clock, whatever is still live below it.
    pub fn cut_off(&self) -> Uuid {
        self.settled_below
    }

    /// Sagas in each status now. One statement, so one snapshot: a saga
    /// finishing meanwhile is counted once, live or finished.
    pub async fn count(&mut self, pool: &PgPool) -> Result<Vec<(SagaStatus, i64)>, sqlx::Error> {
        let live: Vec<&str> = LIVE.iter().map(|s| s.as_str()).collect();
        let finished: Vec<&str> = FINISHED.iter().map(|s| s.as_str()).collect();
        let below = self
            .settled_below
            .max(uuid_v7_floor(SystemTime::now() - self.uncommitted_margin));
        let waiting: Vec<Uuid> = self.waiting.iter().copied().collect();
        // Each part reads an index range or a list of ids, never the
        // history below the last cut-off.
        let rows: Vec<(String, String, i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT 'live', status, count(*), NULL::uuid FROM sagas
             WHERE status = ANY($1) GROUP BY status
             UNION ALL
             SELECT 'settled', status, count(*), NULL FROM sagas
             WHERE id >= $3 AND id < $4 AND status = ANY($2) GROUP BY status
             UNION ALL
             SELECT 'waiting', status, 0, id FROM sagas
             WHERE id >= $3 AND id < $4 AND status = ANY($1)
             UNION ALL
             SELECT 'recent', status, count(*), NULL FROM sagas
             WHERE id >= $4 AND status = ANY($2) GROUP BY status
             UNION ALL
             SELECT 'was_waiting', status, 0, id FROM sagas WHERE id = ANY($5)
             UNION ALL
             SELECT 'archived', status, sagas, NULL FROM archived_sagas",
        )
        .bind(&live)
        .bind(&finished)
        .bind(self.settled_below)
        .bind(below)
        .bind(&waiting)
        .fetch_all(pool)
        .await?;
        let mut counts: Vec<(SagaStatus, i64)> = LIVE
            .iter()
            .chain(&FINISHED)
            .map(|status| (*status, 0))
            .collect();
        let mut add = |status: &str, n: i64| {
            if let Some((_, count)) = counts.iter_mut().find(|(s, _)| s.as_str() == status) {
                *count += n;
            }
        };
        let mut settled = self.settled.clone();
        let mut settle =
            |status: String, n: i64| match settled.iter_mut().find(|(s, _)| *s == status) {
                Some((_, count)) => *count += n,
                None => settled.push((status, n)),
            };
        // A waited-for saga that is gone (an operator's hand) stops being
        // waited for; one still live stays.
        let mut still_waiting = HashSet::new();
        let mut archived = Vec::new();
        for (kind, status, n, id) in rows {
            match (kind.as_str(), id) {
                ("settled", _) => settle(status, n),
                ("archived", _) => archived.push((status, n)),
                ("waiting", Some(id)) => {
                    still_waiting.insert(id);
                }
                ("was_waiting", Some(id)) => {
                    if FINISHED.iter().any(|s| s.as_str() == status) {
                        settle(status, 1);
                    } else {
                        still_waiting.insert(id);
                    }
                }
                _ => add(&status, n),
            }
        }
        let archived_at_first_count = self
            .archived_at_first_count
            .clone()
            .unwrap_or_else(|| archived.clone());
        let before = |status: &str| {
            archived_at_first_count
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n)
        };
        for (status, n) in &settled {
            let archived_since = archived
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, now)| now - before(status));
            add(status, *n - archived_since);
        }
        // Kept only once the whole count succeeded.
        self.archived_at_first_count = Some(archived_at_first_count);
        self.settled = settled;
        self.settled_below = below;
        self.waiting = still_waiting;
        Ok(counts)
    }
}
