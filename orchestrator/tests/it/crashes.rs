//! The real binaries, killed: SIGKILL at any moment loses nothing (outbox,
//! inbox and durable timers carry on after a restart); SIGTERM finishes
//! what is in flight and exits 0.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use saga_testkit::{self as testing, ServiceCommand, TestDatabase, TopologyGuard};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::system::{order, seeded_databases};

pub const PATIENCE: Duration = Duration::from_secs(60);

/// The directory holding this build's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// The orchestrator's environment for a charge that gets one attempt of
/// one second and then compensates: a slow charge misses its deadline and
/// is refunded while it may still be at the provider.
pub fn charge_compensated_after_one_second() -> Vec<(&'static str, String)> {
    vec![
        ("STEP_PAYMENT_CHARGE_MAX_ATTEMPTS", "1".to_owned()),
        ("STEP_PAYMENT_CHARGE_DEADLINE_MS", "1000".to_owned()),
        ("STEP_PAYMENT_CHARGE_ON_EXHAUSTED", "compensate".to_owned()),
    ]
}

/// The four services as real processes, each restartable.
pub struct Deployment {
    pub databases: HashMap<&'static str, TestDatabase>,
    prefix: String,
    port: u16,
    pub processes: HashMap<&'static str, Child>,
    /// Variables one service gets on top of the common ones, at its next spawn.
    pub env: HashMap<&'static str, Vec<(&'static str, String)>>,
    http: reqwest::Client,
    _topology: TopologyGuard,
}

const SERVICES: [&str; 4] = ["inventory", "tax", "payment", "orchestrator"];

impl Deployment {
    pub async fn start() -> Deployment {
        Self::start_with(HashMap::new()).await
    }

    pub async fn start_with(env: HashMap<&'static str, Vec<(&'static str, String)>>) -> Deployment {
        testing::init_tracing();
        let prefix = testing::random_prefix();
        let topology = TopologyGuard::new(&prefix);
        let databases = seeded_databases().await;
        let mut deployment = Deployment {
            databases,
            prefix,
            port: testing::free_port(),
            processes: HashMap::new(),
            env,
            http: crate::system::http_with_key(crate::system::CLIENT_KEY),
            _topology: topology,
        };
        for service in SERVICES {
            deployment.spawn(service);
        }
        deployment.wait_ready().await;
        deployment
    }

    pub fn spawn(&mut self, service: &'static str) {
        let child = Command::new(bin_dir().join(service))
            .env("DATABASE_URL", &self.databases[service].url)
            .env("AMQP_URL", testing::amqp_url())
            .env("AMQP_PREFIX", &self.prefix)
            .envs(crate::system::client_env())
            .env("HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            // Every payment worker of a test runs the simulator (a test double).
            .env("PAYMENT_PROVIDER", "simulator")
            .env("SHUTDOWN_GRACE_SECONDS", "20")
            .env("DATABASE_POOL_SIZE", "4")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(
                self.env
                    .get(service)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, v)),
            )
            .spawn_service(testing::service_log())
            .unwrap_or_else(|e| panic!("{service} starts: {e}"));
        self.processes.insert(service, child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn wait_ready(&self) {
        testing::eventually("the orchestrator ready", PATIENCE, || async {
            let response = self.http.get(self.url("/readyz")).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    /// SIGKILL, then start it again.
    async fn kill_and_restart(&mut self, service: &'static str) {
        let mut child = self.processes.remove(service).unwrap();
        child.kill().await.unwrap();
        self.spawn(service);
    }

    /// SIGTERM; how it exited and how long it took.
    async fn terminate(&mut self, service: &'static str) -> (ExitStatus, Duration) {
        let mut child = self.processes.remove(service).unwrap();
        let started = Instant::now();
        let pid = child.id().expect("still running") as i32;
        // SAFETY: kill(2) on a child we own; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{service} did not exit after SIGTERM"))
            .unwrap();
        (status, started.elapsed())
    }

    pub async fn place(&self, body: &Value) -> String {
        self.place_with_headers(body, &[]).await
    }

    pub async fn place_with_headers(&self, body: &Value, headers: &[(&str, &str)]) -> String {
        let mut request = self.http.post(self.url("/v1/checkouts")).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 202);
        let created: Value = response.json().await.unwrap();
        created["checkout_id"].as_str().unwrap().to_owned()
    }

    /// Waits until every saga is final, then returns the count by status.
    pub async fn settle(&self) -> HashMap<String, i64> {
        let pool = &self.databases["orchestrator"].pool;
        testing::eventually("every saga final", PATIENCE, || async {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sagas WHERE status IN ('running', 'compensating')",
            )
            .fetch_one(pool)
            .await
            .ok()?;
            (open == 0).then_some(())
        })
        .await;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
                .fetch_all(pool)
                .await
                .unwrap();
        rows.into_iter().collect()
    }

    /// (status, charged, refunded) of every payment.
    pub async fn payments(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as("SELECT status, amount_cents, refunded_cents FROM payments")
            .fetch_all(&self.databases["payment"].pool)
            .await
            .unwrap()
    }

    /// The checkout `id` as its client sees it.
    pub async fn checkout(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/v1/checkouts/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Units of `sku` available to sell.
    pub async fn available(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.databases["inventory"].pool)
            .await
            .unwrap()
    }

    /// The auditor's report, the provider's side read from `stripe` when
    /// given (the simulator's ledger otherwise).
    pub async fn audit(&self, stripe: Option<&auditor::stripe::StripeAudit>) -> auditor::Report {
        let sources = auditor::Sources {
            orchestrator: self.databases["orchestrator"].pool.clone(),
            inventory: self.databases["inventory"].pool.clone(),
            payment: self.databases["payment"].pool.clone(),
            deadline_grace: Duration::from_secs(30),
        };
        auditor::audit_with(&sources, stripe).await.unwrap()
    }

    pub async fn stop(self) {
        self.stop_audited(None).await;
    }

    /// Audits (clean, or the test fails), then stops every service with
    /// SIGTERM, each of which must exit 0.
    pub async fn stop_audited(mut self, stripe: Option<&auditor::stripe::StripeAudit>) {
        let report = self.audit(stripe).await;
        assert!(report.is_clean(), "{report}");
        for service in SERVICES {
            if self.processes.contains_key(service) {
                let (status, _) = self.terminate(service).await;
                assert!(status.success(), "{service} exited with {status}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_any_service_mid_flight_loses_and_doubles_nothing() {
    let mut deployment = Deployment::start().await;
    let mut ids = Vec::new();
    let approve = order(&[("TSHIRT", 1)], "sim_approve");
    let slow = order(&[("TSHIRT", 1)], "sim_slow_300");
    for service in SERVICES {
        // Work in flight everywhere, then the kill.
        for i in 0..8 {
            let body = if i % 2 == 0 { &approve } else { &slow };
            ids.push(deployment.place(body).await);
        }
        deployment.kill_and_restart(service).await;
        deployment.wait_ready().await;
    }
    for _ in 0..4 {
        ids.push(deployment.place(&approve).await);
    }
    let statuses = deployment.settle().await;
    assert_eq!(
        statuses.get("completed").copied(),
        Some(ids.len() as i64),
        "{statuses:?}"
    );
    let payments = deployment.payments().await;
    assert_eq!(payments.len(), ids.len());
    assert!(
        payments
            .iter()
            .all(|p| *p == ("charged".to_owned(), 2_145, 0)),
        "one charge each: {payments:?}"
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::int8 FROM reservation_lines l
         JOIN reservations r USING (saga_id) WHERE r.status = 'active'",
    )
    .fetch_one(&deployment.databases["inventory"].pool)
    .await
    .unwrap();
    assert_eq!(held, ids.len() as i64);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_charge_in_flight_then_exits_0() {
    let mut deployment = Deployment::start().await;
    let id = deployment
        .place(&order(&[("TSHIRT", 1)], "sim_slow_1500"))
        .await;
    // The charge is in flight once its intent is committed: the worker
    // then waits on the (slow) provider holding no connection.
    let payments = &deployment.databases["payment"].pool;
    testing::eventually("the charge in flight", PATIENCE, || async {
        let charging: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'charging'")
                .fetch_one(payments)
                .await
                .unwrap();
        (charging > 0).then_some(())
    })
    .await;
    let (status, took) = deployment.terminate("payment").await;
    assert!(status.success(), "payment exited with {status}");
    assert!(
        took < Duration::from_secs(20),
        "within the grace period: {took:?}"
    );
    // Its reply went out before it left: no payment worker runs now, yet
    // the charge is answered.
    let pool = &deployment.databases["orchestrator"].pool;
    testing::eventually("the charge answered by the stopped worker", PATIENCE, || async {
        let answered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM saga_events WHERE saga_id = $1::uuid AND step = 'payment.charge' AND event = 'ok'",
        )
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
        (answered == 1).then_some(())
    })
    .await;
    let charged = deployment.payments().await;
    assert_eq!(charged, vec![("charged".to_owned(), 2_145, 0)]);
    // A checkout placed now waits for a payment worker, then completes.
    let next = deployment
        .place(&order(&[("TSHIRT", 1)], "sim_approve"))
        .await;
    deployment.spawn("payment");
    let statuses = deployment.settle().await;
    assert_eq!(statuses.get("completed"), Some(&2), "{statuses:?} {next}");
    deployment.stop().await;
}
