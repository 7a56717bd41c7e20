//! The servers of a `--cluster` run: three RabbitMQ nodes and a PostgreSQL
//! primary with a synchronous standby, all from `scripts/cluster` on their
//! own loopback ports. Faults here are a node SIGKILLed (one at a time) and
//! started again, and one failover: the primary SIGKILLed and the standby
//! promoted. The machine's own PostgreSQL and RabbitMQ are never touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use saga_shared::database::primary_connection;
use sqlx::Connection;

use crate::services::{rabbitmq_answers, run_logged, wait_until};

#[derive(Debug, Clone)]
pub struct Cluster {
    script: PathBuf,
    /// Each node's URL, in node order (node 1 first).
    nodes: Vec<String>,
    pg_admin_url: String,
    log: PathBuf,
}

impl Cluster {
    pub fn new(script: &Path, amqp_url: &str, pg_admin_url: &str, log: &Path) -> Cluster {
        Cluster {
            script: script.to_path_buf(),
            nodes: amqp_url.split(',').map(str::to_owned).collect(),
            pg_admin_url: pg_admin_url.to_owned(),
            log: log.to_path_buf(),
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// SIGKILLs node `n` (from 1) and returns once it is gone.
    pub async fn kill_node(&self, n: usize) -> anyhow::Result<()> {
        self.script(&["kill", &n.to_string()]).await
    }

    /// Starts node `n` again (it rejoins the cluster by itself) and waits
    /// until it accepts AMQP connections.
    pub async fn start_node(&self, n: usize, bound: Duration) -> anyhow::Result<()> {
        self.script(&["start-node", &n.to_string()]).await?;
        let url = &self.nodes[n - 1];
        wait_until(&format!("RabbitMQ node {n}"), bound, || {
            rabbitmq_answers(url)
        })
        .await
        .map_err(|error| error.context(self.node_logs_kept()))
    }

    /// Waits until node `n` may be lost without a quorum queue losing its
    /// majority: every node back in the cluster, and no queue still waiting
    /// for a restarted member to catch up. Killing before that would be two
    /// faults at once, which no quorum queue is built to survive, and the
    /// run measures one at a time. A restarted node has usually caught up
    /// well before the next kill is due; this holds the kill when it has not.
    pub async fn wait_healed(&self, n: usize, bound: Duration) -> anyhow::Result<()> {
        let arg = n.to_string();
        wait_until(
            &format!("the cluster (every node in it, none of node {n}'s queues behind)"),
            bound,
            || async { self.script(&["healed", &arg]).await.is_ok() },
        )
        .await
        .map_err(|error| error.context(self.node_logs_kept()))
    }

    /// Copies the end of each node's own log next to the run's, for a
    /// failure to be read after the cluster is removed; says where.
    pub fn node_logs_kept(&self) -> String {
        let state = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| "/tmp/checkout-cluster".into());
        let mut kept = String::new();
        for n in 1..=self.nodes.len() {
            let name = format!("rabbit-c{n}");
            let log = Path::new(&state)
                .join(&name)
                .join("log")
                .join(format!("{name}@localhost.log"));
            if let Ok(text) = std::fs::read_to_string(&log) {
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                kept.push_str(&format!(
                    "==== {} (last {} lines)\n",
                    log.display(),
                    tail.len()
                ));
                for line in tail.into_iter().rev() {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        let copy = self.log.with_file_name("rabbitmq-nodes.log");
        match std::fs::write(&copy, kept) {
            Ok(()) => format!("the nodes' logs end in {}", copy.display()),
            Err(error) => format!("cannot keep the nodes' logs: {error}"),
        }
    }

    /// SIGKILLs whichever PostgreSQL member is the primary.
    pub async fn kill_primary(&self) -> anyhow::Result<()> {
        self.script(&["pg-kill-primary"]).await
    }

    /// Promotes the standby (what an HA manager or an operator does once
    /// the primary is found dead) and waits until it takes writes.
    pub async fn promote(&self, bound: Duration) -> anyhow::Result<()> {
        self.script(&["pg-promote"]).await?;
        wait_until("the promoted PostgreSQL", bound, || self.primary_answers()).await
    }

    async fn primary_answers(&self) -> bool {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let (_, connection) = primary_connection(&self.pg_admin_url).await?;
            connection.close().await
        })
        .await;
        matches!(attempt, Ok(Ok(())))
    }

    /// Whatever state the run left it in: every node running, and a
    /// primary. Returns what it had to do.
    pub async fn ensure_up(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (at, url) in self.nodes.iter().enumerate() {
            if rabbitmq_answers(url).await {
                continue;
            }
            let n = at + 1;
            notes.push(format!("RabbitMQ node {n} was down: starting it"));
            if let Err(error) = self.start_node(n, Duration::from_secs(120)).await {
                notes.push(format!("  {error:#}"));
            }
        }
        if !self.primary_answers().await {
            notes.push("no PostgreSQL primary: promoting the standby".to_owned());
            if let Err(error) = self.promote(Duration::from_secs(60)).await {
                notes.push(format!("  {error:#}"));
            }
        }
        notes
    }

    async fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        run_logged(&self.script.to_string_lossy(), args, &self.log).await
    }
}
