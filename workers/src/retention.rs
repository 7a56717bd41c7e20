//! Inbox retention: a worker's inbox keeps the reply of every command it
//! handled, so that a redelivered command is answered again without acting
//! twice. Redeliveries come within minutes (a lost ack, a restart); a row
//! weeks old only grows the table, so rows past the retention are pruned in
//! small batches by a background task. Even past it a command acts at most
//! once: every effect is keyed by saga id as well (one reservation, one
//! payment per saga).

use std::time::Duration;

use saga_shared::broker::Backoff;
use saga_shared::config::{parsed_or, ConfigError, Source};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement: short transactions, no long lock on the inbox.
const BATCH: i64 = 1_000;
/// How often the task looks for rows past the retention.
const EVERY: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DAYS: u32 = 7;
const MAX_DAYS: u32 = 3_650;

/// `INBOX_RETENTION_DAYS` (default 7): how long inbox rows are kept.
pub fn inbox_retention(source: &dyn Source) -> Result<Duration, ConfigError> {
    let days = parsed_or(source, "INBOX_RETENTION_DAYS", DEFAULT_DAYS)?;
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ConfigError::Invalid {
            name: "INBOX_RETENTION_DAYS",
            reason: format!("{days}: must be from 1 to {MAX_DAYS} days"),
        });
    }
    Ok(Duration::from_secs(u64::from(days) * 24 * 60 * 60))
}

/// Prunes at start, then every ten minutes, until `stop`.
pub async fn run_inbox_pruning_until_stopped(
    pool: PgPool,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::holding();
    loop {
        let wait = match prune_inbox(&pool, retention, &stop).await {
            Ok(pruned) => {
                if pruned > 0 {
                    tracing::info!(pruned, "inbox rows past their retention pruned");
                }
                backoff = Backoff::holding();
                EVERY
            }
            Err(error) => {
                let wait = backoff.next_delay().max(Duration::from_secs(1));
                tracing::warn!(%error, ?wait, "inbox pruning failed; retrying");
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

#[cfg(test)]
mod tests {
    use saga_testkit::environment;

    use super::*;

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
