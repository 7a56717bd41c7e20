//! What the three worker binaries share: start-up, migrations, serving
//! until a signal, and the exit codes of their operator subcommands.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use saga_shared::broker::Broker;
use saga_shared::config::{self, ConfigError};
use saga_shared::schema::{self, OnStart, Schema};
use saga_shared::service_config::ServiceConfig;
use saga_shared::topology::Topology;
use saga_shared::{database, shutdown, telemetry, tls};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::retention::{run_retention_until_stopped, Retention};
use crate::runtime::{run_worker_until_stopped, Handler};
use crate::WorkerError;

/// The subcommands every worker binary has beside its own.
#[derive(Subcommand, Clone, Copy)]
pub enum Standard {
    /// Serve this worker's commands until SIGTERM or ctrl-c (the default)
    Serve,
    /// Apply this build's pending database migrations, then exit
    #[command(long_about = schema::MIGRATE_HELP)]
    Migrate,
}

/// A worker binary's command line: the [`Standard`] subcommands beside the
/// binary's own `A`, none meaning `serve`. Its name and help are the
/// binary's ([`Binary::run`]).
#[derive(Parser)]
#[command(version)]
struct CommandLine<A: Subcommand> {
    #[command(subcommand)]
    action: Option<Action<A>>,
}

#[derive(Subcommand)]
enum Action<A: Subcommand> {
    #[command(flatten)]
    Standard(Standard),
    #[command(flatten)]
    Own(A),
}

/// A worker binary: its help, and the schema whose service it is (its name
/// on the command line, in the logs and in the traces).
pub struct Binary {
    pub about: &'static str,
    pub long_about: &'static str,
    pub schema: &'static Schema,
}

impl Binary {
    /// Parses the command line (a bad one, `--help` or `--version` exits as
    /// clap does) and runs what it asks: `serve` (which reads its own
    /// configuration) until a signal, `migrate`, or the binary's `own`
    /// subcommand.
    pub async fn run<A, S, O>(
        &self,
        serve: impl FnOnce() -> S,
        own: impl FnOnce(A) -> O,
    ) -> ExitCode
    where
        A: Subcommand,
        S: Future<Output = ExitCode>,
        O: Future<Output = ExitCode>,
    {
        let mut command = CommandLine::<A>::command()
            .name(self.schema.service)
            .about(self.about)
            .long_about(self.long_about);
        let matches = command.get_matches_mut();
        let action = CommandLine::<A>::from_arg_matches(&matches)
            .unwrap_or_else(|error| error.format(&mut command).exit())
            .action;
        let standard = match action.unwrap_or(Action::Standard(Standard::Serve)) {
            Action::Standard(standard) => standard,
            Action::Own(action) => return own(action).await,
        };
        if let Err(code) = init_logging(matches!(standard, Standard::Serve), self.schema.service) {
            return code;
        }
        match standard {
            Standard::Migrate => schema::migrate_command(self.schema).await,
            Standard::Serve => serve().await,
        }
    }
}

/// An operator subcommand: logging that keeps its output its own, then
/// `command` on the service's database ([`with_database`]).
pub async fn operator<F, Fut>(schema: &Schema, command: F) -> ExitCode
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    if let Err(code) = init_logging(false, schema.service) {
        return code;
    }
    with_database(schema, command).await
}

/// `import FILE`: `load` reads the opened file (named as given, for its
/// error lines) into the database, and its summary is printed.
pub async fn import<F, Fut, S>(schema: &Schema, file: PathBuf, load: F) -> ExitCode
where
    F: FnOnce(PgPool, String, std::fs::File) -> Fut,
    Fut: Future<Output = Result<S, WorkerError>>,
    S: Display,
{
    operator(schema, |pool| async move {
        let input = open_input(&file)?;
        let summary = load(pool, file.display().to_string(), input).await?;
        println!("{summary}");
        Ok(())
    })
    .await
}

/// Runs a worker service until SIGTERM or ctrl-c.
pub async fn serve<H: Handler>(
    config: ServiceConfig,
    retention: Retention,
    schema: &Schema,
    handler: impl FnOnce(PgPool) -> H,
) -> Result<(), WorkerError> {
    let stop = shutdown::on_signal();
    let pool_size = worker_pool_size(&config);
    let pool = database::connect_with_backoff(config.database_url(), pool_size, &stop).await?;
    schema::prepare(&pool, schema, config.schema).await?;
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
    saga_shared::broker_commands::ensure_at_start(&config, broker.topology()).await;
    let pruning = tokio::spawn(run_retention_until_stopped(
        pool.clone(),
        retention,
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

/// Connects for a one-shot operator command (giving up after
/// [`database::COMMAND_CONNECT_PATIENCE`]), and migrates or checks the
/// schema as a starting service does.
pub async fn connect_for_command(
    url: &str,
    schema: &Schema,
    on_start: OnStart,
) -> Result<PgPool, WorkerError> {
    let pool = database::connect_for_command(url, 2).await?;
    schema::prepare(&pool, schema, on_start).await?;
    Ok(pool)
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
    schema: &Schema,
    handler: impl FnOnce(PgPool) -> H,
) -> ExitCode {
    let config = ServiceConfig::from_env().and_then(|service| {
        Ok((
            service,
            Retention::from_source(&config::Environment, H::KIND)?,
        ))
    });
    match config {
        Ok((service, retention)) => exit_code(serve(service, retention, schema, handler).await),
        Err(error) => config_error(error),
    }
}

/// Runs a one-shot operator command on the service's own database
/// (`DATABASE_URL`, and `MIGRATE_ON_START` with its timeouts), closing the
/// pool afterwards.
pub async fn with_database<F, Fut>(schema: &Schema, command: F) -> ExitCode
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    let config = saga_shared::database::url(&config::Environment)
        .and_then(|url| Ok((url, OnStart::from_source(&config::Environment)?)));
    let (url, on_start) = match config {
        Ok(config) => config,
        Err(error) => return config_error(error),
    };
    let result = async {
        let pool = connect_for_command(url.expose_secret(), schema, on_start).await?;
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
