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
//!
//! A service's start goes through `prepare` here, over the migration
//! runner and the compatibility check below it; the operator's step is the
//! `migrate` command.

mod command;
mod compat;
mod error;
mod migrations;
mod runner;
mod settings;

use sqlx::PgPool;

pub use self::command::{migrate_command, MIGRATE_HELP};
pub use self::compat::{check, Status};
pub use self::error::SchemaError;
pub use self::migrations::Schema;
pub use self::runner::migrate;
pub use self::settings::{
    MigrateSettings, OnStart, DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT,
};

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
