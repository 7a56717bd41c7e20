//! `chaos`: the real binaries under SIGKILLs and server restarts, then a
//! check that nothing was lost, stuck or doubled (`chaos --help`,
//! `docs/chaos.md`).
//!
//! The run: fresh databases and AMQP prefix; two orchestrators and two
//! copies of each worker; checkouts driven while faults are injected; every
//! process up again; drain; checks; report. Whatever happens (error, Ctrl-C)
//! it stops every process it started and leaves PostgreSQL and RabbitMQ up.

mod api;
mod args;
mod checks;
mod cluster;
mod driver;
mod environment;
mod events;
mod faults;
mod processes;
mod report;
mod services;
mod setup;
mod stripe;
mod upgrade;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use sqlx::postgres::PgPoolOptions;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Posted};
use crate::args::{Args, Settings};
use crate::cluster::Cluster;
use crate::environment::Environment;
use crate::events::event;
use crate::faults::{Faults, Restart, Servers};
use crate::processes::Fleet;
use crate::report::{Disruption, Evidence, Plan, Report};
use crate::services::Services;

/// SIGTERM grace of the services at the end: they finish in-flight work.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long every process has to be ready again after the chaos.
const READY_BOUND: Duration = Duration::from_secs(90);
/// How long the drain waits for every saga to settle.
const DRAIN_BOUND: Duration = Duration::from_secs(180);
/// How long an interrupted run waits for the fault under way to finish (a
/// server restart, with its bounds on every command and wait).
const FAULT_FINISH_BOUND: Duration = Duration::from_secs(300);

/// The chaos phase as seen from outside the run: main must be able to end it
/// and wait for it even when the run itself is dropped (Ctrl-C), or a server
/// stopped by a restart under way could be left down.
#[derive(Default)]
struct Chaos {
    over: CancellationToken,
    faults: std::sync::Mutex<Option<JoinHandle<Vec<Restart>>>>,
}

impl Chaos {
    /// Ends the chaos and waits for the fault under way to finish.
    async fn end(&self) {
        self.over.cancel();
        let faults = self.faults.lock().expect("not poisoned").take();
        if let Some(faults) = faults {
            if tokio::time::timeout(FAULT_FINISH_BOUND, faults)
                .await
                .is_err()
            {
                event!("the fault under way did not finish within {FAULT_FINISH_BOUND:?}");
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut settings = match Settings::from_args(Args::parse()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = settings.prepare_stripe().await {
        eprintln!("chaos: {error:#}");
        return ExitCode::from(2);
    }
    events::start();
    if let Some(run_id) = &settings.remove {
        let env = Environment::new(
            run_id,
            &settings.pg_admin_url,
            &settings.amqp_url,
            settings.management_url.as_deref(),
        );
        return match env.remove().await {
            Ok(()) => {
                eprintln!("chaos: removed the databases and queues of run {run_id}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("chaos: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    let env = Environment::new(
        &settings.run_id,
        &settings.pg_admin_url,
        &settings.amqp_url,
        settings.management_url.as_deref(),
    );
    let log_dir = settings.run_dir.join("logs");
    if let Err(error) = std::fs::create_dir_all(&log_dir) {
        eprintln!("chaos: cannot create {}: {error}", log_dir.display());
        return ExitCode::from(2);
    }
    let servers_log = log_dir.join("servers.log");
    let services = match (&settings.cluster_script, settings.service_restarts) {
        (_, false) => None,
        (Some(script), true) => Some(Servers::Cluster(Cluster::new(
            script,
            &settings.amqp_url,
            &settings.pg_admin_url,
            &servers_log,
        ))),
        (None, true) => {
            match Services::detect(&settings.pg_admin_url, &settings.amqp_url, &servers_log) {
                Ok(services) => Some(Servers::Local(services)),
                Err(error) => {
                    eprintln!("chaos: {error:#}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let ports = match setup::free_ports() {
        Ok(ports) => ports,
        Err(error) => {
            eprintln!("chaos: no free port for the orchestrators: {error}");
            return ExitCode::from(2);
        }
    };
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let client_key = uuid::Uuid::new_v4().simple().to_string();
    // An upgrade run starts releases from before per-service users: they
    // declare the topology themselves, which a worker's user may not.
    let users = match &settings.upgrade {
        Some(_) => None,
        None => match env.create_service_users().await {
            Ok(users) => Some(users),
            Err(error) => {
                eprintln!("chaos: {error:#}");
                keep_notice(&env, &settings.run_id);
                return ExitCode::from(2);
            }
        },
    };
    if users.is_some() {
        event!("each service connects as its own RabbitMQ user; the orchestrators take replies only from the workers' users");
    }
    let specs = setup::specs(
        settings.start_bin_dir(),
        &env,
        ports,
        &admin_token,
        &client_key,
        users.as_ref(),
        settings.stripe.as_ref(),
    );
    // The release rolled from starts as it was deployed: migrating at start
    // (a release with `migrate` would otherwise refuse the fresh databases).
    // Each replacement runs with MIGRATE_ON_START=false (Fleet::replace).
    let fleet = Arc::new(Mutex::new(Fleet::new(&log_dir, specs)));
    let api = Arc::new(Api::new(
        ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
        &client_key,
    ));

    event!(
        "run {} (seed {}): logs in {}",
        settings.run_id,
        settings.seed,
        settings.run_dir.display()
    );
    let supervisor = tokio::spawn(processes::supervise(fleet.clone()));
    let chaos = Chaos::default();
    let outcome = tokio::select! {
        report = run(&settings, &env, &fleet, &api, services.clone(), &chaos) => report,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };

    // Whatever happened: nothing of ours left running, both servers up.
    chaos.end().await;
    supervisor.abort();
    event!("stopping the services (SIGTERM, SIGKILL after {STOP_GRACE:?})");
    fleet.lock().await.stop_all(STOP_GRACE).await;
    if let Some(services) = &services {
        for note in services.ensure_up().await {
            event!("{note}");
        }
    }

    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            keep_notice(&env, &settings.run_id);
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    let report_file = settings.run_dir.join("report.txt");
    if let Err(error) = std::fs::write(&report_file, report.to_string()) {
        eprintln!("chaos: cannot write {}: {error}", report_file.display());
    }
    let passed = report.failures().is_empty();
    if passed && !settings.keep {
        match env.remove().await {
            Ok(()) => event!("dropped the run's databases and queues"),
            Err(error) => {
                eprintln!("chaos: {error:#}");
                keep_notice(&env, &settings.run_id);
            }
        }
    } else {
        keep_notice(&env, &settings.run_id);
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The whole run up to the report; returns early only when it cannot be
/// carried out.
async fn run(
    settings: &Settings,
    env: &Environment,
    fleet: &Arc<Mutex<Fleet>>,
    api: &Arc<Api>,
    services: Option<Servers>,
    chaos: &Chaos,
) -> anyhow::Result<Report> {
    // Setup: databases, processes, data.
    env.create_databases().await?;
    fleet.lock().await.start_all()?;
    let instances = 2;
    setup::wait_ready(api, instances, READY_BOUND).await?;
    if !fleet.lock().await.unexpected_exits().is_empty() {
        bail!("a service exited while starting (its log lines are above)");
    }
    let catalogue = settings.run_dir.join("catalogue.csv");
    let rates = settings.run_dir.join("tax_rates.csv");
    std::fs::write(&catalogue, workload::catalogue_csv())?;
    std::fs::write(&rates, workload::tax_rates_csv())?;
    let logs = settings.run_dir.join("logs");
    setup::import(
        settings.start_bin_dir(),
        env,
        "inventory",
        &catalogue,
        logs.join("import-inventory.log"),
    )
    .await?;
    setup::import(
        settings.start_bin_dir(),
        env,
        "tax",
        &rates,
        logs.join("import-tax.log"),
    )
    .await?;
    event!(
        "system up: orchestrators at {} and {}, two copies of each worker; data loaded",
        api.base(0),
        api.base(1)
    );

    // The chaos: checkouts driven while faults are injected.
    let methods = match &settings.stripe {
        Some(stripe) => workload::Methods::stripe(&stripe.approve, &stripe.decline),
        None => workload::Methods::simulator(),
    };
    let plan = workload::plan(
        settings.checkouts,
        settings.seed,
        &settings.run_id,
        &methods,
    );
    let over = chaos.over.clone();
    let progress = Arc::new(driver::Progress::default());
    let chaos_started = Instant::now();
    let mut roller = None;
    match &settings.upgrade {
        Some((from, order)) => {
            // The roll takes the middle of the load: a sixth of it on the old
            // release first, then a pause between two processes that lets
            // the mixed fleet serve.
            let slots = fleet.lock().await.len() as u32;
            roller = Some(tokio::spawn(
                upgrade::Roller {
                    fleet: fleet.clone(),
                    api: api.clone(),
                    env: env.clone(),
                    from: from.clone(),
                    to: settings.bin_dir.clone(),
                    order: *order,
                    log_dir: settings.run_dir.join("logs"),
                    warm_up: settings.seconds / 6,
                    pause: settings.seconds / (3 * slots),
                }
                .run(over.clone()),
            ));
        }
        None => {
            let faults = tokio::spawn(
                Faults {
                    fleet: fleet.clone(),
                    api: api.clone(),
                    servers: services,
                    run_id: settings.run_id.clone(),
                    methods: methods.clone(),
                    seed: settings.seed,
                    span: settings.seconds,
                }
                .run(over.clone()),
            );
            *chaos.faults.lock().expect("not poisoned") = Some(faults);
        }
    }
    let mut driving = tokio::spawn(driver::drive(
        api.clone(),
        plan,
        settings.concurrency,
        settings.seconds,
        over.clone(),
        progress.clone(),
    ));
    tokio::spawn({
        let (progress, over) = (progress.clone(), over.clone());
        let total = settings.checkouts;
        async move {
            loop {
                tokio::select! {
                    _ = over.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                }
                event!("{}", progress.line(total));
            }
        }
    });
    // The roll ends before the load does: the last minutes run on the new
    // build alone.
    let roll = match roller {
        Some(roller) => Some(roller.await?),
        None => None,
    };
    // Whichever comes first: every checkout driven, or the time is up.
    let driving = tokio::select! {
        driving = &mut driving => {
            over.cancel();
            driving?
        }
        _ = tokio::time::sleep(settings.seconds) => {
            event!("{} s passed: ending the chaos", settings.seconds.as_secs());
            over.cancel();
            driving.await?
        }
    };
    let chaos_lasted = chaos_started.elapsed();
    let faults = chaos.faults.lock().expect("not poisoned").take();
    let restarts = match faults {
        Some(faults) => faults.await?,
        None => Vec::new(),
    };
    event!(
        "chaos over after {:.1} s; {}",
        chaos_lasted.as_secs_f64(),
        progress.line(settings.checkouts)
    );

    // Everything up, then let every saga settle.
    let started = fleet.lock().await.start_missing()?;
    if !started.is_empty() {
        event!("started again: {}", started.join(", "));
    }
    setup::wait_ready(api, instances, READY_BOUND)
        .await
        .context("after the chaos")?;
    // On a cluster the primary may have moved: the checks use the one now.
    let orchestrator_db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(&env.primary_database_url("orchestrator").await?)?;
    event!("draining: waiting for every saga to be final or parked (at most {DRAIN_BOUND:?})");
    let drain = checks::drain(&orchestrator_db, DRAIN_BOUND).await;
    event!(
        "drained in {:.1} s ({} left in flight)",
        drain.took.as_secs_f64(),
        drain.left
    );

    // The checks.
    let mut ids: Vec<uuid::Uuid> = driving
        .driven
        .iter()
        .filter_map(|d| match d.posted {
            Posted::Accepted { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    ids.extend(restarts.iter().filter_map(|r| r.probe));
    event!("looking up {} accepted checkouts", ids.len());
    let lookups = checks::lookups(api.clone(), ids).await;
    let sagas = checks::sagas(&orchestrator_db).await?;
    let timeline = checks::timeline(&orchestrator_db).await?;
    let dead_letters = checks::dead_letters(&orchestrator_db).await;
    let roll = match roll {
        Some(roll) => {
            let cost = upgrade::cost(&orchestrator_db, &roll).await;
            if let Err(error) = &cost {
                event!("cannot read what the roll cost: {error:#}");
            }
            Some((roll, cost.ok()))
        }
        None => None,
    };
    orchestrator_db.close().await;
    event!("running the auditor");
    let audit = checks::audit(
        &settings.bin_dir,
        env,
        settings.stripe.as_ref(),
        &settings.run_dir.join("auditor.txt"),
    )
    .await;

    let fleet = fleet.lock().await;
    Ok(Report::judge(
        Plan {
            run_id: settings.run_id.clone(),
            run_dir: settings.run_dir.display().to_string(),
            seed: settings.seed,
            checkouts: settings.checkouts,
            span: settings.seconds,
            concurrency: settings.concurrency,
            processes: fleet.len(),
            service_restarts: settings.service_restarts,
            cluster: settings.cluster_script.is_some(),
        },
        Evidence {
            disruption: Disruption {
                chaos_lasted,
                kills: fleet.kills(),
                restarts,
                unexpected_exits: fleet.unexpected_exits().to_vec(),
            },
            driving,
            drain,
            sagas,
            lookups,
            timeline,
            dead_letters,
            audit,
            roll,
        },
    ))
}

/// Ctrl-C or SIGTERM: the run stops, cleans up, and says so.
async fn interrupted() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// A failed or kept run leaves its databases and queues for inspection.
fn keep_notice(env: &Environment, run_id: &str) {
    eprintln!(
        "chaos: kept the databases {} and the queues {}* for inspection; \
         remove them with: scripts/chaos --remove {run_id}",
        env.database_name("*"),
        env.amqp_prefix
    );
}
