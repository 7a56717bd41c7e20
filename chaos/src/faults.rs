//! The faults: every 2-5 s a random service process is SIGKILLed and started
//! again after a short pause; once a third into the chaos RabbitMQ is
//! restarted, and once two thirds in PostgreSQL, each followed by a probe
//! checkout that measures how long the system took to serve again.
//!
//! On a cluster (`--cluster`) the server faults are instead RabbitMQ nodes
//! SIGKILLed one at a time, each node in turn, a probe checkout posted while
//! the node is down, then the node started again; and once, halfway, a
//! PostgreSQL failover: the primary SIGKILLed, the standby promoted.
//!
//! Faults are injected one at a time (no kill during a server restart), so
//! a recovery time measures that restart alone. The schedule is drawn from
//! the seed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{Api, Posted};
use crate::cluster::Cluster;
use crate::events::event;
use crate::processes::Fleet;
use crate::services::Services;
use crate::workload;

/// How long a restarted server may take to answer again.
const BACK_BOUND: Duration = Duration::from_secs(90);
/// How long the probe may take to complete once the server answers: past
/// this the system is reported as not recovered.
const PROBE_BOUND: Duration = Duration::from_secs(120);

/// How long a node kill waits for the cluster to heal from the last one.
const HEAL_BOUND: Duration = Duration::from_secs(120);

/// Node kills a cluster run makes at least, and at most: one per 50 s of
/// its span in between, so that each node is killed at least once.
const NODE_KILLS: (u64, u64) = (3, 12);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The machine's RabbitMQ: application stopped, then started.
    RabbitMq,
    /// The machine's PostgreSQL: restarted in fast mode.
    Postgres,
    /// A cluster's RabbitMQ node (from 1): SIGKILLed, then started again.
    RabbitNode(usize),
    /// A cluster's PostgreSQL primary SIGKILLed and its standby promoted.
    PostgresFailover,
}

impl Server {
    /// Part of the probe's idempotency key: unique within a run.
    fn label(self, at: usize) -> String {
        match self {
            Server::RabbitMq => "rabbitmq".to_owned(),
            Server::Postgres => "postgres".to_owned(),
            Server::RabbitNode(n) => format!("{at}-rabbitmq-node-{n}"),
            Server::PostgresFailover => "postgres-failover".to_owned(),
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::RabbitMq => f.pad("RabbitMQ"),
            Server::Postgres => f.pad("PostgreSQL"),
            Server::RabbitNode(n) => f.pad(&format!("RabbitMQ node {n}")),
            Server::PostgresFailover => f.pad("PostgreSQL failover"),
        }
    }
}

/// The servers a run injects faults into.
#[derive(Debug, Clone)]
pub enum Servers {
    /// This machine's own PostgreSQL and RabbitMQ.
    Local(Services),
    /// The three-node RabbitMQ cluster and PostgreSQL pair of `scripts/cluster`.
    Cluster(Cluster),
}

impl Servers {
    /// Starts whatever is down; returns what it had to do.
    pub async fn ensure_up(&self) -> Vec<String> {
        match self {
            Servers::Local(services) => services.ensure_up().await,
            Servers::Cluster(cluster) => cluster.ensure_up().await,
        }
    }

    /// When each server fault is due, from the start of the chaos.
    fn schedule(&self, span: Duration, rng: &mut StdRng) -> Vec<(Duration, Server)> {
        match self {
            Servers::Local(_) => vec![
                (span / 3, Server::RabbitMq),
                (span * 2 / 3, Server::Postgres),
            ],
            Servers::Cluster(cluster) => cluster_schedule(span, cluster.node_count(), rng),
        }
    }
}

/// Node kills spread evenly over `span`, the nodes in an order drawn from
/// `rng` and then in turn (so never the same node twice running), with the
/// one failover in the middle.
fn cluster_schedule(span: Duration, nodes: usize, rng: &mut StdRng) -> Vec<(Duration, Server)> {
    let kills = (span.as_secs() / 50).clamp(NODE_KILLS.0, NODE_KILLS.1) as usize;
    let mut order: Vec<usize> = (1..=nodes).collect();
    order.shuffle(rng);
    let failover_at = kills.div_ceil(2);
    let faults = kills + 1;
    let mut nodes_in_turn = order.iter().copied().cycle();
    (0..faults)
        .map(|i| {
            let due = span * (i as u32 + 1) / (faults as u32 + 1);
            let server = if i == failover_at {
                Server::PostgresFailover
            } else {
                Server::RabbitNode(nodes_in_turn.next().expect("cycle"))
            };
            (due, server)
        })
        .collect()
}

/// One server restart and what it cost.
#[derive(Debug, Clone)]
pub struct Restart {
    pub server: Server,
    /// Seconds into the run when the restart command was issued.
    pub at_seconds: f64,
    /// From the restart command until the server answered again.
    pub back_after: Option<Duration>,
    /// From the restart command until the probe checkout completed.
    pub recovered_after: Option<Duration>,
    pub probe: Option<Uuid>,
    /// What went wrong, if the server or the system did not come back.
    pub failure: Option<String>,
}

pub struct Faults {
    pub fleet: Arc<Mutex<Fleet>>,
    pub api: Arc<Api>,
    /// `None` with --no-service-restarts.
    pub servers: Option<Servers>,
    pub run_id: String,
    /// What the probes pay with.
    pub methods: workload::Methods,
    pub seed: u64,
    /// How long the chaos is planned to last; the server restarts are placed
    /// at a third and two thirds of it.
    pub span: Duration,
}

impl Faults {
    /// Injects faults until `stop` fires; a fault under way is finished
    /// first, so every process and server is up when this returns.
    pub async fn run(self, stop: CancellationToken) -> Vec<Restart> {
        // Its own stream, so the checkout mix does not shift the schedule.
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5eed_fa17);
        let started = Instant::now();
        let mut due = match &self.servers {
            Some(servers) => servers.schedule(self.span, &mut rng),
            None => Vec::new(),
        };
        let mut restarts = Vec::new();
        loop {
            let gap = Duration::from_millis(rng.random_range(2000..=5000));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(gap) => {}
            }
            if let Some(&(at, server)) = due.first() {
                if started.elapsed() >= at {
                    due.remove(0);
                    let at = restarts.len();
                    restarts.push(self.restart(server, at, &mut rng).await);
                    continue;
                }
            }
            let slot = rng.random_range(0..self.fleet.lock().await.len());
            let pause = Duration::from_millis(rng.random_range(200..=2000));
            self.kill_and_restart(slot, pause).await;
        }
        restarts
    }

    async fn kill_and_restart(&self, slot: usize, pause: Duration) {
        let (name, killed) = {
            let mut fleet = self.fleet.lock().await;
            (fleet.name(slot).to_owned(), fleet.kill(slot).await)
        };
        match killed {
            Ok(true) => event!("SIGKILL {name}; restart in {} ms", pause.as_millis()),
            // It exited on its own: the supervisor restarts it.
            Ok(false) => return event!("{name} was already down"),
            Err(error) => return event!("could not kill {name}: {error:#}"),
        }
        tokio::time::sleep(pause).await;
        let mut fleet = self.fleet.lock().await;
        // The supervisor may have found it down and restarted it meanwhile.
        if let Err(error) = fleet.start_missing() {
            event!("could not restart {name}: {error:#}");
        }
    }

    /// Restarts `server`, waits for it to answer, then posts a probe
    /// checkout and waits for it to complete. A cluster node is different:
    /// the probe is posted while it is down (the two others must serve),
    /// and the node is started again after.
    async fn restart(&self, server: Server, at: usize, rng: &mut StdRng) -> Restart {
        let servers = self
            .servers
            .as_ref()
            .expect("restarts are only due with servers");
        if let (Server::RabbitNode(n), Servers::Cluster(cluster)) = (server, servers) {
            let healing = Instant::now();
            if let Err(error) = cluster.wait_healed(n, HEAL_BOUND).await {
                let restart = Restart {
                    server,
                    at_seconds: crate::events::elapsed_seconds(),
                    back_after: None,
                    recovered_after: None,
                    probe: None,
                    failure: None,
                };
                return self.failed(restart, servers, error).await;
            }
            if healing.elapsed() > Duration::from_secs(5) {
                event!(
                    "{server}: the kill waited {:.1} s for the cluster to heal from the last one",
                    healing.elapsed().as_secs_f64()
                );
            }
        }
        let at_seconds = crate::events::elapsed_seconds();
        let issued = Instant::now();
        let mut restart = Restart {
            server,
            at_seconds,
            back_after: None,
            recovered_after: None,
            probe: None,
            failure: None,
        };
        if let (Server::RabbitNode(n), Servers::Cluster(cluster)) = (server, servers) {
            // Down at least this long, as a crashed node would be.
            let down = Duration::from_millis(rng.random_range(2000..=4000));
            event!(
                "{server}: SIGKILL; probe while it is down, start it again at least {} ms later",
                down.as_millis()
            );
            if let Err(error) = cluster.kill_node(n).await {
                return self.failed(restart, servers, error).await;
            }
            self.probe(&mut restart, at, issued, Instant::now()).await;
            tokio::time::sleep_until((issued + down).into()).await;
            if let Err(error) = cluster.start_node(n, BACK_BOUND).await {
                return self.failed(restart, servers, error).await;
            }
            restart.back_after = Some(issued.elapsed());
            event!(
                "{server} answers again after {:.1} s",
                issued.elapsed().as_secs_f64()
            );
            return restart;
        }
        let outcome = match (server, servers) {
            (Server::RabbitMq, Servers::Local(services)) => {
                // Down for a few seconds on top of the stop and the start,
                // as a node restart would be.
                let down = Duration::from_millis(rng.random_range(2000..=4000));
                event!(
                    "RabbitMQ: rabbitmqctl stop_app (start_app in {} ms after it)",
                    down.as_millis()
                );
                out_for(services.stop_rabbitmq(), down, async {
                    services.start_rabbitmq().await?;
                    services.wait_rabbitmq(BACK_BOUND).await
                })
                .await
            }
            (Server::Postgres, Servers::Local(services)) => {
                event!("PostgreSQL: pg_ctlcluster restart -m fast");
                async {
                    services.restart_postgres().await?;
                    services.wait_postgres(BACK_BOUND).await
                }
                .await
            }
            (Server::PostgresFailover, Servers::Cluster(cluster)) => {
                // How long an HA manager or an operator takes to decide the
                // primary is gone.
                let pause = Duration::from_millis(rng.random_range(1000..=3000));
                event!(
                    "PostgreSQL failover: SIGKILL the primary, promote the standby {} ms later",
                    pause.as_millis()
                );
                out_for(cluster.kill_primary(), pause, cluster.promote(BACK_BOUND)).await
            }
            (server, servers) => Err(anyhow::anyhow!(
                "no {server} fault on {}",
                match servers {
                    Servers::Local(_) => "this machine's servers",
                    Servers::Cluster(_) => "a cluster",
                }
            )),
        };
        if let Err(error) = outcome {
            return self.failed(restart, servers, error).await;
        }
        restart.back_after = Some(issued.elapsed());
        event!(
            "{server} answers again after {:.1} s; posting a probe checkout",
            issued.elapsed().as_secs_f64()
        );
        self.probe(&mut restart, at, issued, Instant::now()).await;
        restart
    }

    /// A fault that could not be carried out: said, recorded, and every
    /// server started again.
    async fn failed(
        &self,
        mut restart: Restart,
        servers: &Servers,
        error: anyhow::Error,
    ) -> Restart {
        let server = restart.server;
        event!("{server} fault failed: {error:#}");
        restart.failure = Some(format!("{error:#}"));
        for note in servers.ensure_up().await {
            event!("{note}");
        }
        restart
    }

    /// Posts a probe checkout and waits (at most [`PROBE_BOUND`] from
    /// `from`) for it to complete; the recovery time counts from `issued`,
    /// the fault's command.
    async fn probe(&self, restart: &mut Restart, at: usize, issued: Instant, from: Instant) {
        let server = restart.server;
        let probe = workload::probe(&self.run_id, &server.label(at), &self.methods);
        let id = match self.api.post_checkout(&probe, 0, PROBE_BOUND).await {
            Posted::Accepted { id, .. } => id,
            Posted::Refused { last_error, .. } => {
                event!("{server}: the probe was never accepted: {last_error}");
                restart.failure = Some(format!("the probe was never accepted: {last_error}"));
                return;
            }
            Posted::Invalid { status, body } => {
                restart.failure = Some(format!("the probe was refused with {status}: {body}"));
                return;
            }
        };
        restart.probe = Some(id);
        let left = PROBE_BOUND.saturating_sub(from.elapsed());
        match self.api.wait_final(id, 0, left).await {
            Some(view) if view.status == "completed" => {
                restart.recovered_after = Some(issued.elapsed());
                event!(
                    "{server}: probe {id} completed; recovered {:.1} s after the fault's command",
                    issued.elapsed().as_secs_f64()
                );
            }
            Some(view) if view.is_final() => {
                event!("{server}: the probe {id} ended {}", view.label());
                restart.failure = Some(format!("the probe {id} ended {}", view.label()));
            }
            _ => {
                event!("{server}: the probe {id} did not complete within {PROBE_BOUND:?}");
                restart.failure = Some(format!(
                    "the probe {id} was not final {PROBE_BOUND:?} after the fault"
                ));
            }
        }
    }
}

/// `down`, `pause`, then `up`: a server out for a while, as in a node
/// restart or a failover. `up` is only started once the pause is over.
async fn out_for(
    down: impl Future<Output = anyhow::Result<()>>,
    pause: Duration,
    up: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    down.await?;
    tokio::time::sleep(pause).await;
    up.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_run_kills_every_node_one_at_a_time_and_fails_over_once() {
        for seconds in [60, 150, 300, 600, 3600] {
            let span = Duration::from_secs(seconds);
            let mut rng = StdRng::seed_from_u64(seconds);
            let schedule = cluster_schedule(span, 3, &mut rng);
            let failovers = schedule
                .iter()
                .filter(|(_, s)| *s == Server::PostgresFailover)
                .count();
            assert_eq!(failovers, 1, "{seconds} s: {schedule:?}");
            let nodes: Vec<usize> = schedule
                .iter()
                .filter_map(|(_, s)| match s {
                    Server::RabbitNode(n) => Some(*n),
                    _ => None,
                })
                .collect();
            assert!(nodes.len() >= 3, "{seconds} s: {schedule:?}");
            for n in 1..=3 {
                assert!(nodes.contains(&n), "{seconds} s: node {n} never killed");
            }
            assert!(
                nodes.windows(2).all(|pair| pair[0] != pair[1]),
                "{seconds} s: one node killed twice running: {nodes:?}"
            );
            // In order, all within the span, the failover not first nor last.
            assert!(schedule.windows(2).all(|pair| pair[0].0 < pair[1].0));
            assert!(schedule.iter().all(|(due, _)| *due < span));
            assert!(!matches!(schedule[0].1, Server::PostgresFailover));
            assert!(!matches!(
                schedule.last().unwrap().1,
                Server::PostgresFailover
            ));
        }
    }
}
