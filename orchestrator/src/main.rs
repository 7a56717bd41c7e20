use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use orchestrator::app;
use orchestrator::config::Config;
use saga_shared::{schema, shutdown, telemetry, tls};

/// The checkout saga orchestrator: serves the checkout API and drives each
/// checkout through inventory, tax and payment over RabbitMQ.
///
/// With no subcommand it serves until SIGTERM or ctrl-c. Configuration
/// comes from the environment: DATABASE_URL (TLS with
/// sslmode and sslrootcert, as libpq), AMQP_URL (amqps:// for TLS),
/// AMQP_CA_FILE, AMQP_PREFIX, HTTP_ADDR, HTTP_REQUEST_TIMEOUT_SECONDS,
/// HTTP_HEADER_READ_TIMEOUT_SECONDS, HTTP_MAX_CONNECTIONS, HTTP_MAX_WAITERS,
/// ADMIN_TOKENS, ADMIN_HTTP_ADDR (when set, the support API, /admin console
/// and /metrics are served there only), CHECKOUT_CLIENT_KEYS (name=key,...,
/// keys of 16 characters or more), CLIENT_RATE_PER_SECOND (default 100),
/// CLIENT_RATE_BURST (200), CLIENT_MAX_IN_FLIGHT (1000), WORKER_USERS
/// (inventory=USER,tax=USER,payment=USER: who replies may come from),
/// PREFETCH, DATABASE_POOL_SIZE,
/// SHUTDOWN_GRACE_SECONDS, STEP_MAX_ATTEMPTS, STEP_BACKOFF_BASE_MS,
/// STEP_BACKOFF_MAX_MS, STEP_DEADLINE_MS, STEP_ON_EXHAUSTED (and the same
/// per step, e.g. STEP_PAYMENT_CHARGE_DEADLINE_MS), MIGRATE_ON_START
/// (default true; false: only check the schema, see `migrate`),
/// MIGRATE_LOCK_TIMEOUT, MIGRATE_STATEMENT_TIMEOUT, RETENTION_DAYS (default
/// 90; 0 keeps everything), ARCHIVE (a folder, default `archive`, or
/// s3://BUCKET/PREFIX), RUST_LOG, LOG_FORMAT.
/// Traces go over OTLP (http/protobuf) when OTEL_EXPORTER_OTLP_ENDPOINT is
/// set; OTEL_SERVICE_NAME names the service (default `orchestrator`).
#[derive(Parser)]
#[command(name = "orchestrator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Serve the checkout API and drive sagas until SIGTERM or ctrl-c (the default)
    Serve,
    /// Apply this build's pending database migrations, then exit
    #[command(long_about = schema::MIGRATE_HELP)]
    Migrate,
    /// Declare what is missing on the broker and set the queue policies to this build's, then exit
    #[command(long_about = TOPOLOGY_HELP)]
    Topology,
    /// Create each service's own RabbitMQ user where missing, with least-privilege permissions; print their AMQP_URLs once
    #[command(long_about = BROKER_USERS_HELP)]
    /// Archive and delete now what passed its retention (RETENTION_DAYS, ARCHIVE), as every instance does hourly; then exit
    #[command(long_about = ARCHIVE_HELP)]
    Archive,
    BrokerUsers {
        /// Users are named <BASE>-orchestrator, <BASE>-inventory, <BASE>-tax and <BASE>-payment
        #[arg(long, default_value = "checkout")]
        base: String,
        /// Give existing users new passwords too (and print them)
        #[arg(long)]
        rotate: bool,
    },
}

const BROKER_USERS_HELP: &str = "Create each service's own RabbitMQ user where missing, with least-privilege permissions on AMQP_PREFIX's exchanges and queues; print their AMQP_URLs once.

The orchestrator's user declares the topology, writes commands and reads replies; a worker's user reads only its command queue and writes only replies. Run as an administrator: AMQP_URL's user must be tagged administrator on the management API (RABBITMQ_MANAGEMENT_URL unless RabbitMQ listens on 5672). A new user gets a random password, printed once as <SERVICE>_AMQP_URL=...; an existing user keeps its password, and its permissions are set to this build's. The last line is WORKER_USERS for the orchestrator, which then dead-letters a reply from any other user. Exit code 0; 2 for a configuration error; 1 when the broker refuses.";

const ARCHIVE_HELP: &str = "Archive and delete now what passed its retention, as every running instance does at start and then hourly; then exit.

Finished sagas created and finished more than RETENTION_DAYS (default 90) ago are written to ARCHIVE (a folder, default `archive`, or s3://BUCKET/PREFIX with the AWS_* variables) as gzip JSON lines, one file per day, with their timelines and dead letters, then deleted in small batches; so are dead letters no saga holds. Safe while the system serves checkouts: one instance archives at a time (another waits for the next run), no batch holds a lock for long, and SIGTERM or ctrl-c stops between batches with nothing lost. Needs DATABASE_URL. Prints what it archived. Exit code 0; 2 for a configuration error; 1 when the database or the archive fails.";

const TOPOLOGY_HELP: &str = "Declare what is missing on the broker and set the queue policies to this build's, then exit.

The deploy step for the broker, as `migrate` is for the database: exchanges, queues and bindings under AMQP_PREFIX are declared where missing (an existing queue is used as it is), and the queue policy <AMQP_PREFIX>checkout-work-queues (delivery limit, dead-letter exchange) is set to this build's through RabbitMQ's management API, overwriting an older release's. Services create a missing policy at start but never overwrite one. Needs AMQP_URL, AMQP_PREFIX and, unless RabbitMQ listens on AMQP's own port 5672 (then its management API is taken to be on 15672 with the same user), RABBITMQ_MANAGEMENT_URL. Exit code 0; 2 for a configuration error; 1 when the broker refuses.";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Action::Migrate) = cli.command {
        telemetry::init("warn");
        return schema::migrate_command(&app::SCHEMA).await;
    }
    if let Some(Action::Archive) = cli.command {
        telemetry::init("warn");
        return orchestrator::retention::archive_command().await;
    }
    if let Some(Action::Topology) = cli.command {
        telemetry::init("warn");
        return saga_shared::broker_commands::topology_command().await;
    }
    if let Some(Action::BrokerUsers { base, rotate }) = &cli.command {
        telemetry::init("warn");
        return saga_shared::broker_commands::broker_users_command(base, *rotate).await;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = telemetry::init_service("info,sqlx=warn,tower_http=info", "orchestrator") {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let stop = shutdown::on_signal();
    let grace = config.service.shutdown_grace;
    match app::start(config, stop.clone()).await {
        Ok(running) => {
            // The last spans (the final transitions) go out within the
            // grace period too.
            let stopped = async {
                running.wait().await;
                telemetry::shutdown(grace).await;
            };
            if !shutdown::within_grace(stopped, &stop, grace).await {
                telemetry::shutdown(LAST_FLUSH).await;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            telemetry::shutdown(LAST_FLUSH).await;
            // A refused certificate is a setting to fix, like a malformed
            // variable; anything else may pass on its own.
            match tls::is_refusal(&error) {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

/// How long the spans still buffered may take to leave once the grace
/// period is over (or the start failed).
const LAST_FLUSH: Duration = Duration::from_secs(1);
