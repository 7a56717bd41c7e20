//! Each service's database schema as a deploy step: migrations applied under
//! PostgreSQL's advisory lock with bounded lock waits (`migrate`), and the
//! range of schemas a build can run on, checked at start.
//!
//! A build knows its migrations 1..N. It runs on a schema that holds all of
//! them, and also on one that holds newer migrations it does not know (a
//! newer release migrated it: a rolling upgrade, a rollback) as long as the
//! schema's `schema_compat.min_reader_version` is at most N: that row is the
//! oldest migration a build must know to read and write the schema safely,
//! raised by the migration that breaks older builds.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{Migrate, MigrateError, Migration, Migrator};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::{self, ConfigError, Environment, Source};
use crate::{database, tls};

/// One service's schema: the service's name (in messages, and the command
/// they tell the operator to run) and the migrations this build carries.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub service: &'static str,
    pub migrator: &'static Migrator,
}

impl Schema {
    pub const fn new(service: &'static str, migrator: &'static Migrator) -> Schema {
        Schema { service, migrator }
    }

    /// The newest migration this build knows: the N of 1..N.
    pub fn build_version(&self) -> i64 {
        self.migrations().map(|m| m.version).max().unwrap_or(0)
    }

    fn migrations(&self) -> impl Iterator<Item = &'static Migration> {
        let migrator: &'static Migrator = self.migrator;
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
    }

    fn known(&self, version: i64) -> Option<&'static Migration> {
        self.migrations().find(|m| m.version == version)
    }

    /// This build's migrations, with sqlx told to leave alone the applied
    /// migrations it does not know: whether this build may run beside them
    /// is `schema_compat`'s to say. The lock is taken beforehand, with its
    /// own bound, so sqlx does not take it again.
    fn lenient_migrator(&self) -> Migrator {
        let migrator: &'static Migrator = self.migrator;
        let mut lenient = Migrator {
            migrations: Cow::Borrowed(&migrator.migrations[..]),
            ..Migrator::DEFAULT
        };
        lenient.set_ignore_missing(true);
        lenient.set_locking(false);
        lenient
    }
}

pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The bounds of a migration's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateSettings {
    /// `MIGRATE_LOCK_TIMEOUT`: how long one statement of a migration may
    /// wait for a table lock. While a migration waits for a lock, every
    /// query of the services on that table queues behind it: a short bound
    /// turns a stalled service into a migration to re-run.
    pub lock_timeout: Duration,
    /// `MIGRATE_STATEMENT_TIMEOUT`: how long one statement may run (and how
    /// long a `migrate` waits for another one to finish).
    pub statement_timeout: Duration,
}

impl Default for MigrateSettings {
    fn default() -> Self {
        MigrateSettings {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl MigrateSettings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(MigrateSettings {
            lock_timeout: timeout(source, "MIGRATE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)?,
            statement_timeout: timeout(
                source,
                "MIGRATE_STATEMENT_TIMEOUT",
                DEFAULT_STATEMENT_TIMEOUT,
            )?,
        })
    }
}

/// What a service does with its schema when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStart {
    /// Apply this build's pending migrations, as `migrate` does (the
    /// default: development and tests rely on it).
    Migrate(MigrateSettings),
    /// `MIGRATE_ON_START=false`: only check that this build can run on the
    /// schema; migrating is the deploy's `migrate` step (production).
    Check,
}

impl OnStart {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        // Read whatever MIGRATE_ON_START says: a malformed timeout is an
        // error even where it is not used yet.
        let settings = MigrateSettings::from_source(source)?;
        Ok(match config::parsed_or(source, "MIGRATE_ON_START", true)? {
            true => OnStart::Migrate(settings),
            false => OnStart::Check,
        })
    }
}

fn timeout(
    source: &dyn Source,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match source.get(name) {
        None => Ok(default),
        Some(value) if value.trim().is_empty() => Ok(default),
        Some(value) => parse_timeout(value.trim()).map_err(|reason| ConfigError::Invalid {
            name,
            reason: format!("`{value}`: {reason}"),
        }),
    }
}

/// `250ms`, `5s`, `15min`, `2h`: PostgreSQL's own units for these settings.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    const FORMAT: &str = "expected a whole number and a unit, ms, s, min or h (e.g. 5s)";
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| FORMAT.to_owned())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(FORMAT.to_owned()),
    };
    // PostgreSQL takes these settings in milliseconds, as a 32-bit integer.
    match number.checked_mul(unit_ms) {
        Some(0) => Err("must be more than 0: 0 would wait for ever".to_owned()),
        Some(ms) if ms <= i32::MAX as u64 => Ok(Duration::from_millis(ms)),
        _ => Err("at most 596h, PostgreSQL's largest timeout".to_owned()),
    }
}

/// A timeout as an operator wrote it (`5s`, `15min`).
fn show(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// Why a service cannot start on its schema, or a migration did not apply:
/// each is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{service}: database schema is at version {at}, this build needs {needs}: run `{service} migrate` first")]
    Behind {
        service: &'static str,
        at: i64,
        needs: i64,
    },
    #[error("{service}: database schema is at version {at} but lacks migration {missing} ({description}), which this build needs: run `{service} migrate` first")]
    Lacks {
        service: &'static str,
        at: i64,
        missing: i64,
        description: String,
    },
    #[error("{service}: database schema is at version {at} and requires a build that knows version {requires}; this build knows {knows}")]
    TooNew {
        service: &'static str,
        at: i64,
        requires: i64,
        knows: i64,
    },
    #[error("{service}: migration {version} ({description}) was applied from other contents than this build's file (checksum mismatch): a released migration was edited; restore the file as released and make the change a new migration")]
    Changed {
        service: &'static str,
        version: i64,
        description: String,
    },
    #[error("{service}: migration {version} is marked failed in _sqlx_migrations (an earlier run stopped part-way): repair what it did by hand, delete its row, then run `{service} migrate` again")]
    Dirty { service: &'static str, version: i64 },
    #[error("{service}: migration {version} ({description}) waited {timeout} (MIGRATE_LOCK_TIMEOUT) for a lock other sessions hold on a table it changes, and gave up; {left}; run `{service} migrate` again, at a quieter time or with a longer MIGRATE_LOCK_TIMEOUT")]
    LockTimeout {
        service: &'static str,
        version: i64,
        description: String,
        timeout: String,
        left: &'static str,
    },
    #[error("{service}: migration {version} ({description}) ran for {timeout} (MIGRATE_STATEMENT_TIMEOUT) and was cancelled; {left}; run `{service} migrate` again with a longer MIGRATE_STATEMENT_TIMEOUT")]
    StatementTimeout {
        service: &'static str,
        version: i64,
        description: String,
        timeout: String,
        left: &'static str,
    },
    #[error("{service}: another migration of this database held the migration lock for {timeout} (MIGRATE_STATEMENT_TIMEOUT); nothing was applied; run `{service} migrate` again once it is done")]
    LockBusy {
        service: &'static str,
        timeout: String,
    },
    #[error("{service}: migration {version} ({description}) failed: {error}")]
    Failed {
        service: &'static str,
        version: i64,
        description: String,
        #[source]
        error: sqlx::Error,
    },
    #[error("{service}: database: {error}")]
    Database {
        service: &'static str,
        #[source]
        error: sqlx::Error,
    },
}

/// What a failed migration leaves behind, for its error line.
fn left_behind(migration: Option<&Migration>) -> &'static str {
    match migration {
        Some(m) if m.no_tx => {
            "a no-transaction migration keeps what it did before that (a CREATE INDEX CONCURRENTLY leaves an INVALID index: drop it first)"
        }
        _ => "it was rolled back",
    }
}

/// One applied migration, as `_sqlx_migrations` has it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Applied {
    version: i64,
    description: String,
    checksum: Vec<u8>,
    success: bool,
}

/// What the database says about its schema.
#[derive(Debug, Clone, Default)]
struct State {
    applied: Vec<Applied>,
    /// `schema_compat.min_reader_version`; `None` on a schema from before
    /// that table, which every build can read.
    min_reader_version: Option<i64>,
}

impl State {
    async fn read(conn: &mut PgConnection) -> Result<State, sqlx::Error> {
        let (migrations, compat): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass('_sqlx_migrations') IS NOT NULL,
                    to_regclass('schema_compat') IS NOT NULL",
        )
        .fetch_one(&mut *conn)
        .await?;
        let mut state = State::default();
        if migrations {
            state.applied = sqlx::query_as(
                "SELECT version, description, checksum, success
                 FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut *conn)
            .await?;
        }
        if compat {
            state.min_reader_version =
                sqlx::query_scalar("SELECT max(min_reader_version) FROM schema_compat")
                    .fetch_one(&mut *conn)
                    .await?;
        }
        Ok(state)
    }

    /// The newest migration applied, known to this build or not.
    fn version(&self) -> i64 {
        self.applied
            .iter()
            .filter(|a| a.success)
            .map(|a| a.version)
            .max()
            .unwrap_or(0)
    }

    fn has(&self, version: i64) -> bool {
        self.applied.iter().any(|a| a.version == version)
    }
}

/// The applied migrations are this build's as it has them: none stopped
/// part-way, none edited since.
fn verify_applied(schema: &Schema, state: &State) -> Result<(), SchemaError> {
    if let Some(dirty) = state.applied.iter().find(|a| !a.success) {
        return Err(SchemaError::Dirty {
            service: schema.service,
            version: dirty.version,
        });
    }
    for applied in &state.applied {
        if let Some(known) = schema.known(applied.version) {
            if *known.checksum != *applied.checksum {
                return Err(SchemaError::Changed {
                    service: schema.service,
                    version: applied.version,
                    description: applied.description.clone(),
                });
            }
        }
    }
    Ok(())
}

/// This build can run on the schema: it has every migration the build
/// knows, and asks for no build newer than this one.
fn verify_runnable(schema: &Schema, state: &State) -> Result<(), SchemaError> {
    let (at, knows) = (state.version(), schema.build_version());
    if let Some(requires) = state.min_reader_version.filter(|floor| *floor > knows) {
        return Err(SchemaError::TooNew {
            service: schema.service,
            at,
            requires,
            knows,
        });
    }
    match schema.migrations().find(|m| !state.has(m.version)) {
        None => Ok(()),
        Some(missing) if missing.version > at => Err(SchemaError::Behind {
            service: schema.service,
            at,
            needs: knows,
        }),
        Some(missing) => Err(SchemaError::Lacks {
            service: schema.service,
            at,
            missing: missing.version,
            description: missing.description.to_string(),
        }),
    }
}

/// Where a schema stands against this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub service: &'static str,
    /// The newest migration the database has.
    pub version: i64,
    /// The newest migration this build knows.
    pub build: i64,
    /// What this run applied (version, description), oldest first.
    pub applied: Vec<(i64, String)>,
}

impl Status {
    /// What `migrate` prints: each migration it applied, then where the
    /// schema is.
    pub fn report(&self) -> String {
        let service = self.service;
        let mut out = String::new();
        for (version, description) in &self.applied {
            let _ = writeln!(out, "{service}: applied {version} {description}");
        }
        let at = self.version;
        let _ = match self.applied.is_empty() {
            true => write!(out, "{service}: schema already at version {at}"),
            false => write!(out, "{service}: schema now at version {at}"),
        };
        if at > self.build {
            let _ = write!(
                out,
                " (this build knows {}; the newer migrations are a later release's, and the schema allows this build)",
                self.build
            );
        }
        out.push('\n');
        out
    }
}

/// Applies this build's pending migrations to the database of `pool`, on a
/// session of its own: the migration lock (sqlx's advisory lock on the
/// database, the one every build of this project takes) is waited for at
/// most `statement_timeout`; then each statement waits at most
/// `lock_timeout` for a table lock and runs at most `statement_timeout`.
/// Two `migrate`s at once are safe: the second waits for the first, then
/// finds nothing to do.
pub async fn migrate(
    pool: &PgPool,
    schema: &Schema,
    settings: MigrateSettings,
) -> Result<Status, SchemaError> {
    let database = |error| SchemaError::Database {
        service: schema.service,
        error,
    };
    // Detached: the session's settings and lock must never go back to the
    // pool. Ending the session releases both, whatever happened.
    let mut conn = pool.acquire().await.map_err(database)?.detach();
    let result = migrate_on(&mut conn, schema, settings).await;
    let _ = conn.close().await;
    result
}

async fn migrate_on(
    conn: &mut PgConnection,
    schema: &Schema,
    settings: MigrateSettings,
) -> Result<Status, SchemaError> {
    let database = |error| SchemaError::Database {
        service: schema.service,
        error,
    };
    let failure = |error| migrate_failure(schema, settings, error);
    // Named, so that whoever looks at pg_stat_activity or pg_locks while a
    // migration waits sees what waits.
    set(
        conn,
        "application_name",
        &format!("{} migrate", schema.service),
    )
    .await
    .map_err(database)?;
    set(
        conn,
        "statement_timeout",
        &millis(settings.statement_timeout),
    )
    .await
    .map_err(database)?;
    // Waiting for another migration's advisory lock holds back no query of
    // the services: only statement_timeout bounds it.
    set(conn, "lock_timeout", "0").await.map_err(database)?;
    take_migration_lock(conn, schema, settings).await?;
    set(conn, "lock_timeout", &millis(settings.lock_timeout))
        .await
        .map_err(database)?;

    conn.ensure_migrations_table().await.map_err(failure)?;
    let before = State::read(conn).await.map_err(database)?;
    verify_applied(schema, &before)?;
    // `run_direct` rather than `run`: `run` goes through `Acquire`, whose
    // future is not `Send` for a borrowed connection (the "not general
    // enough" error), and services start in spawned tasks.
    schema
        .lenient_migrator()
        .run_direct(conn)
        .await
        .map_err(failure)?;
    let after = State::read(conn).await.map_err(database)?;
    verify_runnable(schema, &after)?;
    conn.unlock().await.map_err(failure)?;

    let applied = after
        .applied
        .iter()
        .filter(|a| !before.has(a.version))
        .map(|a| (a.version, a.description.clone()))
        .collect();
    Ok(Status {
        service: schema.service,
        version: after.version(),
        build: schema.build_version(),
        applied,
    })
}

/// Takes sqlx's migration lock, saying so when another migration holds it.
///
/// Polled with `pg_try_advisory_lock`, never waited for in one blocking
/// `pg_advisory_lock`: a statement that blocks holds a snapshot, and a
/// `CREATE INDEX CONCURRENTLY` the holder runs waits for every older
/// snapshot to go. Two instances starting at once would then wait for each
/// other for ever (the lock's holder for the waiter's snapshot, the waiter
/// for the lock), out of sight of the deadlock detector.
async fn take_migration_lock(
    conn: &mut PgConnection,
    schema: &Schema,
    settings: MigrateSettings,
) -> Result<(), SchemaError> {
    let database = |error| SchemaError::Database {
        service: schema.service,
        error,
    };
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *conn)
        .await
        .map_err(database)?;
    let id = migration_lock_id(&name);
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(database)?;
        if taken {
            return Ok(());
        }
        if started.elapsed() >= settings.statement_timeout {
            return Err(SchemaError::LockBusy {
                service: schema.service,
                timeout: show(settings.statement_timeout),
            });
        }
        if !said && started.elapsed() >= Duration::from_secs(1) {
            said = true;
            tracing::warn!(
                "another migration of this database holds the migration lock; waiting for it, at most {} (MIGRATE_STATEMENT_TIMEOUT)",
                show(settings.statement_timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key of sqlx's migration lock on database `name`: the one every
/// build of this project (and sqlx's own `Migrate::lock`) takes, so that
/// older releases and this one exclude each other.
fn migration_lock_id(name: &str) -> i64 {
    const CRC_IEEE: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    0x3d32ad9e * (CRC_IEEE.checksum(name.as_bytes()) as i64)
}

/// lock_not_available: `lock_timeout` fired.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// query_canceled: `statement_timeout` fired.
const QUERY_CANCELED: &str = "57014";

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}

fn migrate_failure(schema: &Schema, settings: MigrateSettings, error: MigrateError) -> SchemaError {
    let service = schema.service;
    let description = |version| {
        schema
            .known(version)
            .map(|m| m.description.to_string())
            .unwrap_or_default()
    };
    match error {
        MigrateError::ExecuteMigration(error, version) => {
            let migration = schema.known(version);
            match sqlstate(&error).as_deref() {
                Some(LOCK_NOT_AVAILABLE) => SchemaError::LockTimeout {
                    service,
                    version,
                    description: description(version),
                    timeout: show(settings.lock_timeout),
                    left: left_behind(migration),
                },
                Some(QUERY_CANCELED) => SchemaError::StatementTimeout {
                    service,
                    version,
                    description: description(version),
                    timeout: show(settings.statement_timeout),
                    left: left_behind(migration),
                },
                _ => SchemaError::Failed {
                    service,
                    version,
                    description: description(version),
                    error,
                },
            }
        }
        MigrateError::VersionMismatch(version) => SchemaError::Changed {
            service,
            version,
            description: description(version),
        },
        MigrateError::Dirty(version) => SchemaError::Dirty { service, version },
        MigrateError::Execute(error) => SchemaError::Database { service, error },
        other => SchemaError::Database {
            service,
            error: sqlx::Error::Migrate(Box::new(other)),
        },
    }
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

async fn set(conn: &mut PgConnection, name: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, $2, false)")
        .bind(name)
        .bind(value)
        .execute(conn)
        .await
        .map(drop)
}

/// Checks, without changing anything, that this build can run on the
/// schema of `pool`'s database.
pub async fn check(pool: &PgPool, schema: &Schema) -> Result<Status, SchemaError> {
    let database = |error| SchemaError::Database {
        service: schema.service,
        error,
    };
    let mut conn = pool.acquire().await.map_err(database)?;
    let state = State::read(&mut conn).await.map_err(database)?;
    verify_applied(schema, &state)?;
    verify_runnable(schema, &state)?;
    Ok(Status {
        service: schema.service,
        version: state.version(),
        build: schema.build_version(),
        applied: Vec::new(),
    })
}

/// What a service (or a one-shot command) does with its schema at start:
/// migrate under the lock, or only check, as `on_start` says.
pub async fn prepare(
    pool: &PgPool,
    schema: &Schema,
    on_start: OnStart,
) -> Result<Status, SchemaError> {
    let status = match on_start {
        OnStart::Migrate(settings) => migrate(pool, schema, settings).await?,
        OnStart::Check => check(pool, schema).await?,
    };
    for (version, description) in &status.applied {
        tracing::info!(version, description, "migration applied");
    }
    if status.version > status.build {
        tracing::info!(
            version = status.version,
            build = status.build,
            "the database schema is newer than this build, and allows it"
        );
    } else {
        tracing::debug!(version = status.version, "database schema ready");
    }
    Ok(status)
}

/// The `migrate` subcommand's help, the same for every service.
pub const MIGRATE_HELP: &str = "Apply this build's pending database migrations, then exit.\n\n\
    The deploy step before a new build starts (with MIGRATE_ON_START=false on the \
    services). It holds the database's migration lock, so two at once are safe: the \
    second waits for the first, then finds nothing to do. Each statement waits at most \
    MIGRATE_LOCK_TIMEOUT (default 5s) for a table lock, and runs at most \
    MIGRATE_STATEMENT_TIMEOUT (default 15min; also the longest wait for another \
    migration's lock); units ms, s, min, h. It prints each migration it applied, or \
    `schema already at version N`. Needs only DATABASE_URL. Exit code 0; 2 for a \
    configuration error; 1 for a failed migration, with one line saying which and \
    whether to re-run.";

/// The `migrate` subcommand of every service: `DATABASE_URL` and the
/// timeouts from the environment, this build's migrations applied, what it
/// did on stdout. Exit code 0; 2 for a configuration error or a refused TLS
/// certificate; 1 for anything else, with one line on stderr.
pub async fn migrate_command(schema: &Schema) -> ExitCode {
    let config = database::url(&Environment)
        .and_then(|url| Ok((url, MigrateSettings::from_source(&Environment)?)));
    let (url, settings) = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let pool = database::connect_for_command(url.expose_secret(), 1)
            .await
            .map_err(|error| SchemaError::Database {
                service: schema.service,
                error,
            })?;
        let result = migrate(&pool, schema, settings).await;
        pool.close().await;
        result
    }
    .await;
    match result {
        Ok(status) => {
            print!("{}", status.report());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            match tls::is_refusal(&error) {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::environment;

    use sqlx::migrate::MigrationType;

    use super::*;

    #[test]
    fn timeouts_take_postgres_units_and_name_the_variable_when_malformed() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_timeout("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["5", "s", "5 sec", "-5s", "0s", "1.5s", "600h"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        let on_start = OnStart::from_source(&environment(&[])).unwrap();
        assert_eq!(on_start, OnStart::Migrate(MigrateSettings::default()));
        let on_start = OnStart::from_source(&environment(&[
            ("MIGRATE_LOCK_TIMEOUT", "2s"),
            ("MIGRATE_STATEMENT_TIMEOUT", "1h"),
        ]))
        .unwrap();
        assert_eq!(
            on_start,
            OnStart::Migrate(MigrateSettings {
                lock_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(3600),
            })
        );
        assert_eq!(
            OnStart::from_source(&environment(&[("MIGRATE_ON_START", "false")])).unwrap(),
            OnStart::Check
        );
        for (name, value) in [
            ("MIGRATE_ON_START", "no"),
            ("MIGRATE_LOCK_TIMEOUT", "5"),
            ("MIGRATE_STATEMENT_TIMEOUT", "0min"),
        ] {
            let error = OnStart::from_source(&environment(&[
                ("MIGRATE_ON_START", "false"),
                (name, value),
            ]))
            .unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn a_timeout_is_shown_as_an_operator_writes_it() {
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_secs(900)), "15min");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }

    fn schema(versions: &[i64]) -> Schema {
        let migrations: Vec<Migration> = versions
            .iter()
            .map(|&v| {
                Migration::new(
                    v,
                    format!("step {v}").into(),
                    MigrationType::Simple,
                    format!("SELECT {v}").into(),
                    false,
                )
            })
            .collect();
        let migrator = Box::leak(Box::new(Migrator {
            migrations: migrations.into(),
            ..Migrator::DEFAULT
        }));
        Schema::new("svc", migrator)
    }

    fn state(schema: &Schema, versions: &[i64], floor: Option<i64>) -> State {
        State {
            applied: versions
                .iter()
                .map(|&version| Applied {
                    version,
                    description: format!("step {version}"),
                    checksum: schema
                        .known(version)
                        .map(|m| m.checksum.to_vec())
                        .unwrap_or_default(),
                    success: true,
                })
                .collect(),
            min_reader_version: floor,
        }
    }

    #[test]
    fn a_build_runs_on_its_schema_and_on_newer_ones_that_allow_it() {
        let s = schema(&[1, 2, 3]);
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3], None)).is_ok());
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(3))).is_ok());
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(1))).is_ok());
        assert_eq!(
            verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(5)))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 5 and requires a build that knows version 5; this build knows 3"
        );
        assert_eq!(
            verify_runnable(&s, &state(&s, &[1, 2], None))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 2, this build needs 3: run `svc migrate` first"
        );
        assert_eq!(
            verify_runnable(&s, &state(&s, &[], None))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 0, this build needs 3: run `svc migrate` first"
        );
        assert!(verify_runnable(&s, &state(&s, &[1, 3], None))
            .unwrap_err()
            .to_string()
            .contains("lacks migration 2 (step 2)"));
    }

    #[test]
    fn an_edited_or_half_applied_migration_is_named() {
        let s = schema(&[1, 2]);
        let mut edited = state(&s, &[1, 2, 7], None);
        assert!(verify_applied(&s, &edited).is_ok(), "unknown 7 is not ours");
        edited.applied[1].checksum = vec![0];
        assert!(verify_applied(&s, &edited)
            .unwrap_err()
            .to_string()
            .starts_with("svc: migration 2 (step 2) was applied from other contents"));
        let mut dirty = state(&s, &[1, 2], None);
        dirty.applied[1].success = false;
        assert!(verify_applied(&s, &dirty)
            .unwrap_err()
            .to_string()
            .contains("migration 2 is marked failed"));
    }

    #[test]
    fn the_report_lists_what_was_applied() {
        let status = Status {
            service: "tax",
            version: 3,
            build: 3,
            applied: vec![(2, "b".into()), (3, "c".into())],
        };
        assert_eq!(
            status.report(),
            "tax: applied 2 b\ntax: applied 3 c\ntax: schema now at version 3\n"
        );
        let status = Status {
            applied: vec![],
            ..status
        };
        assert_eq!(status.report(), "tax: schema already at version 3\n");
    }
}
