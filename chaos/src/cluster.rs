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
