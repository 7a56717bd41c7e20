//! The faults: every 2-5 s a random service process is SIGKILLed and started
//! again after a short pause; once a third into the chaos RabbitMQ is
//! restarted, and once two thirds in PostgreSQL, each followed by a probe
//! checkout that measures how long the system took to serve again.
//!
//! Faults are injected one at a time (no kill during a server restart), so
//! a recovery time measures that restart alone. The schedule is drawn from
//! the seed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{Api, Posted};
use crate::events::event;
use crate::processes::Fleet;
use crate::services::Services;
use crate::workload;

/// How long a restarted server may take to answer again.
const BACK_BOUND: Duration = Duration::from_secs(90);
/// How long the probe may take to complete once the server answers: past
/// this the system is reported as not recovered.
const PROBE_BOUND: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    RabbitMq,
    Postgres,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Server::RabbitMq => "RabbitMQ",
            Server::Postgres => "PostgreSQL",
        })
    }
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
    pub services: Option<Services>,
    pub run_id: String,
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
        let mut due: Vec<(Duration, Server)> = match self.services {
            Some(_) => vec![
                (self.span / 3, Server::RabbitMq),
                (self.span * 2 / 3, Server::Postgres),
            ],
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
                    restarts.push(self.restart(server, &mut rng).await);
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
    /// checkout and waits for it to complete.
    async fn restart(&self, server: Server, rng: &mut StdRng) -> Restart {
        let services = self
            .services
            .as_ref()
            .expect("restarts are only due with services");
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
        let outcome = match server {
            Server::RabbitMq => {
                // Down for a few seconds on top of the stop and the start,
                // as a node restart would be.
                let down = Duration::from_millis(rng.random_range(2000..=4000));
                event!(
                    "RabbitMQ: rabbitmqctl stop_app (start_app in {} ms after it)",
                    down.as_millis()
                );
                async {
                    services.stop_rabbitmq().await?;
                    tokio::time::sleep(down).await;
                    services.start_rabbitmq().await?;
                    services.wait_rabbitmq(BACK_BOUND).await
                }
                .await
            }
            Server::Postgres => {
                event!("PostgreSQL: pg_ctlcluster restart -m fast");
                async {
                    services.restart_postgres().await?;
                    services.wait_postgres(BACK_BOUND).await
                }
                .await
            }
        };
        if let Err(error) = outcome {
            event!("{server} restart failed: {error:#}");
            restart.failure = Some(format!("{error:#}"));
            for note in services.ensure_up().await {
                event!("{note}");
            }
            return restart;
        }
        restart.back_after = Some(issued.elapsed());
        let back = Instant::now();
        event!(
            "{server} answers again after {:.1} s; posting a probe checkout",
            issued.elapsed().as_secs_f64()
        );

        let label = match server {
            Server::RabbitMq => "rabbitmq",
            Server::Postgres => "postgres",
        };
        let probe = workload::probe(&self.run_id, label);
        let id = match self.api.post_checkout(&probe, 0, PROBE_BOUND).await {
            Posted::Accepted { id, .. } => id,
            Posted::Refused { last_error, .. } => {
                event!("{server}: the probe was never accepted: {last_error}");
                restart.failure = Some(format!("the probe was never accepted: {last_error}"));
                return restart;
            }
            Posted::Invalid { status, body } => {
                restart.failure = Some(format!("the probe was refused with {status}: {body}"));
                return restart;
            }
        };
        restart.probe = Some(id);
        let left = PROBE_BOUND.saturating_sub(back.elapsed());
        match self.api.wait_final(id, 0, left).await {
            Some(view) if view.status == "completed" => {
                restart.recovered_after = Some(issued.elapsed());
                event!(
                    "{server}: probe {id} completed; recovered {:.1} s after the restart command",
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
                    "the probe {id} was not final {PROBE_BOUND:?} after the server answered"
                ));
            }
        }
        restart
    }
}
