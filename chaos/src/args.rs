//! The command line, checked once into [`Settings`]. The run restarts the
//! PostgreSQL and RabbitMQ it is pointed at, so it refuses any server that is
//! not on this machine.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::upgrade::Order;
use reqwest::Url;

const LONG_ABOUT: &str = "\
Starts the real binaries (two orchestrators, two copies of each worker) on
fresh databases and a fresh AMQP prefix, drives checkouts through them while
SIGKILLing a random process every 2-5 s, restarts RabbitMQ once (a third in)
and PostgreSQL once (two thirds in), then drains and checks that nothing was
lost, nothing is stuck and the auditor finds no violation.

It restarts the PostgreSQL and RabbitMQ on this machine: anything else using
them sees the restarts too. --no-service-restarts only kills processes.

With --cluster it runs on the three-node RabbitMQ cluster and the PostgreSQL
primary and standby of scripts/cluster instead (`scripts/chaos --cluster`
starts them): RabbitMQ nodes are SIGKILLed one at a time and started again,
and once, halfway, the PostgreSQL primary is SIGKILLed and the standby
promoted. The machine's own servers are not touched.";

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
    /// Run on the cluster of scripts/cluster (three RabbitMQ nodes, a
    /// PostgreSQL primary and standby), which must be up: kill its nodes
    /// and fail PostgreSQL over instead of restarting this machine's servers.
    #[arg(long)]
    pub cluster: bool,
    /// The script that kills and starts the cluster's nodes.
    #[arg(
        long,
        env = "CLUSTER_SCRIPT",
        default_value = "scripts/cluster",
        value_name = "PATH"
    )]
    pub cluster_script: PathBuf,
    /// A rolling upgrade instead of faults: start every process from the
    /// binaries in DIR (an older release), then, under the load, replace
    /// them one at a time by this build's (--bin-dir), each service's
    /// `migrate` first. No process is killed and no server restarted; the
    /// run also fails on any dead letter, parked saga or unexpected outcome.
    #[arg(long, value_name = "DIR")]
    pub upgrade_from: Option<PathBuf>,
    /// With --upgrade-from: which processes are replaced first.
    #[arg(long, value_enum, default_value_t = Order::WorkersFirst, requires = "upgrade_from")]
    pub order: Order,
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
    /// A PostgreSQL server URL allowed to create and drop databases; with
    /// --cluster, both hosts of the pair, libpq style [default:
    /// postgres://postgres@127.0.0.1:5432/postgres, with --cluster
    /// postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/postgres].
    #[arg(long, env = "PG_ADMIN_URL", hide_env_values = true)]
    pub pg_admin_url: Option<String>,
    /// One RabbitMQ node's URL; with --cluster, every node's, comma-separated
    /// [default: amqp://guest:guest@127.0.0.1:5672/%2f, with --cluster the
    /// nodes on 5681, 5682 and 5683].
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// RabbitMQ's management API, where the run creates each service's own
    /// user [default: AMQP_URL's host on 15672, with --cluster node 1's
    /// API on 15681].
    #[arg(long, env = "RABBITMQ_MANAGEMENT_URL", hide_env_values = true)]
    pub management_url: Option<String>,
    /// Who charges: `simulator`, or `stripe` (a local Stripe server at
    /// --stripe-api-base, which `scripts/chaos --provider stripe` starts:
    /// localstripe) [default: simulator].
    #[arg(long, value_name = "PROVIDER", default_value = "simulator")]
    pub provider: String,
    /// With --provider stripe: the local Stripe server.
    #[arg(long, env = "STRIPE_API_BASE", value_name = "URL")]
    pub stripe_api_base: Option<String>,
}

const LOCAL_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const LOCAL_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const CLUSTER_PG: &str = "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/postgres";
const CLUSTER_AMQP: &str = "amqp://guest:guest@127.0.0.1:5681/%2f,\
                            amqp://guest:guest@127.0.0.1:5682/%2f,\
                            amqp://guest:guest@127.0.0.1:5683/%2f";
const CLUSTER_MANAGEMENT: &str = "http://127.0.0.1:15681";

#[derive(Debug, Clone)]
pub struct Settings {
    /// `--remove`: only remove what that run left.
    pub remove: Option<String>,
    pub checkouts: usize,
    pub seconds: Duration,
    pub concurrency: usize,
    pub seed: u64,
    pub service_restarts: bool,
    /// `Some(scripts/cluster)` with --cluster.
    pub cluster_script: Option<PathBuf>,
    pub keep: bool,
    /// `--upgrade-from DIR --order O`.
    pub upgrade: Option<(PathBuf, Order)>,
    pub bin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub run_id: String,
    pub pg_admin_url: String,
    pub amqp_url: String,
    pub management_url: Option<String>,
    /// `--provider stripe`: its server and PaymentMethods, made by
    /// [`Settings::prepare_stripe`].
    pub stripe: Option<crate::stripe::StripeRun>,
    /// `--provider stripe`: the server's URL, until prepared.
    pub stripe_api_base: Option<String>,
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
        let (pg_default, amqp_default) = match args.cluster {
            true => (CLUSTER_PG, CLUSTER_AMQP),
            false => (LOCAL_PG, LOCAL_AMQP),
        };
        let pg_admin_url = args.pg_admin_url.unwrap_or_else(|| pg_default.to_owned());
        let amqp_url = args.amqp_url.unwrap_or_else(|| amqp_default.to_owned());
        let management_url = args
            .management_url
            .or_else(|| args.cluster.then(|| CLUSTER_MANAGEMENT.to_owned()));
        if let Some(url) = &management_url {
            ensure_local("RABBITMQ_MANAGEMENT_URL", url)?;
        }
        for host in saga_shared::database::host_urls(&pg_admin_url) {
            ensure_local("PG_ADMIN_URL", &host)?;
        }
        for node in amqp_url.split(',') {
            ensure_local("AMQP_URL", node)?;
        }
        let nodes = amqp_url.split(',').count();
        if args.cluster && nodes < 3 {
            bail!("--cluster needs every node of the cluster in AMQP_URL (comma-separated), got {nodes}");
        }
        if !args.cluster && nodes > 1 {
            bail!("AMQP_URL names {nodes} nodes: a run on a cluster needs --cluster");
        }
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
        let stripe_api_base = match args.provider.as_str() {
            "simulator" => None,
            "stripe" => {
                let Some(base) = args.stripe_api_base.clone() else {
                    bail!("--provider stripe needs --stripe-api-base (scripts/chaos --provider stripe starts localstripe and passes it)");
                };
                // A run never charges real money.
                ensure_local("STRIPE_API_BASE", &base)?;
                if args.upgrade_from.is_some() {
                    bail!("--provider stripe does not combine with --upgrade-from: releases before v0.6.0 have no Stripe");
                }
                Some(base)
            }
            other => bail!("--provider must be simulator or stripe, got `{other}`"),
        };
        if let Some(from) = &args.upgrade_from {
            if args.cluster {
                bail!("--upgrade-from runs on this machine's servers, not with --cluster");
            }
            crate::upgrade::binaries_present(from)?;
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
            service_restarts: !args.no_service_restarts && args.upgrade_from.is_none(),
            cluster_script: args.cluster.then_some(args.cluster_script),
            keep: args.keep,
            upgrade: args.upgrade_from.map(|from| (from, args.order)),
            bin_dir,
            run_dir,
            run_id,
            pg_admin_url,
            amqp_url,
            management_url,
            stripe: None,
            stripe_api_base,
        })
    }

    /// With `--provider stripe`: makes the run's PaymentMethods.
    pub async fn prepare_stripe(&mut self) -> anyhow::Result<()> {
        if let Some(base) = &self.stripe_api_base {
            self.stripe = Some(crate::stripe::StripeRun::prepare(base).await?);
        }
        Ok(())
    }
}

impl Settings {
    /// The binaries the run starts with: the older release's in an upgrade.
    pub fn start_bin_dir(&self) -> &std::path::Path {
        match &self.upgrade {
            Some((from, _)) => from,
            None => &self.bin_dir,
        }
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
