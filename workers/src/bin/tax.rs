//! The tax worker: serves tax calculations, and loads tax rates for
//! operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use workers::cli;
use workers::tax::{rates, Tax, SCHEMA};

/// The subcommands of this worker beside the standard ones.
#[derive(Subcommand)]
enum Own {
    /// Load tax rates from CSV: country,region,category,rate_bp
    #[command(long_about = "Load tax rates from a CSV file with the header\n\
        country,region,category,rate_bp\n\n\
        country is a two-letter code; an empty region is the country's default for the \
        category; rate_bp is in basis points, 0 to 10000 (825 = 8.25%). Every row is \
        checked first; if any is bad, nothing is imported and each problem is reported \
        with its line (exit code 2). Existing rates take the file's value.")]
    Import {
        /// The CSV file to load
        file: PathBuf,
    },
}

const BINARY: cli::Binary = cli::Binary {
    about: "Tax worker of the checkout saga: tax per line from ship-to and category",
    long_about: "Tax worker of the checkout saga: tax per line from the ship-to country \
        and region and the line's tax category. Rates are in basis points; each line's \
        tax is rounded half up to a whole minor unit, and the total is their sum.\n\n\
        With no subcommand it serves: it consumes tax commands from RabbitMQ until \
        SIGTERM or ctrl-c. Environment: DATABASE_URL, AMQP_URL, AMQP_CA_FILE, AMQP_PREFIX, PREFETCH, \
        DATABASE_POOL_SIZE, SHUTDOWN_GRACE_SECONDS, MIGRATE_ON_START (false: only check the schema; see migrate), MIGRATE_LOCK_TIMEOUT, MIGRATE_STATEMENT_TIMEOUT, RUST_LOG, OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME (traces over OTLP http/protobuf, off when unset). The operator subcommands need only DATABASE_URL.",
    schema: &SCHEMA,
};

#[tokio::main]
async fn main() -> ExitCode {
    let serve = || cli::serve_from_env(&SCHEMA, |_pool| Tax);
    BINARY
        .run(serve, |Own::Import { file }| {
            cli::import(&SCHEMA, file, |pool, name, input| async move {
                rates::import(&pool, &name, input).await
            })
        })
        .await
}
