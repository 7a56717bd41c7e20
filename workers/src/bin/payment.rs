//! The payment worker: serves charges and refunds through the payment
//! simulator, and flips the rehearsed provider outage for operators.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use workers::cli;
use workers::payment::{outage, Payment, Simulator, MIGRATOR};

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
        DATABASE_POOL_SIZE, SHUTDOWN_GRACE_SECONDS, RUST_LOG. The operator subcommands need only DATABASE_URL."
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
    cli::init_logging(matches!(args.command, None | Some(Action::Serve)));
    match args.command.unwrap_or(Action::Serve) {
        Action::Serve => cli::serve_from_env(&MIGRATOR, |_pool| Payment::new(Simulator)).await,
        Action::Outage { state } => {
            cli::with_database(&MIGRATOR, |pool| async move {
                let mut conn = pool.acquire().await?;
                if let Some(state) = state {
                    outage::set(&mut conn, matches!(state, Switch::On)).await?;
                }
                let on = outage::is_on(&mut conn).await?;
                println!("payment provider outage: {}", if on { "on" } else { "off" });
                Ok(())
            })
            .await
        }
    }
}
