//! The cluster tests' servers: a three-node RabbitMQ cluster and a
//! PostgreSQL primary with a synchronous standby, both from
//! `scripts/cluster` on their own loopback ports. A test that kills nodes
//! has its servers to itself: it holds a lock file for them (across test
//! binaries and worktrees too), and gives them back whole.

use std::fs::File;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster");

/// Runs `scripts/cluster ARGS` and returns what it printed.
fn script(args: &[&str]) -> String {
    let output = Command::new(SCRIPT)
        .args(args)
        .output()
        .expect("scripts/cluster runs");
    assert!(
        output.status.success(),
        "scripts/cluster {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn run(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        script(&args)
    })
    .await
    .unwrap()
}

/// Waits for the lock file `name` and holds it until dropped.
async fn exclusive(name: &str) -> File {
    let path = std::env::temp_dir().join(format!("checkout-cluster-{name}.lock"));
    tokio::task::spawn_blocking(move || {
        let file = File::create(&path).expect("create the lock file");
        file.lock().expect("lock the cluster");
        file
    })
    .await
    .unwrap()
}

/// The three RabbitMQ nodes, all up, for this test alone.
pub struct RabbitCluster {
    /// Every node's URL, comma-separated, as `AMQP_URL` takes them.
    pub amqp_url: String,
    _lock: File,
}

impl RabbitCluster {
    pub async fn start() -> RabbitCluster {
        let lock = exclusive("rabbitmq").await;
        // Starts what is not running yet: the cluster outlives one test.
        run(&["start"]).await;
        RabbitCluster {
            amqp_url: run(&["url"]).await,
            _lock: lock,
        }
    }

    /// SIGKILLs node `n` (1 to 3).
    pub async fn kill(&self, n: u8) {
        run(&["kill", &n.to_string()]).await;
    }

    pub async fn start_node(&self, n: u8) {
        run(&["start-node", &n.to_string()]).await;
    }

    /// The node that leads quorum queue `queue`.
    pub async fn leader(&self, queue: &str) -> u8 {
        run(&["leader", queue]).await.parse().unwrap()
    }

    /// Node `n`'s AMQP address, as `/readyz` names it.
    pub fn address(n: u8) -> String {
        format!("127.0.0.1:{}", 5680 + u16::from(n))
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        // Whatever the test killed comes back before the next one starts.
        script(&["start"]);
    }
}

/// A PostgreSQL primary on 5441 and its synchronous standby on 5442, fresh
/// for this test alone, removed afterwards.
pub struct PostgresPair {
    /// Both hosts, libpq style: the primary is whichever is not a standby.
    pub admin_url: String,
    _lock: File,
}

impl PostgresPair {
    pub async fn start() -> PostgresPair {
        let lock = exclusive("postgres").await;
        run(&["pg-stop"]).await;
        run(&["pg-start"]).await;
        PostgresPair {
            admin_url: "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/postgres\
                        ?target_session_attrs=read-write"
                .to_owned(),
            _lock: lock,
        }
    }

    pub async fn kill_primary(&self) {
        run(&["pg-kill-primary"]).await;
    }

    pub async fn promote(&self) {
        run(&["pg-promote"]).await;
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        script(&["pg-stop"]);
    }
}
