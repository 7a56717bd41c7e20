//! Sagas by status, counted without counting the whole table each time.
//!
//! Live sagas (running, compensating, suspended) are few: they are counted
//! each time through the `(status, id)` index. Finished sagas only grow,
//! and a finished saga never changes status again, so they are counted
//! once and then only where new ones can appear: ids are UUIDv7, ordered
//! by creation, and below the oldest live saga (less a margin for a saga
//! created but not yet committed) every saga is finished for good. That
//! settled part is counted once and kept; each count reads the finished
//! sagas above it only, a range of the primary key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use uuid::Uuid;

use crate::saga::SagaStatus;

/// Longest a saga's id can precede its commit: its id is drawn at POST,
/// and the request times out long before this.
const UNCOMMITTED_MARGIN: Duration = Duration::from_secs(120);

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

/// The finished sagas below `settled_below`, counted for good.
#[derive(Debug)]
pub struct SagaTally {
    settled_below: Uuid,
    settled: Vec<(String, i64)>,
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
            uncommitted_margin: margin,
        }
    }

    /// Sagas in each status now. One statement, so one snapshot: a saga
    /// finishing meanwhile is counted once, live or finished.
    pub async fn count(&mut self, pool: &PgPool) -> Result<Vec<(SagaStatus, i64)>, sqlx::Error> {
        let live: Vec<&str> = LIVE.iter().map(|s| s.as_str()).collect();
        let finished: Vec<&str> = FINISHED.iter().map(|s| s.as_str()).collect();
        let rows: Vec<(String, Option<String>, i64, Option<Uuid>)> = sqlx::query_as(
            "WITH live AS (
                 SELECT status, count(*) AS n FROM sagas WHERE status = ANY($1) GROUP BY status
             ), mark AS (
                 -- The oldest live saga: the first id of each live status
                 -- in the (status, id) index.
                 SELECT greatest($3::uuid, least(
                     (SELECT o.id FROM unnest($1::text[]) AS l(status),
                          LATERAL (SELECT id FROM sagas WHERE sagas.status = l.status
                                   ORDER BY id LIMIT 1) o
                      ORDER BY o.id LIMIT 1),
                     $4::uuid)) AS below
             )
             SELECT 'live', status, n, NULL::uuid FROM live
             UNION ALL
             SELECT 'settled', status, count(*), NULL FROM sagas, mark
             WHERE id >= $3 AND id < mark.below AND status = ANY($2) GROUP BY status
             UNION ALL
             SELECT 'recent', status, count(*), NULL FROM sagas, mark
             WHERE id >= mark.below AND status = ANY($2) GROUP BY status
             UNION ALL
             SELECT 'mark', NULL, 0, below FROM mark",
        )
        .bind(&live)
        .bind(&finished)
        .bind(self.settled_below)
        .bind(uuid_v7_floor(SystemTime::now() - self.uncommitted_margin))
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
        let mut below = self.settled_below;
        for (kind, status, n, mark) in rows {
            match (kind.as_str(), status) {
                ("settled", Some(status)) => match settled.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, count)) => *count += n,
                    None => settled.push((status, n)),
                },
                ("mark", _) => below = mark.unwrap_or(below),
                (_, Some(status)) => add(&status, n),
                _ => {}
            }
        }
        for (status, n) in &settled {
            add(status, *n);
        }
        // Kept only once the whole count succeeded.
        self.settled = settled;
        self.settled_below = below;
        Ok(counts)
    }
}

/// The smallest UUIDv7 of the millisecond `at`.
fn uuid_v7_floor(at: SystemTime) -> Uuid {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_of_a_millisecond_precedes_every_id_drawn_in_it() {
        let at = SystemTime::now();
        let floor = uuid_v7_floor(at);
        assert_eq!(floor.get_version_num(), 7);
        let drawn = Uuid::now_v7();
        assert!(floor <= drawn, "{floor} > {drawn}");
        assert!(uuid_v7_floor(at + Duration::from_millis(1)) > floor);
        // An id drawn a millisecond before is below it.
        let earlier = uuid_v7_floor(at - Duration::from_millis(1));
        assert!(earlier < floor);
    }
}
