//! The `migrate` subcommand every service has: the deploy step that
//! applies this build's migrations, then exits.

use std::process::ExitCode;

use secrecy::ExposeSecret;

use super::migrations::Schema;
use super::runner::migrate;
use super::settings::MigrateSettings;
use crate::config::Environment;
use crate::{database, tls};

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
            .map_err(|error| schema.database_error(error))?;
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
