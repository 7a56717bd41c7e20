//! Retention: finished sagas older than `RETENTION_DAYS` go to the archive
//! (with their timelines and dead letters), then out of the database, a
//! day at a time, oldest first; so do dead letters no saga holds.
//!
//! Each day is written whole before any of its rows is deleted, and the
//! deletes are small transactions paced to take at most half the time of
//! one connection, so checkouts flowing meanwhile wait on no lock and keep
//! their pool. Only one instance archives at a time (an advisory lock).
//! Live sagas are never touched, however old: a saga parked for months is
//! archived on the day its retention passes after it finishes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use saga_shared::broker::Backoff;
use saga_shared::config::{parsed_or, ConfigError, Source};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::archive::{saga_day, Archive, ArchiveError, ArchiveLocation, Kind};
use crate::store::id_time::uuid_v7_floor;
use crate::store::retention::{DeadLetterRecord, RetentionTurn};
use crate::store::{Store, StoreError};

/// How often an instance looks for what passed its retention.
const EVERY: Duration = Duration::from_secs(60 * 60);
/// Sagas read per statement while a day is written. Each step is a burst
/// of one core's work beside the checkouts: a few milliseconds, shorter
/// than a checkout, so that one overlapping it loses little. (Pages of 500
/// took about 60 ms, and checkouts' p99 rose by a third even at 5%.)
const PAGE: i64 = 100;
/// Sagas deleted per statement, with their timelines (about ten rows
/// each): a few milliseconds of work and of row locks on rows nobody else
/// wants.
const DELETE_BATCH: usize = 50;
/// Retention works a small share of its run's time and rests the rest, so
/// that a backlog of millions goes while checkouts flow: it competes for
/// the same cores and disk, and every step of it is short.
const DEFAULT_BUSY_PERCENT: u32 = 5;
const DEFAULT_DAYS: u32 = 90;
const MAX_DAYS: u32 = 36_500;

/// `RETENTION_DAYS` (default 90; `0`: keep everything), `ARCHIVE` and
/// `RETENTION_BUSY_PERCENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `None`: nothing is archived or deleted.
    pub days: Option<u32>,
    pub archive: ArchiveLocation,
    pub pace: Pace,
}

/// The share of its run's time retention works (`RETENTION_BUSY_PERCENT`,
/// 1 to 100, default 5): after each step it rests until its work is that
/// share of the time since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    busy_percent: u32,
}

impl Pace {
    /// No rest at all: for tests, and a quiet hour's `orchestrator archive`.
    pub const FLAT_OUT: Pace = Pace { busy_percent: 100 };

    fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let busy_percent = parsed_or(source, "RETENTION_BUSY_PERCENT", DEFAULT_BUSY_PERCENT)?;
        if !(1..=100).contains(&busy_percent) {
            return Err(ConfigError::Invalid {
                name: "RETENTION_BUSY_PERCENT",
                reason: format!("{busy_percent}: must be from 1 to 100 (% of the run's time)"),
            });
        }
        Ok(Pace { busy_percent })
    }

    fn rest_after(self, worked: Duration) -> Duration {
        worked * (100 - self.busy_percent) / self.busy_percent
    }
}

impl RetentionConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let days = parsed_or(source, "RETENTION_DAYS", DEFAULT_DAYS)?;
        if days > MAX_DAYS {
            return Err(ConfigError::Invalid {
                name: "RETENTION_DAYS",
                reason: format!("{days}: must be from 0 (keep everything) to {MAX_DAYS} days"),
            });
        }
        Ok(RetentionConfig {
            days: (days > 0).then_some(days),
            archive: ArchiveLocation::from_source(source)?,
            pace: Pace::from_source(source)?,
        })
    }

    pub fn retention(&self) -> Option<Duration> {
        self.days
            .map(|days| Duration::from_secs(u64::from(days) * 24 * 3600))
    }

    /// Whether a checkout created at `created` is past the retention now:
    /// if finished, it is archived (or about to be).
    pub fn is_past(&self, created: DateTime<Utc>) -> bool {
        self.retention()
            .is_some_and(|retention| SystemTime::from(created) + retention < SystemTime::now())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What one run archived.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Archived {
    pub sagas: u64,
    pub dead_letters: u64,
    /// The parts written, as `location/path`.
    pub files: Vec<String>,
    /// Another instance had the turn: this one did nothing.
    pub skipped: bool,
}

/// `orchestrator archive`: one run now, stopped between batches by SIGTERM
/// or ctrl-c.
pub async fn archive_command() -> ExitCode {
    let env = saga_shared::config::Environment;
    let config = saga_shared::database::url(&env).and_then(|url| {
        let retention = RetentionConfig::from_source(&env)?;
        Ok((url, retention))
    });
    let (url, config) = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(retention) = config.retention() else {
        println!("RETENTION_DAYS=0: everything is kept; nothing to archive");
        return ExitCode::SUCCESS;
    };
    let run = async {
        let archive = Archive::open(&config.archive)?;
        let pool = saga_shared::database::connect_for_command(url.expose_secret(), 2)
            .await
            .map_err(StoreError::from)?;
        let store = Store::new(pool, Default::default());
        let stop = saga_shared::shutdown::on_signal();
        archive_past_retention(&store, &archive, retention, config.pace, &stop).await
    };
    match run.await {
        Ok(archived) if archived.skipped => {
            println!("another instance is archiving now; nothing done");
            ExitCode::SUCCESS
        }
        Ok(archived) => {
            println!(
                "archived {} sagas and {} dead letters into {} files at {}",
                archived.sagas,
                archived.dead_letters,
                archived.files.len(),
                config.archive
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Archives at start, then every hour, until `stop`.
pub async fn run_retention_until_stopped(
    store: Store,
    archive: Archive,
    retention: Duration,
    pace: Pace,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::holding();
    loop {
        let wait = match archive_past_retention(&store, &archive, retention, pace, &stop).await {
            Ok(archived) => {
                if archived.sagas + archived.dead_letters > 0 {
                    tracing::info!(
                        sagas = archived.sagas,
                        dead_letters = archived.dead_letters,
                        files = archived.files.len(),
                        archive = archive.location(),
                        "archived what passed its retention"
                    );
                }
                backoff = Backoff::holding();
                EVERY
            }
            Err(error) => {
                let wait = backoff.next_delay().max(Duration::from_secs(5));
                tracing::warn!(%error, ?wait, "retention failed; nothing is lost, retrying");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// Archives and deletes every finished saga created and finished more than
/// `retention` ago, then every dead letter received that long ago that no
/// saga holds. Stops between batches at `stop`; what is left is done by
/// the next run.
#[tracing::instrument(skip_all)]
pub async fn archive_past_retention(
    store: &Store,
    archive: &Archive,
    retention: Duration,
    pace: Pace,
    stop: &CancellationToken,
) -> Result<Archived, RetentionError> {
    let Some(mut turn) = store.retention_turn().await? else {
        return Ok(Archived {
            skipped: true,
            ..Archived::default()
        });
    };
    let mut archived = Archived::default();
    let outcome = archive_with_turn(&mut turn, archive, retention, pace, stop, &mut archived).await;
    turn.end().await;
    outcome.map(|()| archived)
}

async fn archive_with_turn(
    turn: &mut RetentionTurn,
    archive: &Archive,
    retention: Duration,
    pace: Pace,
    stop: &CancellationToken,
    archived: &mut Archived,
) -> Result<(), RetentionError> {
    let cut_off = SystemTime::now() - retention;
    let finished_before = DateTime::<Utc>::from(cut_off);
    let created_below = uuid_v7_floor(cut_off);
    let mut pacer = Pacer::start(pace);
    turn.advance_retention_horizon(created_below, finished_before)
        .await?;
    while !stop.is_cancelled() {
        let Some(oldest) = turn
            .oldest_archivable_saga(created_below, finished_before)
            .await?
        else {
            break;
        };
        let Some(day) = saga_day(oldest) else {
            tracing::warn!(saga_id = %oldest, "a saga whose id is not a UUIDv7 cannot be archived by day; left");
            break;
        };
        let from = day_start(day);
        let below = day_start(day.succ_opt().unwrap_or(day)).min(created_below);
        let (ids, file) = write_day_of_sagas(
            turn,
            archive,
            (day, from, below),
            finished_before,
            &mut pacer,
            stop,
        )
        .await?;
        let Some(file) = file else { break };
        archived.files.push(file);
        for batch in ids.chunks(DELETE_BATCH) {
            archived.sagas += turn.delete_archived_sagas(batch).await?;
            if stop.is_cancelled() {
                // The rest are archived already; the next run writes them
                // into a further part and deletes them then.
                return Ok(());
            }
            pacer.rest(stop).await;
        }
    }
    archive_dead_letters(turn, archive, finished_before, &mut pacer, stop, archived).await
}

/// Writes one part of `day` with every archivable saga in `[from, below)`;
/// the ids it holds, and the part (none when stopped first).
async fn write_day_of_sagas(
    turn: &mut RetentionTurn,
    archive: &Archive,
    (day, from, below): (NaiveDate, Uuid, Uuid),
    finished_before: DateTime<Utc>,
    pacer: &mut Pacer,
    stop: &CancellationToken,
) -> Result<(Vec<Uuid>, Option<String>), RetentionError> {
    let mut writer = archive.writer(Kind::Sagas, day).await?;
    let mut ids = Vec::new();
    let mut after = Uuid::nil();
    loop {
        if stop.is_cancelled() {
            writer.abort().await;
            return Ok((Vec::new(), None));
        }
        let page = turn
            .archivable_sagas(from, below, after, finished_before, PAGE)
            .await?;
        for (id, line) in &page {
            writer.push(line).await?;
            ids.push(*id);
        }
        pacer.rest(stop).await;
        match page.last() {
            Some((last, _)) if page.len() as i64 == PAGE => after = *last,
            _ => break,
        }
    }
    let file = writer.finish().await?;
    Ok((ids, Some(file)))
}

async fn archive_dead_letters(
    turn: &mut RetentionTurn,
    archive: &Archive,
    received_before: DateTime<Utc>,
    pacer: &mut Pacer,
    stop: &CancellationToken,
    archived: &mut Archived,
) -> Result<(), RetentionError> {
    let mut after = 0;
    while !stop.is_cancelled() {
        let page = turn.dead_letters_from_oldest(after, PAGE).await?;
        // The old end of the table, up to the first one inside retention.
        let old: Vec<_> = page
            .iter()
            .take_while(|letter| letter.at < received_before)
            .collect();
        let Some(last) = old.last() else { break };
        after = last.key;
        let mut by_day: BTreeMap<NaiveDate, Vec<&DeadLetterRecord>> = BTreeMap::new();
        for letter in old.iter().filter(|letter| !letter.held) {
            by_day
                .entry(letter.at.date_naive())
                .or_default()
                .push(letter);
        }
        for (day, letters) in by_day {
            let mut writer = archive.writer(Kind::DeadLetters, day).await?;
            for letter in &letters {
                writer.push(&letter.line).await?;
            }
            archived.files.push(writer.finish().await?);
            let keys: Vec<i64> = letters.iter().map(|letter| letter.key).collect();
            archived.dead_letters += turn.delete_dead_letters(&keys).await?;
            pacer.rest(stop).await;
        }
        if old.len() < page.len() || (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok(())
}

/// Measures retention's work since it last rested, and rests as long as
/// its pace asks: the run's reads, compression, uploads and deletes all
/// count.
struct Pacer {
    pace: Pace,
    since: Instant,
}

impl Pacer {
    fn start(pace: Pace) -> Self {
        Pacer {
            pace,
            since: Instant::now(),
        }
    }

    async fn rest(&mut self, stop: &CancellationToken) {
        let rest = self.pace.rest_after(self.since.elapsed());
        if !rest.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = stop.cancelled() => {}
            }
        }
        self.since = Instant::now();
    }
}

fn day_start(day: NaiveDate) -> Uuid {
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    uuid_v7_floor(SystemTime::from(start))
}

#[cfg(test)]
mod tests {
    use saga_shared::config::variables;

    use super::*;

    #[test]
    fn retention_defaults_to_ninety_days_zero_keeps_everything_and_a_bad_value_is_named() {
        let config = |pairs: &[(&str, &str)]| RetentionConfig::from_source(&variables(pairs));
        assert_eq!(config(&[]).unwrap().days, Some(90));
        assert_eq!(config(&[("RETENTION_DAYS", "0")]).unwrap().days, None);
        assert_eq!(config(&[("RETENTION_DAYS", "30")]).unwrap().days, Some(30));
        assert_eq!(config(&[]).unwrap().pace, Pace { busy_percent: 5 });
        assert_eq!(
            config(&[("RETENTION_BUSY_PERCENT", "100")]).unwrap().pace,
            Pace::FLAT_OUT
        );
        for bad in ["0", "101", "half"] {
            let error = config(&[("RETENTION_BUSY_PERCENT", bad)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("RETENTION_BUSY_PERCENT"), "{error}");
        }
        for bad in ["-1", "ninety", "100000"] {
            let error = config(&[("RETENTION_DAYS", bad)]).unwrap_err().to_string();
            assert!(error.contains("RETENTION_DAYS"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_checkout_is_past_retention_only_once_its_days_have_passed() {
        let config = RetentionConfig::from_source(&variables(&[("RETENTION_DAYS", "90")])).unwrap();
        assert!(config.is_past(Utc::now() - chrono::Duration::days(91)));
        assert!(!config.is_past(Utc::now() - chrono::Duration::days(89)));
        let keep = RetentionConfig::from_source(&variables(&[("RETENTION_DAYS", "0")])).unwrap();
        assert!(!keep.is_past(Utc::now() - chrono::Duration::days(10_000)));
    }
}
