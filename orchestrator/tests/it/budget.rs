//! The connection budget (README, "Connection budget"): with their default
//! pools, two orchestrators and two copies of each worker stay within
//! processes x pool through a burst of checkouts, and operators still get
//! in afterwards; a process whose pool does not fit the server says so at
//! start; a request that finds no free connection is told to come back
//! (`overloaded`), not that the database is down.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_testkit::metrics::scrape;
use saga_testkit::{self as testing, ServiceCommand, TestDatabase, TopologyGuard};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::crashes::bin_dir;
use crate::system::{order, seeded_databases};

/// The burst of 600 checkouts to complete.
const BURST_PATIENCE: Duration = Duration::from_secs(360);
const PATIENCE: Duration = Duration::from_secs(180);

/// This test's own sessions carry this name, so that sampling the
/// services' connections leaves them out.
const TEST_APPLICATION: &str = "budget-test";

/// Messages each process handles at once during the burst: small, so that
/// the whole fleet fits on a PostgreSQL server other tests share.
const PREFETCH: i64 = 2;

/// The README's budget with default pools: a worker's pool is its
/// concurrency (PREFETCH, at most 8); an orchestrator's is that plus its
/// LISTEN connection, the relay and the deadline timer.
const WORKER_CONNECTIONS: i64 = if PREFETCH < 8 { PREFETCH } else { 8 };
const ORCHESTRATOR_CONNECTIONS: i64 = WORKER_CONNECTIONS + 3;

const WORKERS: [&str; 3] = ["inventory", "tax", "payment"];

/// A pool on `url` named as this test's, so it is not counted.
async fn test_pool(url: &str) -> PgPool {
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.application_name(TEST_APPLICATION))
        .await
        .unwrap()
}

/// A service binary on `url` under `prefix`; its own settings beside
/// `env`, and no `DATABASE_POOL_SIZE` from the caller's environment: the
/// defaults are what is on trial.
fn spawn(service: &str, url: &str, prefix: &str, env: &[(&str, String)]) -> Child {
    Command::new(bin_dir().join(service))
        .env_remove("DATABASE_POOL_SIZE")
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", url)
        .env("AMQP_URL", testing::amqp_url())
        .env("AMQP_PREFIX", prefix)
        .envs(crate::system::client_env())
        .env("LOG_FORMAT", "json")
        // Every payment worker of a test runs the simulator (a test double).
        .env("PAYMENT_PROVIDER", "simulator")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .spawn_service(testing::service_log())
        .unwrap_or_else(|e| panic!("{service} starts: {e}"))
}

async fn terminate(mut child: Child, what: &str) {
    let pid = child.id().expect("still running") as i32;
    // SAFETY: kill(2) on a child we own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit after SIGTERM"))
        .unwrap();
    assert!(status.success(), "{what} exited with {status}");
}

/// The most connections the services held on each of the test's databases,
/// as `pg_stat_activity` showed them, sampled until stopped. A count is
/// taken as held when two samples in a row show it: a backend whose pool
/// has just closed it lingers there for a moment while it exits.
struct Sampler {
    peaks: Arc<Mutex<HashMap<String, i64>>>,
    samples: Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(databases: Vec<String>) -> Sampler {
        let admin = test_pool(&testing::admin_database_url()).await;
        let peaks = Arc::new(Mutex::new(HashMap::new()));
        let samples = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (peaks, samples, stop) = (peaks.clone(), samples.clone(), stop.clone());
            async move {
                let mut previous: HashMap<String, i64> = HashMap::new();
                while !stop.is_cancelled() {
                    let rows: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT datname::text, count(*) FROM pg_stat_activity
                         WHERE datname = ANY($1) AND application_name <> $2
                         GROUP BY datname",
                    )
                    .bind(&databases)
                    .bind(TEST_APPLICATION)
                    .fetch_all(&admin)
                    .await
                    .unwrap();
                    let mut peaks = peaks.lock().await;
                    let total: i64 = rows.iter().map(|(_, n)| n).sum();
                    let now: HashMap<String, i64> = rows
                        .into_iter()
                        .chain([("total".to_owned(), total)])
                        .collect();
                    for (name, n) in &now {
                        let held = (*n).min(previous.get(name).copied().unwrap_or(0));
                        let peak = peaks.entry(name.clone()).or_insert(0);
                        *peak = (*peak).max(held);
                    }
                    previous = now;
                    samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Sampler {
            peaks,
            samples,
            stop,
            task,
        }
    }

    async fn finish(self) -> (HashMap<String, i64>, u64) {
        self.stop.cancel();
        self.task.await.unwrap();
        let peaks = self.peaks.lock().await.clone();
        (
            peaks,
            self.samples.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Services' connections to `database` now.
async fn service_connections(admin: &PgPool, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2",
    )
    .bind(database)
    .bind(TEST_APPLICATION)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Posts checkout `n` until it is accepted, as a storefront would: the same
/// Idempotency-Key each time, the other orchestrator after a failure, after
/// `Retry-After` when the answer was busy.
async fn place(http: &reqwest::Client, ports: [u16; 2], n: usize, body: &Value) -> (String, u32) {
    let deadline = Instant::now() + PATIENCE;
    let mut refusals = 0;
    for attempt in 0.. {
        let port = ports[(n + attempt) % 2];
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v1/checkouts"))
            .header("idempotency-key", format!("burst-{n}"))
            .json(body)
            .send()
            .await;
        let wait = match sent {
            Ok(response) if response.status().as_u16() == 202 => {
                let created: Value = response.json().await.unwrap();
                return (
                    created["checkout_id"].as_str().unwrap().to_owned(),
                    refusals,
                );
            }
            Ok(response) if response.status().as_u16() == 503 => {
                refusals += 1;
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(Duration::from_millis(200), Duration::from_secs)
            }
            Ok(response) => {
                let status = response.status();
                panic!("checkout {n}: {status} {}", response.text().await.unwrap());
            }
            Err(_) => Duration::from_millis(200),
        };
        assert!(Instant::now() < deadline, "checkout {n} never accepted");
        tokio::time::sleep(wait).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_stay_within_the_connection_budget_through_a_burst_and_operators_get_in() {
    testing::init_tracing();
    let prefix = testing::random_prefix();
    let _topology = TopologyGuard::new(&prefix);
    let databases = seeded_databases().await;
    sqlx::query(
        "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency, tax_category)
         VALUES ('BULK', 'Bulk', 100000, 100000, 1000, 'USD', 'general')",
    )
    .execute(&databases["inventory"].pool)
    .await
    .unwrap();
    // From here on only the services (and this test's named sessions) use
    // the databases.
    for db in databases.values() {
        db.pool.close().await;
    }
    let names: Vec<String> = databases.values().map(|db| db.name.clone()).collect();
    let admin = test_pool(&testing::admin_database_url()).await;
    for name in &names {
        // A connection on its way back to a pool as it closes can outlive
        // it: end what the seeding left.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name <> $2",
        )
        .bind(name)
        .bind(TEST_APPLICATION)
        .execute(&admin)
        .await
        .unwrap();
        testing::eventually("the seeding sessions gone", PATIENCE, || async {
            (service_connections(&admin, name).await == 0).then_some(())
        })
        .await;
    }
    let sampler = Sampler::start(names).await;

    let prefetch = PREFETCH.to_string();
    let mut processes = Vec::new();
    for worker in WORKERS {
        for copy in ["a", "b"] {
            let env = [("PREFETCH", prefetch.clone())];
            let child = spawn(worker, &databases[worker].url, &prefix, &env);
            processes.push((format!("{worker}-{copy}"), child));
        }
    }
    let ports = [testing::free_port(), testing::free_port()];
    for (copy, port) in ["a", "b"].into_iter().zip(ports) {
        let env = [
            ("PREFETCH", prefetch.clone()),
            ("HTTP_ADDR", format!("127.0.0.1:{port}")),
        ];
        let child = spawn(
            "orchestrator",
            &databases["orchestrator"].url,
            &prefix,
            &env,
        );
        processes.push((format!("orchestrator-{copy}"), child));
    }
    let http = reqwest::Client::builder()
        .default_headers(crate::system::key_headers(crate::system::CLIENT_KEY))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for port in ports {
        testing::eventually("both orchestrators ready", PATIENCE, || async {
            let response = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    // The burst: every checkout posted at once, half to each orchestrator.
    let body = order(&[("BULK", 1)], "sim_approve");
    let placed = futures::future::join_all((0..600).map(|n| place(&http, ports, n, &body))).await;
    let refusals: u32 = placed.iter().map(|(_, r)| r).sum();
    let orchestrator_db = test_pool(&databases["orchestrator"].url).await;
    // Debug builds of eight processes, beside the rest of the suite on two
    // cores: the burst alone takes about 20 s, and has taken over 180 s on
    // a machine also compiling.
    let completed = testing::within(BURST_PATIENCE, || async {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status = 'completed'")
                .fetch_one(&orchestrator_db)
                .await
                .unwrap();
        (completed == 600).then_some(())
    })
    .await;
    if completed.is_none() {
        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status ORDER BY status")
                .fetch_all(&orchestrator_db)
                .await
                .unwrap();
        panic!("600 checkouts not completed after {BURST_PATIENCE:?}: by status {statuses:?}");
    }
    let (peaks, samples) = sampler.finish().await;

    let peak = |service: &str| peaks.get(&databases[service].name).copied().unwrap_or(0);
    let budget = 2 * ORCHESTRATOR_CONNECTIONS + 6 * WORKER_CONNECTIONS;
    let report =
        format!("peaks {peaks:?} over {samples} samples; {refusals} busy answers; budget {budget}");
    eprintln!("{report}");
    assert!(samples > 50, "{report}");
    assert!(
        peak("orchestrator") > 0,
        "the sampling sees the services: {report}"
    );
    assert!(
        peak("orchestrator") <= 2 * ORCHESTRATOR_CONNECTIONS,
        "{report}"
    );
    for worker in WORKERS {
        assert!(peak(worker) <= 2 * WORKER_CONNECTIONS, "{worker}: {report}");
    }
    assert!(peaks["total"] <= budget, "{report}");

    // Operators get in at once: the auditor, `inventory export`, psql and a
    // plain connection, none waiting for a free slot.
    let started = Instant::now();
    let audit = Command::new(bin_dir().join("auditor"))
        .env("ORCHESTRATOR_DATABASE_URL", &databases["orchestrator"].url)
        .env("INVENTORY_DATABASE_URL", &databases["inventory"].url)
        .env("PAYMENT_DATABASE_URL", &databases["payment"].url)
        .output()
        .await
        .unwrap();
    assert!(
        audit.status.success(),
        "auditor: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let export = Command::new(bin_dir().join("inventory"))
        .arg("export")
        .env("DATABASE_URL", &databases["inventory"].url)
        .output()
        .await
        .unwrap();
    let csv = testing::succeeded(&export);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("BULK,Bulk,100000,99400,")),
        "{csv}"
    );
    let psql = Command::new("psql")
        .arg(&databases["orchestrator"].url)
        .args(["-Atc", "SELECT count(*) FROM sagas"])
        .output()
        .await
        .unwrap();
    assert_eq!(testing::succeeded(&psql).trim(), "600");
    let mut plain = PgConnection::connect(&databases["payment"].url)
        .await
        .unwrap();
    plain.ping().await.unwrap();
    plain.close().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "operators waited {:?}",
        started.elapsed()
    );

    // Idle connections go: the workers, with nothing to do, hold none.
    for worker in WORKERS {
        let name = &databases[worker].name;
        testing::eventually(
            &format!("the {worker} workers' idle connections closed"),
            Duration::from_secs(60),
            || async { (service_connections(&admin, name).await == 0).then_some(()) },
        )
        .await;
    }

    for (name, child) in processes {
        terminate(child, &name).await;
    }
}

/// Reads `child`'s JSON log lines from stderr until one satisfies `last`;
/// returns them all. The rest is drained in the background: a process
/// whose stderr is closed is not what is on trial.
async fn log_until(child: &mut Child, last: impl Fn(&str) -> bool) -> Vec<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.recv().await {
            let done = last(&line);
            seen.push(line);
            if done {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        panic!("the expected log line never came: {seen:#?}");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_pool_does_not_fit_the_server_warns_once_at_start() {
    testing::init_tracing();
    let prefix = testing::random_prefix();
    let _topology = TopologyGuard::new(&prefix);
    let orchestrator_db = TestDatabase::create("orchestrator").await;
    let tax_db = TestDatabase::create("tax").await;
    let port = testing::free_port();
    for (binary, db, started) in [
        (
            bin_dir().join("orchestrator"),
            &orchestrator_db,
            "orchestrator listening",
        ),
        (bin_dir().join("tax"), &tax_db, "consuming"),
    ] {
        let mut child = Command::new(&binary)
            .env_remove("RUST_LOG")
            .env("DATABASE_URL", &db.url)
            .env("AMQP_URL", testing::amqp_url())
            .env("AMQP_PREFIX", &prefix)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .env("DATABASE_POOL_SIZE", "1000")
            .spawn_service(Stdio::piped())
            .unwrap();
        let lines = log_until(&mut child, |line| line.contains(started)).await;
        let warnings: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("max_connections"))
            .collect();
        assert_eq!(warnings.len(), 1, "{binary:?}: {lines:#?}");
        let warning: Value = serde_json::from_str(warnings[0]).unwrap();
        assert_eq!(warning["level"], "WARN", "{warning}");
        assert_eq!(warning["pool"], 1000, "{warning}");
        assert!(
            warning["message"]
                .as_str()
                .unwrap()
                .contains("DATABASE_POOL_SIZE"),
            "the warning says what to change: {warning}"
        );
        terminate(child, &binary.display().to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_no_free_connection_is_503_overloaded_with_retry_after() {
    testing::init_tracing();
    let prefix = testing::random_prefix();
    let _topology = TopologyGuard::new(&prefix);
    let db = TestDatabase::create("orchestrator").await;
    let port = testing::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", testing::amqp_url())
        .env("AMQP_PREFIX", &prefix)
        .envs(crate::system::client_env())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("DATABASE_POOL_SIZE", "2")
        .spawn_service(testing::service_log())
        .unwrap();
    let http = crate::system::http_with_key(crate::system::CLIENT_KEY);
    testing::eventually("the orchestrator ready", PATIENCE, || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let post = |key: &'static str| {
        http.post(format!("{base}/v1/checkouts"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = post("first").await.unwrap();
    assert_eq!(first.status(), 202);
    let id = first.json::<Value>().await.unwrap()["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Beside its LISTEN connection, the orchestrator's one connection waits
    // on a lock the test holds.
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let blocked = tokio::spawn(
        http.get(format!("{base}/v1/checkouts/{id}"))
            .timeout(Duration::from_secs(60))
            .send(),
    );
    testing::eventually(
        "the pool's connection waiting on the lock",
        PATIENCE,
        || async {
            let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&db.name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;

    let busy = post("second").await.unwrap();
    assert_eq!(busy.status(), 503);
    let retry_after: u64 = busy.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(busy.headers()["content-type"], "application/problem+json");
    let problem: Value = busy.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:checkout-saga:problem:overloaded",
        "{problem}"
    );
    assert_eq!(problem["status"], 503, "{problem}");

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let released = blocked.await.unwrap().unwrap();
    assert_eq!(released.status(), 200);
    // Nothing of the refused request was kept: its key is still free.
    assert_eq!(post("second").await.unwrap().status(), 202);
    let metrics = scrape(&base).await;
    assert!(
        metrics
            .value("checkout_api_overloaded_total")
            .is_some_and(|counted| counted >= 1.0),
        "{metrics}"
    );
    // The contract says so too.
    let doc: Value = testing::json_answer(http.get(format!("{base}/openapi.json"))).await;
    for (path, method) in [("/v1/checkouts", "post"), ("/v1/checkouts/{id}", "get")] {
        let busy = &doc["paths"][path][method]["responses"]["503"];
        assert!(
            busy["description"].as_str().unwrap().contains("overloaded"),
            "{busy}"
        );
        assert!(busy["headers"]["Retry-After"].is_object(), "{busy}");
    }
    terminate(child, "orchestrator").await;
}
