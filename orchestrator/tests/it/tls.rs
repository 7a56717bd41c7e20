//! Encrypted connections, end to end: the four real binaries against a
//! PostgreSQL server and a RabbitMQ node of the test's own that speak TLS
//! only (`scripts/tls-services`), each verified against the test's own CA.
//! A CA that did not sign a server's certificate, or a host the certificate
//! does not name, stops a service at once with exit code 2 and one line
//! naming the variable to fix.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use saga_shared::database;
use saga_testkit::{self as testing, ServiceCommand};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::crashes::bin_dir;
use crate::system::{order, seed};

const PATIENCE: Duration = Duration::from_secs(60);

/// A TLS-only PostgreSQL and RabbitMQ node, stopped and removed on drop.
struct TlsServices {
    dir: PathBuf,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/tls-services")
}

impl TlsServices {
    async fn start() -> TlsServices {
        let dir = std::env::temp_dir().join(format!("tls-services-{}", uuid::Uuid::new_v4()));
        let output = Command::new(script())
            .arg("start")
            .arg(&dir)
            .output()
            .await
            .expect("scripts/tls-services runs");
        // Dropped on failure too, so a half-started node is stopped.
        let mut services = TlsServices {
            dir,
            env: HashMap::new(),
        };
        assert!(
            output.status.success(),
            "scripts/tls-services start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let env = std::fs::read_to_string(services.dir.join("env")).unwrap();
        services.env = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        services
    }

    fn get(&self, name: &str) -> &str {
        &self.env[name]
    }

    /// A verify-full URL of `database` at `host`, trusting `ca`.
    fn database_url(&self, host: &str, database: &str, mode: &str, ca: Option<&str>) -> String {
        let port = self.get("PG_PORT");
        let root = ca
            .map(|ca| format!("&sslrootcert={ca}"))
            .unwrap_or_default();
        format!("postgres://postgres@{host}:{port}/{database}?sslmode={mode}{root}")
    }

    fn good_database_url(&self, database: &str) -> String {
        self.database_url(
            "127.0.0.1",
            database,
            "verify-full",
            Some(self.get("CA_FILE")),
        )
    }

    /// Creates `names` and returns a pool on each, over verified TLS.
    async fn databases(&self, names: &[&'static str]) -> HashMap<&'static str, PgPool> {
        let admin = PgPool::connect(self.get("DATABASE_ADMIN_URL"))
            .await
            .expect("the test connects to its TLS PostgreSQL");
        let mut pools = HashMap::new();
        for name in names {
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&admin)
                .await
                .unwrap();
            let pool = PgPool::connect(&self.good_database_url(name))
                .await
                .unwrap();
            pools.insert(*name, pool);
        }
        admin.close().await;
        pools
    }
}

impl Drop for TlsServices {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn spawn(service: &str, env: &[(&str, String)]) -> Child {
    Command::new(bin_dir().join(service))
        .envs(crate::system::client_env())
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Every payment worker of a test runs the simulator (a test double).
        .env("PAYMENT_PROVIDER", "simulator")
        .env("RUST_LOG", "warn")
        .spawn_service(testing::service_log())
        .unwrap_or_else(|e| panic!("{service} starts: {e}"))
}

/// Runs `service` until it exits (within the deadline): its exit code and
/// what it said on stderr.
async fn run_until_exit(service: &str, env: &[(&str, String)]) -> (Option<i32>, String) {
    let child = Command::new(bin_dir().join(service))
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Only the binary's own last word: rustls' verifier logs the
        // refusal too, as a log line of its own.
        .env("RUST_LOG", "off")
        .env("HTTP_ADDR", format!("127.0.0.1:{}", testing::free_port()))
        .spawn_service(Stdio::piped())
        .unwrap();
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{service} did not stop on its own within {PATIENCE:?}"))
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_completes_over_verified_tls_to_postgresql_and_rabbitmq() {
    testing::init_tracing();
    let services = TlsServices::start().await;
    let names = ["orchestrator", "inventory", "tax", "payment"];
    let pools = services.databases(&names).await;
    workers::inventory::MIGRATOR
        .run(&pools["inventory"])
        .await
        .unwrap();
    workers::tax::MIGRATOR.run(&pools["tax"]).await.unwrap();
    seed(&pools["inventory"], &pools["tax"]).await;

    let port = testing::free_port();
    let prefix = testing::random_prefix();
    let mut processes = Vec::new();
    for service in names {
        processes.push(spawn(
            service,
            &[
                ("DATABASE_URL", services.good_database_url(service)),
                ("AMQP_URL", services.get("AMQPS_URL").to_owned()),
                ("AMQP_CA_FILE", services.get("CA_FILE").to_owned()),
                ("AMQP_PREFIX", prefix.clone()),
                ("HTTP_ADDR", format!("127.0.0.1:{port}")),
                ("DATABASE_POOL_SIZE", "4".to_owned()),
            ],
        ));
    }
    let http = crate::system::http_with_key(crate::system::CLIENT_KEY);
    let base = format!("http://127.0.0.1:{port}");
    testing::eventually("the orchestrator ready", PATIENCE, || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let response = http
        .post(format!("{base}/v1/checkouts"))
        .json(&order(&[("TSHIRT", 1)], "sim_approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: serde_json::Value = response.json().await.unwrap();
    let id = created["checkout_id"].as_str().unwrap().to_owned();
    let checkout = testing::eventually("the checkout completed", PATIENCE, || async {
        let body = testing::try_json_answer(http.get(format!("{base}/v1/checkouts/{id}"))).await?;
        (body["status"] == "completed").then_some(body)
    })
    .await;
    assert_eq!(checkout["total_cents"], 2_145, "{checkout}");
    let charged: Vec<(String, i64)> = sqlx::query_as("SELECT status, amount_cents FROM payments")
        .fetch_all(&pools["payment"])
        .await
        .unwrap();
    assert_eq!(charged, vec![("charged".to_owned(), 2_145)]);

    // Every session each service holds is encrypted (the server would
    // refuse a plain one: its pg_hba.conf has hostssl lines only).
    let (sessions, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.backend_type = 'client backend' AND a.datname = ANY($1)
           AND a.pid <> pg_backend_pid()",
    )
    .bind(&names[..])
    .fetch_one(&pools["orchestrator"])
    .await
    .unwrap();
    assert!(sessions > 0);
    assert_eq!(encrypted, sessions);
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/orchestrator?sslmode=disable",
        services.get("PG_PORT")
    );
    assert!(PgPool::connect(&plain).await.is_err(), "plain is refused");

    for mut process in processes {
        process.kill().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_host_stops_a_service_with_exit_code_2_naming_the_variable() {
    testing::init_tracing();
    let services = TlsServices::start().await;
    let pools = services.databases(&["orchestrator", "inventory"]).await;
    let wrong_ca = services.get("WRONG_CA_FILE").to_owned();
    let good_ca = services.get("CA_FILE").to_owned();
    let unnamed = services.get("UNNAMED_HOST").to_owned();
    let amqps = services.get("AMQPS_URL").to_owned();
    let env = |database_url: String, amqp_url: &str, ca: &str| {
        vec![
            ("DATABASE_URL", database_url),
            ("AMQP_URL", amqp_url.to_owned()),
            ("AMQP_CA_FILE", ca.to_owned()),
            ("AMQP_PREFIX", testing::random_prefix()),
        ]
    };
    let elsewhere = amqps.replace("127.0.0.1", &unnamed);

    for service in ["orchestrator", "inventory"] {
        // (DATABASE_URL, AMQP_URL, AMQP_CA_FILE, what the one line names)
        let refusals: [(String, &str, &str, &[&str]); 4] = [
            (
                services.database_url("127.0.0.1", service, "verify-full", Some(&wrong_ca)),
                &amqps,
                &good_ca,
                &["DATABASE_URL", "PostgreSQL", "not signed by a trusted CA"],
            ),
            (
                services.database_url(&unnamed, service, "verify-full", Some(&good_ca)),
                &amqps,
                &good_ca,
                &["DATABASE_URL", "does not name this host"],
            ),
            (
                services.good_database_url(service),
                &amqps,
                &wrong_ca,
                &["AMQP_CA_FILE", "RabbitMQ", "not signed by a trusted CA"],
            ),
            (
                services.good_database_url(service),
                &elsewhere,
                &good_ca,
                &["RabbitMQ", "does not name this host", "AMQP_URL"],
            ),
        ];
        for (database_url, amqp_url, ca, needles) in refusals {
            let (code, stderr) = run_until_exit(service, &env(database_url, amqp_url, ca)).await;
            eprintln!("{service}: {stderr}");
            assert_eq!(code, Some(2), "{service}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{service}: {stderr}");
            for needle in needles {
                assert!(stderr.contains(needle), "{service}: {needle}? {stderr}");
            }
        }
    }

    // sslmode as libpq reads it: `require` encrypts without verifying,
    // unless a root certificate is given; `verify-ca` checks the CA.
    // (Without sslmode, libpq would try TLS; here it stays plain.)
    let stop = CancellationToken::new();
    let connect = |mode: &str, ca: Option<&str>| {
        let url = services.database_url("127.0.0.1", "orchestrator", mode, ca);
        let stop = stop.clone();
        async move { database::connect_with_backoff(&url, 1, &stop).await }
    };
    connect("require", None).await.unwrap();
    // No sslmode at all is plain text, which this server turns away.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/orchestrator",
        services.get("PG_PORT")
    );
    let error = database::connect_with_backoff(&plain, 1, &stop)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no encryption"), "{error}");
    connect("verify-ca", Some(&good_ca)).await.unwrap();
    for mode in ["require", "verify-ca"] {
        let error = connect(mode, Some(&wrong_ca)).await.unwrap_err();
        assert!(
            error.to_string().contains("not signed by a trusted CA"),
            "{mode}: {error}"
        );
    }
    drop(pools);
}
