//! Applying a build's migrations: on a session of its own, under sqlx's
//! migration lock (polled, so that two instances never wait on each other
//! out of sight), each statement bounded by the operator's timeouts, and a
//! failure told as what to do.

use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migration};
use sqlx::{Connection, PgConnection, PgPool};

use super::compat::{verify_applied, verify_runnable, State, Status};
use super::error::SchemaError;
use super::migrations::Schema;
use super::settings::{show, MigrateSettings};

/// The log target these lines had before the schema became a module of
/// several files, so that log filters and searches keep finding them.
const LOG_TARGET: &str = "saga_shared::schema";

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
    let database = |error| schema.database_error(error);
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
    let database = |error| schema.database_error(error);
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
    let database = |error| schema.database_error(error);
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
                target: LOG_TARGET,
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

/// What a failed migration leaves behind, for its error line.
fn left_behind(migration: Option<&Migration>) -> &'static str {
    match migration {
        Some(m) if m.no_tx => {
            "a no-transaction migration keeps what it did before that (a CREATE INDEX CONCURRENTLY leaves an INVALID index: drop it first)"
        }
        _ => "it was rolled back",
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
