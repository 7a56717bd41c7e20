//! The rolling upgrade (`chaos --upgrade-from DIR`): the system starts on an
//! older release's binaries and, under load, each process is replaced by
//! this build's, one at a time, as an operator rolls a deployment: the
//! service's `migrate` first (the deploy step), then SIGTERM, then the new
//! binary in the same slot (same port, same configuration), and the next
//! one only once the new process serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::environment::Environment;
use crate::events::event;
use crate::processes::Fleet;

/// How long a replaced process has to finish its in-flight work.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a new process has to serve.
const READY_BOUND: Duration = Duration::from_secs(60);

/// Which processes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Every worker, then the orchestrators: new replies reach old
    /// orchestrators for most of the roll.
    WorkersFirst,
    /// The orchestrators, then every worker: new commands reach old workers.
    OrchestratorFirst,
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Order::WorkersFirst => "workers first",
            Order::OrchestratorFirst => "orchestrators first",
        })
    }
}

/// One process replaced.
#[derive(Debug, Clone)]
pub struct Step {
    pub slot: String,
    /// Seconds into the run when its SIGTERM was sent.
    pub at_seconds: f64,
    /// From SIGTERM to the old process's exit.
    pub stopped_after: Duration,
    /// From the new process's start to it serving.
    pub serving_after: Duration,
}

/// What the roll did, and what it cost the checkouts.
#[derive(Debug, Clone)]
pub struct Roll {
    pub from: PathBuf,
    pub order: Order,
    pub steps: Vec<Step>,
    pub migrations: Vec<String>,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// Set when the roll could not be finished.
    pub failure: Option<String>,
}

/// The slots in the order they are rolled, by name.
fn order_of(fleet: &Fleet, order: Order) -> Vec<usize> {
    let (orchestrators, workers): (Vec<usize>, Vec<usize>) =
        (0..fleet.len()).partition(|&slot| fleet.name(slot).starts_with("orchestrator"));
    match order {
        Order::WorkersFirst => workers.into_iter().chain(orchestrators).collect(),
        Order::OrchestratorFirst => orchestrators.into_iter().chain(workers).collect(),
    }
}

/// The service a slot runs: `payment-b` is `payment`.
fn service_of(slot: &str) -> &str {
    slot.rsplit_once('-').map_or(slot, |(service, _)| service)
}

pub struct Roller {
    pub fleet: Arc<Mutex<Fleet>>,
    pub api: Arc<Api>,
    pub env: Environment,
    pub from: PathBuf,
    pub to: PathBuf,
    pub order: Order,
    pub log_dir: PathBuf,
    /// Load on the old release before the first process is replaced, and
    /// between two replacements.
    pub warm_up: Duration,
    pub pause: Duration,
}

impl Roller {
    /// Rolls every process, unless `over` fires first.
    pub async fn run(self, over: CancellationToken) -> Roll {
        let mut roll = Roll {
            from: self.from.clone(),
            order: self.order,
            steps: Vec::new(),
            migrations: Vec::new(),
            started: Utc::now(),
            ended: Utc::now(),
            failure: None,
        };
        if pause_or_over(self.warm_up, &over).await {
            roll.failure = Some("the load ended before the roll began".into());
            return roll;
        }
        roll.started = Utc::now();
        event!("rolling to {} ({})", self.to.display(), self.order);
        let slots = order_of(&*self.fleet.lock().await, self.order);
        let mut migrated: Vec<String> = Vec::new();
        for slot in slots {
            let name = self.fleet.lock().await.name(slot).to_owned();
            let service = service_of(&name).to_owned();
            if !migrated.contains(&service) {
                match self.migrate(&service).await {
                    Ok(line) => roll.migrations.push(format!("{service}: {line}")),
                    Err(error) => {
                        roll.failure = Some(format!("`{service} migrate` failed: {error:#}"));
                        break;
                    }
                }
                migrated.push(service.clone());
            }
            match self.replace(slot, &name, &service).await {
                Ok(step) => {
                    event!(
                        "{name} replaced: the old one stopped after {:.1} s, the new one served after {:.1} s",
                        step.stopped_after.as_secs_f64(),
                        step.serving_after.as_secs_f64()
                    );
                    roll.steps.push(step);
                }
                Err(error) => {
                    roll.failure = Some(format!("{name}: {error:#}"));
                    break;
                }
            }
            if pause_or_over(self.pause, &over).await {
                break;
            }
        }
        roll.ended = Utc::now();
        if roll.failure.is_none() && roll.steps.len() < self.fleet.lock().await.len() {
            roll.failure = Some(format!(
                "the load ended after {} of {} processes were replaced",
                roll.steps.len(),
                self.fleet.lock().await.len()
            ));
        }
        roll
    }

    /// The deploy step before a service's first new process: this build's
    /// `SERVICE migrate` against the service's database.
    async fn migrate(&self, service: &str) -> anyhow::Result<String> {
        let log = self.log_dir.join(format!("migrate-{service}.log"));
        let status = self
            .env
            .run_service(self.to.join(service), service, "migrate", &[], &log)
            .await?;
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let last = said.lines().last().unwrap_or("").trim().to_owned();
        if !status.success() {
            bail!("{status}: {last} (see {})", log.display());
        }
        event!("{service} migrate: {last}");
        Ok(last)
    }

    async fn replace(&self, slot: usize, name: &str, service: &str) -> anyhow::Result<Step> {
        let at_seconds = crate::events::elapsed_seconds();
        let stopped_after = self
            .fleet
            .lock()
            .await
            .replace(slot, self.to.join(service), STOP_GRACE)
            .await?;
        let started = Instant::now();
        if service == "orchestrator" {
            let instance = usize::from(!name.ends_with("-a"));
            while !self.api.ready(instance).await {
                self.check_alive(slot, name, started).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            // A worker serves once it consumes its queue again: two
            // consumers, the old one's gone and the new one's there.
            let queue = format!("{}{service}.commands", self.env.amqp_prefix);
            while consumers(self.env.amqp_url(), &queue).await.unwrap_or(0) < 2 {
                self.check_alive(slot, name, started).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(Step {
            slot: name.to_owned(),
            at_seconds,
            stopped_after,
            serving_after: started.elapsed(),
        })
    }

    async fn check_alive(&self, slot: usize, name: &str, started: Instant) -> anyhow::Result<()> {
        let mut fleet = self.fleet.lock().await;
        if fleet.collect_exits().contains(&slot) {
            bail!("the new {name} exited (its log is above)");
        }
        if started.elapsed() > READY_BOUND {
            bail!("the new {name} did not serve within {READY_BOUND:?}");
        }
        Ok(())
    }
}

/// Waits `pause`; true if `over` fired first.
async fn pause_or_over(pause: Duration, over: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = over.cancelled() => true,
    }
}

/// The consumers on `queue` now.
async fn consumers(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    let _ = connection.close(200, "counted".into()).await;
    Ok(declared?.consumer_count())
}

/// What the roll cost the checkouts, read from the orchestrator's timeline.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// Checkouts created while processes were being replaced.
    pub created: i64,
    /// Checkouts that reached a final status meanwhile.
    pub finished: i64,
    /// The longest time without any checkout reaching a final status.
    pub longest_gap: Duration,
}

pub async fn cost(pool: &PgPool, roll: &Roll) -> anyhow::Result<Cost> {
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas WHERE created_at BETWEEN $1 AND $2")
            .bind(roll.started)
            .bind(roll.ended)
            .fetch_one(pool)
            .await?;
    let finals: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT at FROM saga_events \
         WHERE event IN ('completed', 'compensated', 'cancelled') AND at BETWEEN $1 AND $2 \
         ORDER BY at",
    )
    .bind(roll.started)
    .bind(roll.ended)
    .fetch_all(pool)
    .await?;
    let mut longest = chrono::TimeDelta::zero();
    let mut last = roll.started;
    for at in finals.iter().copied().chain([roll.ended]) {
        longest = longest.max(at - last);
        last = at;
    }
    Ok(Cost {
        created,
        finished: finals.len() as i64,
        longest_gap: longest.to_std().unwrap_or_default(),
    })
}

pub fn describe(roll: &Roll, cost: Option<&Cost>) -> Vec<String> {
    let mut lines = vec![format!(
        "rolled from {} to this build, {}: {:.1} s",
        roll.from.display(),
        roll.order,
        (roll.ended - roll.started).as_seconds_f64()
    )];
    for migration in &roll.migrations {
        lines.push(format!("  migrate {migration}"));
    }
    for step in &roll.steps {
        lines.push(format!(
            "  {:<16} at {:6.1} s: old stopped after {:.1} s, new serving after {:.1} s",
            step.slot,
            step.at_seconds,
            step.stopped_after.as_secs_f64(),
            step.serving_after.as_secs_f64()
        ));
    }
    if let Some(cost) = cost {
        lines.push(format!(
            "  during the roll: {} checkouts created, {} finished; longest gap with no checkout finishing {:.2} s",
            cost.created,
            cost.finished,
            cost.longest_gap.as_secs_f64()
        ));
    }
    if let Some(failure) = &roll.failure {
        lines.push(format!("  ROLL FAILED: {failure}"));
    }
    lines
}

pub fn binaries_present(dir: &Path) -> anyhow::Result<()> {
    for binary in ["orchestrator", "inventory", "tax", "payment"] {
        let path = dir.join(binary);
        if !path.is_file() {
            bail!("--upgrade-from: binary {} not found", path.display());
        }
    }
    Ok(())
}
