//! Bringing the system up for a run: which processes, with what
//! configuration, and the data they need (catalogue and tax rates).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::api::Api;
use crate::environment::{Environment, ServiceUsers};
use crate::processes::Spec;
use crate::workload::STEP_DEADLINE_MS;

/// Attempts per step before a saga is parked: with the short deadline, a
/// step survives about half a minute of a missing worker or broker, far more
/// than any single fault of the run, so a parked saga is a finding.
const STEP_MAX_ATTEMPTS: u32 = 8;

/// Database sessions per process: eight processes share the server with
/// whatever else runs on it (max_connections is often 100).
const ORCHESTRATOR_POOL: u32 = 8;
const WORKER_POOL: u32 = 4;

/// Two free ports for the orchestrators. Another program could take one
/// before the orchestrator binds it; the orchestrator would then exit and be
/// reported.
pub fn free_ports() -> anyhow::Result<[u16; 2]> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

/// Workers first, each twice, then the two orchestrators: the order they are
/// started in, as `scripts/run` does (workers migrate and declare queues).
/// `client_key`: the chaos driver's checkout client key (an older release,
/// during an upgrade run, ignores it and serves checkouts without a key).
/// `users`: each service's own RabbitMQ user, and the orchestrators take
/// replies only from the workers' ones; without, all connect as AMQP_URL's.
pub fn specs(
    bin_dir: &Path,
    env: &Environment,
    ports: [u16; 2],
    admin_token: &str,
    client_key: &str,
    users: Option<&ServiceUsers>,
    stripe: Option<&crate::stripe::StripeRun>,
) -> Vec<Spec> {
    let common = |service: &str, pool: u32| {
        let amqp_url = users
            .and_then(|users| users.url(service))
            .unwrap_or(env.amqp_url());
        let mut vars = vec![
            ("DATABASE_URL".to_owned(), env.database_url(service)),
            ("AMQP_URL".to_owned(), amqp_url.to_owned()),
            ("AMQP_PREFIX".to_owned(), env.amqp_prefix.clone()),
            ("DATABASE_POOL_SIZE".to_owned(), pool.to_string()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            // The checkouts pick the simulator's behaviours (a test double,
            // off unless asked for); other services ignore it, and so do
            // payment binaries older than the switch.
            ("PAYMENT_PROVIDER".to_owned(), "simulator".to_owned()),
        ];
        if let Some(url) = env.management_url() {
            vars.push(("RABBITMQ_MANAGEMENT_URL".to_owned(), url.to_owned()));
        }
        vars
    };
    let mut specs = Vec::new();
    for worker in ["inventory", "tax", "payment"] {
        for copy in ["a", "b"] {
            specs.push(Spec {
                name: format!("{worker}-{copy}"),
                binary: bin_dir.join(worker),
                env: match (worker, stripe) {
                    ("payment", Some(stripe)) => {
                        let mut env = common(worker, WORKER_POOL);
                        env.extend(stripe.payment_env());
                        env
                    }
                    _ => common(worker, WORKER_POOL),
                },
            });
        }
    }
    for (copy, port) in ["a", "b"].into_iter().zip(ports) {
        let mut env = common("orchestrator", ORCHESTRATOR_POOL);
        env.extend([
            ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            ("ADMIN_TOKENS".to_owned(), format!("chaos={admin_token}")),
            (
                "CHECKOUT_CLIENT_KEYS".to_owned(),
                format!("chaos={client_key}"),
            ),
            // The workload is the test, not a client's limits.
            ("CLIENT_RATE_PER_SECOND".to_owned(), "1000000".to_owned()),
            ("CLIENT_RATE_BURST".to_owned(), "1000000".to_owned()),
            ("CLIENT_MAX_IN_FLIGHT".to_owned(), "1000000".to_owned()),
            ("STEP_DEADLINE_MS".to_owned(), STEP_DEADLINE_MS.to_string()),
            (
                "WORKER_USERS".to_owned(),
                users.map(|u| u.worker_users.clone()).unwrap_or_default(),
            ),
            (
                "STEP_MAX_ATTEMPTS".to_owned(),
                STEP_MAX_ATTEMPTS.to_string(),
            ),
        ]);
        specs.push(Spec {
            name: format!("orchestrator-{copy}"),
            binary: bin_dir.join("orchestrator"),
            env,
        });
    }
    specs
}

/// Waits until every orchestrator answers /readyz.
pub async fn wait_ready(api: &Api, instances: usize, bound: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    for instance in 0..instances {
        while !api.ready(instance).await {
            if Instant::now() >= deadline {
                bail!("{} was not ready within {bound:?}", api.base(instance));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// `SERVICE import FILE` against the run's database, retried while the
/// workers are still migrating it (exit status 2 is bad input: no retry).
pub async fn import(
    bin_dir: &Path,
    env: &Environment,
    service: &str,
    file: &Path,
    log: PathBuf,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = env
            .run_service(bin_dir.join(service), service, "import", &[file], &log)
            .await?;
        if status.success() {
            return Ok(());
        }
        if status.code() == Some(2) || Instant::now() >= deadline {
            bail!(
                "`{service} import {}` failed ({status}); see {}",
                file.display(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
