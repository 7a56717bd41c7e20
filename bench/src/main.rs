//! `checkout-bench`: what an operator sizes a deployment with.
//!
//! `checkout-bench run` (what `scripts/bench` calls) measures the machine's
//! floor, the closed loop one at a time and at a concurrency, then the open
//! loop stepping up arrival rates until latency or errors break, and writes
//! a CSV and an SVG plot. `closed`, `open` and `floor` run one part alone.
//! `idle` measures the system's CPU with no traffic, `history` loads a
//! year of finished checkouts behind a running system, and `compare` puts
//! two runs side by side (`scripts/bench --history N` uses all three).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bench::checkout::{client, CheckoutShape};
use bench::error::BenchError;
use bench::floor::MachineFloor;
use bench::latency::millis;
use bench::open_loop::StepPlan;
use bench::results::{results_folder, write_csv};
use bench::schedule::parse_rates;
use bench::service_usage::{parse_watched, WatchedProcess};
use bench::step::{Load, StepReport};
use bench::verdict::{highest_held, Limits, Verdict};
use bench::{closed_loop, compare, floor_broker, floor_postgres, history, idle, open_loop, plot};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "checkout-bench",
    version,
    about = "Sizes a deployment: checkout latency and throughput, and what the machine allows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything, in this order: floor, closed loop one at a time, closed
    /// loop at `--concurrency`, open loop.
    Run {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        floor: FloorArgs,
        #[command(flatten)]
        closed: ClosedArgs,
        /// Checkouts one at a time.
        #[arg(long, default_value_t = 200)]
        sequential: u64,
        #[command(flatten)]
        open: OpenArgs,
        #[command(flatten)]
        output: Output,
        /// Leave the floor out (a second run on the same machine: it has
        /// not changed).
        #[arg(long)]
        skip_floor: bool,
    },
    /// Closed loop: `--count` checkouts, `--concurrency` in flight.
    Closed {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        closed: ClosedArgs,
        #[command(flatten)]
        output: Output,
    },
    /// Open loop: fixed arrival rates, stepped up until the system breaks.
    Open {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        open: OpenArgs,
        #[command(flatten)]
        output: Output,
    },
    /// The machine's floor alone: PostgreSQL and RabbitMQ without the system.
    Floor {
        #[command(flatten)]
        floor: FloorArgs,
    },
    /// CPU with no traffic: the whole machine, each `--pid`, PostgreSQL
    /// (every postgres process) and RabbitMQ (beam.smp).
    Idle {
        /// Seconds to measure.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// A service process to report, as NAME=PID (repeat, or separate
        /// with commas).
        #[arg(long = "pid", value_delimiter = ',', value_parser = parse_watched)]
        pids: Vec<WatchedProcess>,
        /// The orchestrator's database: first wait (up to
        /// `--settle-seconds`) until no saga is in flight and the outbox is
        /// empty, then checkpoint, so that the end of a run is not measured.
        #[arg(long)]
        orchestrator_url: Option<String>,
        #[arg(long, default_value_t = 60.0)]
        settle_seconds: f64,
        /// Also report the PostgreSQL processes serving databases whose
        /// name starts with this (the system's own, on a shared server).
        #[arg(long)]
        database_prefix: Option<String>,
        /// A folder to write idle.csv into.
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Loads about `--count` finished sagas of history, spread over the
    /// past year, into the four databases of a running system: copies of
    /// the sagas that finished there in the last day (a bench run's).
    History {
        /// Sagas to load (rounded up to a whole number of copies of each
        /// finished saga).
        #[arg(long)]
        count: u64,
        #[arg(long)]
        orchestrator_url: String,
        #[arg(long)]
        inventory_url: String,
        #[arg(long)]
        tax_url: String,
        #[arg(long)]
        payment_url: String,
        /// The workers' INBOX_RETENTION_DAYS: older inbox rows are not made.
        #[arg(long, default_value_t = 7)]
        inbox_days: u32,
    },
    /// Two runs' results side by side (`steps.csv` and `idle.csv` of each).
    Compare {
        #[arg(long)]
        fresh: PathBuf,
        #[arg(long)]
        history: PathBuf,
        /// The history run's column heading.
        #[arg(long, default_value = "with history")]
        label: String,
    },
}

#[derive(Args)]
struct Target {
    /// Base URL of the orchestrator.
    #[arg(long, env = "CHECKOUT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The checkout client key (`sagactl clients add`, or CHECKOUT_CLIENT_KEYS).
    #[arg(long, env = "CHECKOUT_CLIENT_KEY", hide_env_values = true)]
    key: String,
    /// SKUs to choose from (they must exist with enough stock).
    #[arg(long, value_delimiter = ',', default_value = "SKU-TSHIRT,SKU-BOOK")]
    skus: Vec<String>,
    /// Lines per checkout, each a different SKU picked at random from `--skus`.
    #[arg(long, default_value_t = 2)]
    lines: usize,
    #[arg(long, default_value = "US")]
    country: String,
    #[arg(long, default_value = "CA")]
    region: String,
    #[arg(long, default_value = "sim_approve")]
    payment_method: String,
    /// A service process to report CPU and memory of, as NAME=PID
    /// (repeat, or separate with commas).
    #[arg(long = "pid", value_delimiter = ',', value_parser = parse_watched)]
    pids: Vec<WatchedProcess>,
}

impl Target {
    fn shape(&self) -> CheckoutShape {
        CheckoutShape {
            url: self.url.trim_end_matches('/').to_owned(),
            key: self.key.clone(),
            skus: self.skus.clone(),
            lines: self.lines,
            country: self.country.clone(),
            region: self.region.clone(),
            payment_method: self.payment_method.clone(),
        }
    }
}

#[derive(Args)]
struct ClosedArgs {
    /// Checkouts in the closed loop.
    #[arg(long, default_value_t = 2000)]
    count: u64,
    /// Checkouts in flight at once in the closed loop.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Args)]
struct OpenArgs {
    /// Arrival rates per second, increasing; stepping stops at the first
    /// broken step.
    #[arg(long, value_parser = parse_rates, default_value = "50,100,150,200,300,400,600,800,1200,1600")]
    rates: std::vec::Vec<f64>,
    /// Seconds each rate is offered.
    #[arg(long, default_value_t = 10.0)]
    step_seconds: f64,
    /// Seconds to wait after a step's last send for its checkouts to end.
    #[arg(long, default_value_t = 30.0)]
    drain_seconds: f64,
    /// In-flight checkouts beyond which a due checkout is counted as an
    /// error instead of sent.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// A step holds if its p99 is at or under this (ms)...
    #[arg(long, default_value_t = 100)]
    held_p99_ms: u64,
    /// ...and is broken, ending the run, above this (ms), above
    /// `--max-errors-percent` errors, or under 90% of the offered rate.
    #[arg(long, default_value_t = 1000)]
    broken_p99_ms: u64,
    #[arg(long, default_value_t = 1.0)]
    max_errors_percent: f64,
}

impl OpenArgs {
    fn limits(&self) -> Limits {
        Limits {
            held_p99: Duration::from_millis(self.held_p99_ms),
            broken_p99: Duration::from_millis(self.broken_p99_ms),
            max_error_share: self.max_errors_percent / 100.0,
            ..Limits::default()
        }
    }
}

#[derive(Args)]
struct FloorArgs {
    /// A PostgreSQL URL allowed to create (and drop) a scratch database.
    #[arg(
        long,
        env = "PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Clients (PostgreSQL) and publishers (RabbitMQ) of the loaded probes.
    #[arg(long, default_value_t = 16)]
    floor_clients: usize,
    /// Seconds of each probe phase (loaded, then alone).
    #[arg(long, default_value_t = 5.0)]
    floor_seconds: f64,
}

#[derive(Args)]
struct Output {
    /// The folder to write steps.csv and latency.svg into (made if
    /// missing); by default bench-results/<UTC time>.
    #[arg(long)]
    results: Option<PathBuf>,
}

fn seconds(value: f64, name: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BenchError::Usage(format!("{name} must be a positive number of seconds")))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("checkout-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false): the bench ran but the system failed checkouts it should have
/// served.
async fn run(command: Command) -> Result<bool, BenchError> {
    match command {
        Command::Floor { floor } => {
            let floor = measure_floor(&floor).await?;
            println!("{floor}");
            Ok(true)
        }
        Command::Closed {
            target,
            closed,
            output,
        } => {
            let step = run_closed(&target, closed.count, closed.concurrency).await?;
            let ok = step.errors == 0;
            finish(&output, &[step], None, Duration::from_millis(100))?;
            Ok(ok)
        }
        Command::Open {
            target,
            open,
            output,
        } => {
            let steps = run_open(&target, &open).await?;
            let ok = first_step_served(&steps);
            summarise_open(&steps, &open);
            finish(&output, &steps, None, open.limits().held_p99)?;
            Ok(ok)
        }
        Command::Idle {
            seconds: length,
            pids,
            orchestrator_url,
            settle_seconds,
            database_prefix,
            results,
        } => {
            let length = seconds(length, "--seconds")?;
            if let Some(url) = orchestrator_url {
                idle::settle(&url, seconds(settle_seconds, "--settle-seconds")?).await?;
            }
            eprintln!("  [idle] {length:?} without traffic");
            let report = idle::measure(&pids, length, database_prefix.as_deref()).await;
            println!("{report}");
            if let Some(folder) = results {
                idle::write_csv(&folder, &report)?;
            }
            Ok(true)
        }
        Command::History {
            count,
            orchestrator_url,
            inventory_url,
            tax_url,
            payment_url,
            inbox_days,
        } => {
            let databases = history::Databases {
                orchestrator: orchestrator_url,
                inventory: inventory_url,
                tax: tax_url,
                payment: payment_url,
            };
            let plan = history::HistoryPlan {
                count,
                now_ms: history::now_ms(),
                inbox_days,
            };
            let report = history::load(&databases, plan).await?;
            print!("{report}");
            Ok(true)
        }
        Command::Compare {
            fresh,
            history,
            label,
        } => {
            let fresh = compare::read_run(&fresh)?;
            let history = compare::read_run(&history)?;
            print!("{}", compare::table(&fresh, &history, &label));
            Ok(true)
        }
        Command::Run {
            target,
            floor,
            closed,
            sequential,
            open,
            output,
            skip_floor,
        } => {
            let floor = if skip_floor {
                None
            } else {
                println!("== machine floor (PostgreSQL and RabbitMQ alone)");
                let floor = measure_floor(&floor).await?;
                println!("{floor}");
                Some(floor)
            };
            println!("== closed loop, one at a time");
            let one = run_closed(&target, sequential, 1).await?;
            println!("== closed loop, {} in flight", closed.concurrency);
            let many = run_closed(&target, closed.count, closed.concurrency).await?;
            let ok = one.errors == 0 && many.errors == 0;
            println!("== open loop");
            let open_steps = run_open(&target, &open).await?;
            let ok = ok && first_step_served(&open_steps);

            println!("== summary");
            let alone = floor.as_ref().map_or(String::new(), |floor| {
                format!(
                    " (the floor allows about {:.1} ms)",
                    millis(floor.checkout_alone())
                )
            });
            println!(
                "one at a time: p50 {:.1} ms, p99 {:.1} ms{alone}",
                millis(one.latency.p50),
                millis(one.latency.p99),
            );
            let share = floor.as_ref().map_or(String::new(), |floor| {
                format!(
                    ", {:.0}% of the {:.0}/s the machine allows",
                    floor.share(many.achieved_rate) * 100.0,
                    floor.checkouts_per_second()
                )
            });
            println!(
                "closed loop at {} in flight: {:.0} checkouts/s{share}",
                closed.concurrency, many.achieved_rate,
            );
            let held = summarise_open(&open_steps, &open);
            if let (Some(rate), Some(floor)) = (held, &floor) {
                println!(
                    "open loop: the highest rate held is {:.0}% of what the machine allows",
                    floor.share(rate) * 100.0
                );
            }
            let mut steps = vec![one, many];
            steps.extend(open_steps);
            finish(&output, &steps, floor.as_ref(), open.limits().held_p99)?;
            Ok(ok)
        }
    }
}

async fn measure_floor(args: &FloorArgs) -> Result<MachineFloor, BenchError> {
    let length = seconds(args.floor_seconds, "--floor-seconds")?;
    eprintln!("  [floor] PostgreSQL: one-statement step transactions, {length:?} at {} clients, then {length:?} alone", args.floor_clients);
    let step = floor_postgres::probe(&args.pg_admin_url, args.floor_clients, length).await?;
    eprintln!("  [floor] RabbitMQ: confirmed messages on a quorum queue, {length:?} at {} publishers, then {length:?} alone", args.floor_clients);
    let message = floor_broker::probe(&args.amqp_url, args.floor_clients, length).await?;
    Ok(MachineFloor { step, message })
}

async fn run_closed(
    target: &Target,
    count: u64,
    concurrency: usize,
) -> Result<StepReport, BenchError> {
    let client = client(concurrency)?;
    let step = closed_loop::run(&client, &target.shape(), count, concurrency, &target.pids).await;
    println!("{step}");
    Ok(step)
}

async fn run_open(target: &Target, args: &OpenArgs) -> Result<Vec<StepReport>, BenchError> {
    let length = seconds(args.step_seconds, "--step-seconds")?;
    let drain = seconds(args.drain_seconds, "--drain-seconds")?;
    let limits = args.limits();
    let client = client(args.max_in_flight)?;
    let shape = Arc::new(target.shape());
    let mut steps = Vec::new();
    let mut first = 0;
    for &rate in &args.rates {
        let plan = StepPlan {
            rate,
            length,
            drain,
            max_in_flight: args.max_in_flight,
        };
        let step = open_loop::run_step(&client, &shape, plan, first, &target.pids, &limits).await;
        first += step.offered;
        println!("{step}");
        let broken = matches!(step.verdict, Some(Verdict::Broken(_)));
        steps.push(step);
        if broken {
            break;
        }
    }
    Ok(steps)
}

/// The one line an operator sizes by.
fn summarise_open(steps: &[StepReport], args: &OpenArgs) -> Option<f64> {
    let held = highest_held(steps.iter().filter_map(|s| match (&s.load, &s.verdict) {
        (Load::Open { rate }, Some(verdict)) => Some((*rate, verdict)),
        _ => None,
    }));
    match held {
        Some(rate) => println!(
            "highest rate held with p99 <= {} ms: {rate:.0} checkouts/s",
            args.held_p99_ms
        ),
        None => println!(
            "highest rate held with p99 <= {} ms: none (not even {:.0}/s)",
            args.held_p99_ms,
            args.rates.first().copied().unwrap_or_default()
        ),
    }
    held
}

/// A system that errs at the lowest rate offered does not work at all;
/// at higher rates errors are what the open loop is looking for.
fn first_step_served(steps: &[StepReport]) -> bool {
    steps.first().is_some_and(|s| {
        !matches!(&s.verdict, Some(Verdict::Broken(why)) if why.starts_with("errors"))
            && s.completed > 0
    })
}

fn finish(
    output: &Output,
    steps: &[StepReport],
    floor: Option<&MachineFloor>,
    held_p99: Duration,
) -> Result<(), BenchError> {
    let folder = match &output.results {
        Some(folder) => {
            std::fs::create_dir_all(folder)?;
            folder.clone()
        }
        None => results_folder(Path::new("bench-results"))?,
    };
    write_csv(&folder.join("steps.csv"), steps)?;
    if let Some(floor) = floor {
        std::fs::write(
            folder.join("floor.csv"),
            compare::floor_csv(floor.checkouts_per_second(), millis(floor.checkout_alone())),
        )?;
    }
    let title = match floor {
        Some(floor) => format!(
            "checkout latency vs throughput (machine allows about {:.0}/s)",
            floor.checkouts_per_second()
        ),
        None => "checkout latency vs throughput".to_owned(),
    };
    std::fs::write(
        folder.join("latency.svg"),
        plot::latency_svg(steps, held_p99, &title),
    )?;
    println!("results: {}", folder.display());
    Ok(())
}
