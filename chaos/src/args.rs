//! The command line, checked once into [`Settings`]. The run restarts the
//! PostgreSQL and RabbitMQ it is pointed at, so it refuses any server that is
//! not on this machine.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use reqwest::Url;

const LONG_ABOUT: &str = "\
Starts the real binaries (two orchestrators, two copies of each worker) on
fresh databases and a fresh AMQP prefix, drives checkouts through them while
SIGKILLing a random process every 2-5 s, restarts RabbitMQ once (a third in)
and PostgreSQL once (two thirds in), then drains and checks that nothing was
lost, nothing is stuck and the auditor finds no violation.

It restarts the PostgreSQL and RabbitMQ on this machine: anything else using
them sees the restarts too. --no-service-restarts only kills processes.";

const EXIT_CODES: &str = "\
Exit codes:
  0  nothing lost, nothing stuck, no violation, no process died on its own,
     every service restart recovered
  1  the run finished and found one of those
  2  the run could not be carried out (configuration, setup, interrupted)";

#[derive(Debug, Parser)]
#[command(name = "chaos", version, about = "Checkouts under process kills and service restarts", long_about = LONG_ABOUT, after_help = EXIT_CODES)]
pub struct Args {
    /// Checkouts to drive, paced evenly over --seconds.
    #[arg(long, default_value_t = 500)]
    pub checkouts: usize,
    /// Chaos lasts this long at most (it stops earlier once every checkout is driven).
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Checkouts in flight at once (posted and not yet final).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seed of the fault schedule and of the checkout mix (random if not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only kill processes; never restart PostgreSQL or RabbitMQ.
    #[arg(long)]
    pub no_service_restarts: bool,
    /// Keep the databases and the AMQP queues even when the run passes.
    #[arg(long)]
    pub keep: bool,
    /// Instead of a run: remove the databases and queues a failed, kept or
    /// interrupted run RUN_ID left behind.
    #[arg(long, value_name = "RUN_ID")]
    pub remove: Option<String>,
    /// Where the service binaries (orchestrator, inventory, tax, payment,
    /// auditor) are [default: the directory of this binary].
    #[arg(long, env = "BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Logs and report of this run [default: target/chaos/<run id>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// A PostgreSQL server URL allowed to create and drop databases.
    #[arg(
        long,
        env = "PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub pg_admin_url: String,
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `--remove`: only remove what that run left.
    pub remove: Option<String>,
    pub checkouts: usize,
    pub seconds: Duration,
    pub concurrency: usize,
    pub seed: u64,
    pub service_restarts: bool,
    pub keep: bool,
    pub bin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub run_id: String,
    pub pg_admin_url: String,
    pub amqp_url: String,
}

impl Settings {
    pub fn from_args(args: Args) -> anyhow::Result<Settings> {
        if args.checkouts == 0 {
            bail!("--checkouts must be at least 1");
        }
        if !(10..=3600).contains(&args.seconds) {
            bail!("--seconds must be from 10 to 3600, got {}", args.seconds);
        }
        if !(1..=256).contains(&args.concurrency) {
            bail!(
                "--concurrency must be from 1 to 256, got {}",
                args.concurrency
            );
        }
        ensure_local("PG_ADMIN_URL", &args.pg_admin_url)?;
        ensure_local("AMQP_URL", &args.amqp_url)?;
        if let Some(run_id) = &args.remove {
            // It becomes part of database names and SQL.
            if run_id.len() != 8 || !run_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--remove takes a run id (8 hex digits), got `{run_id}`");
            }
        }
        let bin_dir = match args.bin_dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("cannot tell where this binary is; pass --bin-dir")?
                .parent()
                .context("this binary has no directory; pass --bin-dir")?
                .to_path_buf(),
        };
        for binary in ["orchestrator", "inventory", "tax", "payment", "auditor"] {
            if args.remove.is_some() {
                break;
            }
            let path = bin_dir.join(binary);
            if !path.is_file() {
                bail!(
                    "binary {} not found (build with `cargo build --release --workspace --bins`, or pass --bin-dir)",
                    path.display()
                );
            }
        }
        // Random, not from the seed: re-running a seed must not collide with
        // the databases a failed run of the same seed kept.
        let run_id = format!("{:08x}", rand::random::<u32>());
        let run_dir = args
            .run_dir
            .unwrap_or_else(|| PathBuf::from("target/chaos").join(&run_id));
        Ok(Settings {
            remove: args.remove.map(|id| id.to_ascii_lowercase()),
            checkouts: args.checkouts,
            seconds: Duration::from_secs(args.seconds),
            concurrency: args.concurrency,
            seed: args.seed.unwrap_or_else(rand::random),
            service_restarts: !args.no_service_restarts,
            keep: args.keep,
            bin_dir,
            run_dir,
            run_id,
            pg_admin_url: args.pg_admin_url,
            amqp_url: args.amqp_url,
        })
    }
}

/// Refuses a URL whose server is not this machine. Never echoes the URL,
/// which may carry a password.
fn ensure_local(name: &str, url: &str) -> anyhow::Result<()> {
    let parsed = Url::parse(url).with_context(|| format!("{name} is not a URL"))?;
    let host = parsed.host_str().unwrap_or("");
    // An IPv6 host comes bracketed: `[::1]`.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    // libpq lets `?host=` override the authority: refuse rather than guess.
    let overridden = parsed
        .query_pairs()
        .any(|(key, _)| key == "host" || key == "hostaddr");
    if !local || overridden {
        bail!(
            "{name} must point at this machine (127.0.0.1, localhost or ::1): \
             the chaos run restarts that server"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ensure_local;

    #[test]
    fn accepts_only_this_machine() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@localhost/postgres",
            "amqp://guest:guest@[::1]:5672/%2f",
        ] {
            assert!(ensure_local("X", url).is_ok(), "{url}");
        }
        for url in [
            "postgres://postgres@db.example.com:5432/postgres",
            "amqp://guest:guest@10.0.0.5:5672/%2f",
            "postgres://postgres@127.0.0.1/postgres?host=db.example.com",
            "postgres:///postgres",
            "not a url",
        ] {
            assert!(ensure_local("X", url).is_err(), "{url}");
        }
    }
}
