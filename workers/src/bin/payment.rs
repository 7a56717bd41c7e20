//! The payment worker: serves charges and refunds through the payment
//! simulator, and flips the rehearsed provider outage for operators.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use saga_shared::config::ServiceConfig;
use workers::payment::{outage, Payment, Simulator, MIGRATOR};
use workers::{cli, WorkerError};

#[derive(Parser)]
#[command(
    name = "payment",
    version,
    about = "Payment worker of the checkout saga: charges and refunds, once per saga",
    long_about = "Payment worker of the checkout saga: charges and refunds, once per saga.\n\n\
        The provider is a deterministic simulator chosen by payment method: sim_approve, \
        sim_decline, sim_transient_N (N transient failures, then approved), sim_slow_MS \
        (approved after MS milliseconds, at most 60 s), sim_down (always transient).\n\n\
        With no subcommand it serves: it consumes payment commands from RabbitMQ until \
        SIGTERM or ctrl-c. Environment: DATABASE_URL, AMQP_URL, AMQP_PREFIX, PREFETCH, \
        DATABASE_POOL_SIZE, RUST_LOG. The operator subcommands need only DATABASE_URL."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Serve payment commands until SIGTERM or ctrl-c (the default)
    Serve,
    /// Show or switch the rehearsed provider outage
    #[command(long_about = "Show or switch the rehearsed provider outage.\n\n\
        While it is on, every charge and refund that needs the provider answers \
        transient (\"payment provider outage\"), in every copy of the worker. \
        Without an argument, prints whether it is on.")]
    Outage {
        /// `on` or `off`; omit to print the current state
        state: Option<Switch>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Operator commands log only warnings, e.g. a database still starting.
    let filter = match args.command {
        None | Some(Action::Serve) => "info,sqlx=warn",
        Some(_) => "warn",
    };
    saga_shared::telemetry::init(filter);
    match args.command.unwrap_or(Action::Serve) {
        Action::Serve => {
            let config = match ServiceConfig::from_env() {
                Ok(config) => config,
                Err(e) => return cli::config_error(e),
            };
            cli::exit_code(cli::serve(config, &MIGRATOR, |_pool| Payment::new(Simulator)).await)
        }
        Action::Outage { state } => {
            let url = match cli::database_url_from_env() {
                Ok(url) => url,
                Err(e) => return cli::config_error(e),
            };
            cli::exit_code(switch_outage(&url, state).await)
        }
    }
}

async fn switch_outage(url: &str, state: Option<Switch>) -> Result<(), WorkerError> {
    let pool = cli::connect_for_command(url, &MIGRATOR).await?;
    let result = async {
        let mut conn = pool.acquire().await?;
        if let Some(state) = state {
            outage::set(&mut conn, matches!(state, Switch::On)).await?;
        }
        Ok::<bool, WorkerError>(outage::is_on(&mut conn).await?)
    }
    .await;
    pool.close().await;
    let on = result?;
    println!("payment provider outage: {}", if on { "on" } else { "off" });
    Ok(())
}
