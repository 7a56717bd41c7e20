//! One service's migrations as this build carries them.

use std::borrow::Cow;

use sqlx::migrate::{Migration, Migrator};

use super::SchemaError;

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

    /// `error` from this service's database, named by the service.
    pub(crate) fn database_error(&self, error: sqlx::Error) -> SchemaError {
        SchemaError::Database {
            service: self.service,
            error,
        }
    }

    /// The newest migration this build knows: the N of 1..N.
    pub fn build_version(&self) -> i64 {
        self.migrations().map(|m| m.version).max().unwrap_or(0)
    }

    pub(super) fn migrations(&self) -> impl Iterator<Item = &'static Migration> {
        let migrator: &'static Migrator = self.migrator;
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
    }

    pub(super) fn known(&self, version: i64) -> Option<&'static Migration> {
        self.migrations().find(|m| m.version == version)
    }

    /// This build's migrations, with sqlx told to leave alone the applied
    /// migrations it does not know: whether this build may run beside them
    /// is `schema_compat`'s to say. The lock is taken beforehand, with its
    /// own bound, so sqlx does not take it again.
    pub(super) fn lenient_migrator(&self) -> Migrator {
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
