//! Why a service cannot start on its schema, or a migration did not apply.

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
