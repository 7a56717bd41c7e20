//! The inventory worker: serves reserve and release commands, and loads or
//! dumps the catalogue for operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use workers::cli;
use workers::inventory::{catalogue, Inventory, SCHEMA};

/// The subcommands of this worker beside the standard ones.
#[derive(Subcommand)]
enum Own {
    /// Load a catalogue from CSV: sku,name,on_hand,unit_price_cents,currency,tax_category
    #[command(long_about = "Load a catalogue from a CSV file with the header\n\
        sku,name,on_hand,unit_price_cents,currency,tax_category\n\n\
        Every row is checked first; if any is bad, nothing is imported and each \
        problem is reported with its line (exit code 2). New SKUs start with all \
        their stock available. An existing SKU takes the file's name, price, currency \
        and category, and its on hand becomes the file's, keeping what active \
        reservations hold (an on hand below that is refused).")]
    Import {
        /// The CSV file to load
        file: PathBuf,
    },
    /// Print the catalogue as CSV, sorted by SKU: sku,name,on_hand,available,unit_price_cents,currency,tax_category
    Export,
}

const BINARY: cli::Binary = cli::Binary {
    about: "Inventory worker of the checkout saga: reserves and releases stock",
    long_about: "Inventory worker of the checkout saga: reserves and releases stock.\n\n\
        With no subcommand it serves: it consumes inventory commands from RabbitMQ \
        until SIGTERM or ctrl-c. Environment: DATABASE_URL, AMQP_URL, AMQP_CA_FILE, AMQP_PREFIX, \
        PREFETCH, DATABASE_POOL_SIZE, SHUTDOWN_GRACE_SECONDS, MIGRATE_ON_START (false: only check the schema; see migrate), MIGRATE_LOCK_TIMEOUT, MIGRATE_STATEMENT_TIMEOUT, RUST_LOG, OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME (traces over OTLP http/protobuf, off when unset). The operator subcommands need only \
        DATABASE_URL.",
    schema: &SCHEMA,
};

#[tokio::main]
async fn main() -> ExitCode {
    let serve = || cli::serve_from_env(&SCHEMA, |_pool| Inventory);
    BINARY
        .run(serve, |own| async move {
            match own {
                Own::Import { file } => {
                    cli::import(&SCHEMA, file, |pool, name, input| async move {
                        catalogue::import(&pool, &name, input).await
                    })
                    .await
                }
                Own::Export => {
                    cli::operator(&SCHEMA, |pool| async move {
                        cli::write_stdout(&catalogue::export(&pool).await?)
                    })
                    .await
                }
            }
        })
        .await
}
