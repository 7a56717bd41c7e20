//! Retention in a worker's database, pruned in small batches by one
//! background task:
//!
//! - The inbox keeps the reply of every command handled, so that a
//!   redelivered command is answered again without acting twice.
//!   Redeliveries come within minutes (a lost ack, a restart); rows past
//!   `INBOX_RETENTION_DAYS` only grow the table. Even past it a command
//!   acts at most once: every effect is keyed by saga id as well (one
//!   reservation, one payment per saga).
//! - Records of sagas older than their retention: reservations
//!   (`RETENTION_DAYS`, as the orchestrator's sagas), payments and the
//!   provider's ledger (`MONEY_RETENTION_DAYS`). Saga ids are UUIDv7, so
//!   "older" is a range of the saga-id key, and what was pruned before is
//!   never read again. The horizon is written before anything is deleted,
//!   for the auditor.

use std::time::{Duration, SystemTime};

use saga_protocol::saga_id::uuid_v7_floor;
use saga_protocol::WorkerKind;
use saga_shared::broker::Backoff;
use saga_shared::config::{parsed_or, ConfigError, Source};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows deleted per statement: short transactions, no long lock on the inbox.
const BATCH: i64 = 1_000;
/// How often the task looks for rows past the retention.
const EVERY: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DAYS: u32 = 7;
const MAX_DAYS: u32 = 3_650;

const DEFAULT_RECORD_DAYS: u32 = 90;
/// Seven years: what bookkeeping law commonly asks of payment records.
const DEFAULT_MONEY_DAYS: u32 = 2_555;
const MAX_RECORD_DAYS: u32 = 36_500;
const DAY: u64 = 24 * 60 * 60;

/// `INBOX_RETENTION_DAYS` (default 7): how long inbox rows are kept.
pub fn inbox_retention(source: &dyn Source) -> Result<Duration, ConfigError> {
    let days = parsed_or(source, "INBOX_RETENTION_DAYS", DEFAULT_DAYS)?;
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ConfigError::Invalid {
            name: "INBOX_RETENTION_DAYS",
            reason: format!("{days}: must be from 1 to {MAX_DAYS} days"),
        });
    }
    Ok(Duration::from_secs(u64::from(days) * DAY))
}

/// What a worker keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub inbox: Duration,
    /// The records of a saga: reservations, or payments and the ledger;
    /// `None`: kept for ever (`0` days), or a worker that keeps none.
    pub records: Option<(Records, Duration)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Reservations,
    Payments,
}

impl Retention {
    /// The retention of a `kind` worker: `INBOX_RETENTION_DAYS`, and
    /// `RETENTION_DAYS` (inventory, default 90) or `MONEY_RETENTION_DAYS`
    /// (payment, default 2,555); `0` keeps records for ever.
    pub fn from_source(source: &dyn Source, kind: WorkerKind) -> Result<Self, ConfigError> {
        let records = match kind {
            WorkerKind::Inventory => {
                Some((Records::Reservations, "RETENTION_DAYS", DEFAULT_RECORD_DAYS))
            }
            WorkerKind::Payment => Some((
                Records::Payments,
                "MONEY_RETENTION_DAYS",
                DEFAULT_MONEY_DAYS,
            )),
            WorkerKind::Tax => None,
        };
        let records = match records {
            None => None,
            Some((records, name, default)) => {
                let days = parsed_or(source, name, default)?;
                if days > MAX_RECORD_DAYS {
                    return Err(ConfigError::Invalid {
                        name,
                        reason: format!(
                            "{days}: must be from 0 (keep for ever) to {MAX_RECORD_DAYS} days"
                        ),
                    });
                }
                (days > 0).then(|| (records, Duration::from_secs(u64::from(days) * DAY)))
            }
        };
        Ok(Retention {
            inbox: inbox_retention(source)?,
            records,
        })
    }
}

/// Prunes at start, then every ten minutes, until `stop`.
pub async fn run_retention_until_stopped(
    pool: PgPool,
    retention: Retention,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::holding();
    loop {
        let pruned = async {
            let inbox = prune_inbox(&pool, retention.inbox, &stop).await?;
            let records = match retention.records {
                Some((records, after)) => prune_records(&pool, records, after, &stop).await?,
                None => 0,
            };
            Ok::<_, sqlx::Error>((inbox, records))
        };
        let wait = match pruned.await {
            Ok((inbox, records)) => {
                if inbox + records > 0 {
                    tracing::info!(inbox, records, "rows past their retention pruned");
                }
                backoff = Backoff::holding();
                EVERY
            }
            Err(error) => {
                let wait = backoff.next_delay().max(Duration::from_secs(1));
                tracing::warn!(%error, ?wait, "pruning failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// Deletes inbox rows received longer than `retention` ago, `BATCH` at a
/// time, until none is left or `stop`. Returns how many it deleted.
#[tracing::instrument(skip_all)]
pub async fn prune_inbox(
    pool: &PgPool,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut pruned = 0;
    while !stop.is_cancelled() {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE message_id IN (
                 SELECT message_id FROM inbox
                 WHERE received_at < now() - $1 * interval '1 millisecond'
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        pruned += deleted;
        if deleted < BATCH as u64 {
            break;
        }
    }
    Ok(pruned)
}

/// Deletes the records of sagas created more than `after` ago, oldest
/// first, a batch per transaction, until none is left or `stop`; how many.
#[tracing::instrument(skip_all)]
pub async fn prune_records(
    pool: &PgPool,
    records: Records,
    after: Duration,
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let below = uuid_v7_floor(SystemTime::now() - after);
    advance_horizon(pool, below).await?;
    let mut pruned = 0;
    while !stop.is_cancelled() {
        let deleted = match records {
            Records::Reservations => {
                crate::inventory::retention::delete_reservations_below(pool, below, BATCH).await?
            }
            Records::Payments => {
                crate::payment::retention::delete_payments_below(pool, below, BATCH).await?
            }
        };
        pruned += deleted;
        if deleted < BATCH as u64 {
            break;
        }
    }
    if records == Records::Payments && !stop.is_cancelled() {
        while crate::payment::retention::delete_ledger_below(pool, below, BATCH).await?
            == BATCH as u64
        {}
    }
    Ok(pruned)
}

/// Records, for the auditor, that records below `below` may be gone;
/// never moves back.
async fn advance_horizon(pool: &PgPool, below: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retention_horizon (id, deleted_below) VALUES (true, $1)
         ON CONFLICT (id) DO UPDATE SET
             deleted_below = GREATEST(retention_horizon.deleted_below, EXCLUDED.deleted_below),
             updated_at = now()",
    )
    .bind(below)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use saga_testkit::environment;

    use super::*;

    #[test]
    fn records_are_kept_ninety_days_money_seven_years_and_zero_keeps_them_for_ever() {
        let records = |kind, pairs: &[(&str, &str)]| {
            Retention::from_source(&environment(pairs), kind).map(|r| r.records)
        };
        let days = |n: u64| Duration::from_secs(n * DAY);
        assert_eq!(
            records(WorkerKind::Inventory, &[]).unwrap(),
            Some((Records::Reservations, days(90)))
        );
        assert_eq!(
            records(WorkerKind::Payment, &[("RETENTION_DAYS", "5")]).unwrap(),
            Some((Records::Payments, days(2_555)))
        );
        assert_eq!(records(WorkerKind::Tax, &[]).unwrap(), None);
        assert_eq!(
            records(WorkerKind::Inventory, &[("RETENTION_DAYS", "0")]).unwrap(),
            None
        );
        for (kind, name) in [
            (WorkerKind::Inventory, "RETENTION_DAYS"),
            (WorkerKind::Payment, "MONEY_RETENTION_DAYS"),
        ] {
            for bad in ["-1", "ever", "100000"] {
                let error = records(kind, &[(name, bad)]).unwrap_err().to_string();
                assert!(error.contains(name), "{bad}: {error}");
            }
        }
    }

    #[test]
    fn retention_defaults_to_seven_days_and_names_a_bad_value() {
        assert_eq!(
            inbox_retention(&environment(&[])).unwrap(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            inbox_retention(&environment(&[("INBOX_RETENTION_DAYS", "30")])).unwrap(),
            Duration::from_secs(30 * 24 * 3600)
        );
        for bad in ["0", "-1", "week", "100000"] {
            let error =
                inbox_retention(&environment(&[("INBOX_RETENTION_DAYS", bad)])).unwrap_err();
            assert!(
                error.to_string().contains("INBOX_RETENTION_DAYS"),
                "{bad}: {error}"
            );
        }
    }
}
