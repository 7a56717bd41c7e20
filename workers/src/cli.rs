//! What the three worker binaries share: start-up, migrations, serving
//! until a signal, and the exit codes of their operator subcommands.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use saga_shared::broker::Broker;
use saga_shared::config::{self, ConfigError, ServiceConfig};
use saga_shared::topology::Topology;
use saga_shared::{database, shutdown, telemetry, tls};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::retention::{inbox_retention, run_inbox_pruning_until_stopped};
use crate::runtime::{run_worker_until_stopped, Handler};
use crate::WorkerError;

/// Runs a worker service until SIGTERM or ctrl-c.
pub async fn serve<H: Handler>(
    config: ServiceConfig,
    inbox_retention: Duration,
    migrator: &'static Migrator,
    handler: impl FnOnce(PgPool) -> H,
) -> Result<(), WorkerError> {
    let stop = shutdown::on_signal();
    let pool_size = worker_pool_size(&config);
    let pool = connect_and_migrate(config.database_url(), pool_size, migrator, &stop).await?;
    database::warn_if_budget_tight(&pool, pool_size).await;
    let name = format!("{}-worker", H::KIND.as_str());
    let broker = Arc::new(
        Broker::connect_with_ca(
            config.amqp_url(),
            config.amqp_ca.as_ref(),
            Topology::new(&config.amqp_prefix),
            &name,
            &stop,
        )
        .await?,
    );
    saga_shared::queue_policies::ensure_at_start(&config, broker.topology()).await;
    let pruning = tokio::spawn(run_inbox_pruning_until_stopped(
        pool.clone(),
        inbox_retention,
        stop.clone(),
    ));
    let work = run_worker_until_stopped(
        handler(pool.clone()),
        pool.clone(),
        broker.clone(),
        config.prefetch,
        stop.clone(),
    );
    let mut result = Ok(());
    // Closing politely is part of the grace period too: a broker or a
    // database that does not answer its goodbye must not keep us running.
    let shutdown = async {
        result = work.await;
        stop.cancel();
        let _ = pruning.await;
        broker.close().await;
        pool.close().await;
        telemetry::shutdown(config.shutdown_grace).await;
    };
    if !shutdown::within_grace(shutdown, &stop, config.shutdown_grace).await {
        telemetry::shutdown(LAST_FLUSH).await;
    }
    result
}

/// How long the spans still buffered may take to leave once the grace
/// period is over.
const LAST_FLUSH: Duration = Duration::from_secs(1);

/// A worker handles at most `PREFETCH` commands at once, each in one
/// transaction at a time, so by default its pool is no larger than that;
/// `DATABASE_POOL_SIZE` overrides it.
pub fn worker_pool_size(config: &ServiceConfig) -> u32 {
    config
        .database_pool_size
        .unwrap_or_else(|| database::pool_for_concurrency(config.prefetch))
}

/// Connects to this service's own database and applies its own migrations.
pub async fn connect_and_migrate(
    url: &str,
    pool_size: u32,
    migrator: &'static Migrator,
    stop: &CancellationToken,
) -> Result<PgPool, WorkerError> {
    let pool = database::connect_with_backoff(url, pool_size, stop).await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// How long a one-shot operator command waits for its database: an operator
/// at a terminal wants an error, not a silent wait for ever.
pub const COMMAND_CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Connects and migrates for a one-shot operator command, giving up after
/// [`COMMAND_CONNECT_PATIENCE`].
pub async fn connect_for_command(
    url: &str,
    migrator: &'static Migrator,
) -> Result<PgPool, WorkerError> {
    let give_up = CancellationToken::new();
    let timer = tokio::spawn({
        let give_up = give_up.clone();
        async move {
            tokio::time::sleep(COMMAND_CONNECT_PATIENCE).await;
            give_up.cancel();
        }
    });
    let pool = connect_and_migrate(url, 2, migrator, &give_up).await;
    timer.abort();
    pool
}

/// `DATABASE_URL` alone, for one-shot operator commands.
pub fn database_url_from_env() -> Result<String, ConfigError> {
    let url = config::required(
        &config::Environment,
        "DATABASE_URL",
        "set it to this service's PostgreSQL URL",
    )?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            name: "DATABASE_URL",
            reason: "must start with postgres:// or postgresql://".into(),
        });
    }
    tls::check_database_url(&url)?;
    Ok(url)
}

/// Writes an operator command's output. A reader that went away (`| head`)
/// is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), WorkerError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

/// The process exit code for a command's result; errors print one line.
/// Bad input and a refused TLS certificate are the operator's to fix:
/// exit code 2, as for a configuration error.
pub fn exit_code(result: Result<(), WorkerError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(WorkerError::Input(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(error) if tls::is_refusal(&error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a configuration error as one line and returns exit code 2.
pub fn config_error(error: ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}

/// A worker binary's default action: read the configuration, serve until
/// SIGTERM or ctrl-c, and turn the result into the exit code.
pub async fn serve_from_env<H: Handler>(
    migrator: &'static Migrator,
    handler: impl FnOnce(PgPool) -> H,
) -> ExitCode {
    let config = ServiceConfig::from_env()
        .and_then(|service| Ok((service, inbox_retention(&config::Environment)?)));
    match config {
        Ok((service, retention)) => exit_code(serve(service, retention, migrator, handler).await),
        Err(error) => config_error(error),
    }
}

/// Runs a one-shot operator command on the service's own database
/// (`DATABASE_URL` alone), closing the pool afterwards.
pub async fn with_database<F, Fut>(migrator: &'static Migrator, command: F) -> ExitCode
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<(), WorkerError>>,
{
    let url = match database_url_from_env() {
        Ok(url) => url,
        Err(error) => return config_error(error),
    };
    let result = async {
        let pool = connect_for_command(&url, migrator).await?;
        let result = command(pool.clone()).await;
        pool.close().await;
        result
    }
    .await;
    exit_code(result)
}

/// Opens an operator's input file, naming it in the error.
pub fn open_input(file: &std::path::Path) -> Result<std::fs::File, WorkerError> {
    std::fs::File::open(file)
        .map_err(|e| WorkerError::Input(format!("{}: cannot open: {e}", file.display())))
}

/// Logging for a worker binary: the service logs at info and exports its
/// spans when the `OTEL_*` variables say so (as `service`, unless
/// `OTEL_SERVICE_NAME` names it); a one-shot operator command only warns
/// (say, of a database still starting), so its output stays its own, and
/// exports nothing. A malformed `OTEL_*` variable is the exit code 2.
pub fn init_logging(serving: bool, service: &str) -> Result<(), ExitCode> {
    if !serving {
        telemetry::init("warn");
        return Ok(());
    }
    telemetry::init_service("info,sqlx=warn", service).map_err(config_error)
}
