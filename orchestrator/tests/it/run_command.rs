//! The README's run command, started as a newcomer would, serves the curl
//! line it prints.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use saga_testkit as testing;
use serde_json::Value;

use crate::crashes::bin_dir;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Stops the script when the test ends, however it ends: on TERM it stops
/// the services it started, as on Ctrl-C.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_run_command_serves_its_printed_curl_line() {
    testing::init_tracing();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains("scripts/run"),
        "README names the run command"
    );

    // The binaries this test build made; cargo's build lock is held while
    // tests run, so the script must not build again.
    let bins = bin_dir();
    for name in ["orchestrator", "inventory", "tax", "payment", "sagactl"] {
        assert!(
            bins.join(name).exists(),
            "{name} not built in {bins:?}: run `cargo test --workspace`"
        );
    }
    let port = testing::free_port();
    let suffix = testing::random_prefix().trim_end_matches('.').to_owned();
    let db_prefix = format!("{suffix}_");
    let run_dir = std::env::temp_dir().join(format!("run-{suffix}"));

    let mut child = Command::new(repo_root().join("scripts/run"))
        .current_dir(repo_root())
        .env("HTTP_PORT", port.to_string())
        .env("AMQP_PREFIX", format!("{suffix}."))
        .env("DB_PREFIX", &db_prefix)
        .env("PROFILE", "debug")
        .env("SKIP_BUILD", "1")
        .env("BIN_DIR", &bins)
        .env("RUN_DIR", &run_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/run starts");
    let group = StopOnDrop(child.id());
    let _topology = testing::TopologyGuard::new(&format!("{suffix}."));
    // Both streams feed one channel, so a failure shows everything it said.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let curl = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("no curl line printed; output so far: {printed:#?}"));
        printed.push(line.clone());
        if line.trim_start().starts_with("curl ") && line.contains("/v1/checkouts") {
            break line;
        }
    };
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}"))),
        "prints its URL: {printed:#?}"
    );

    let output = Command::new("bash").arg("-c").arg(&curl).output().unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "curl printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let id = created["checkout_id"]
        .as_str()
        .expect("a checkout id")
        .to_owned();

    // The demo client key, as the curl line shows it.
    let key = curl
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("the curl line carries a client key: {curl}"))
        .to_owned();
    let client = crate::system::http_with_key(&key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let body: Value = testing::json_answer(
            client.get(format!("http://127.0.0.1:{port}/v1/checkouts/{id}?wait=5")),
        )
        .await;
        if body["status"] != "pending" {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {body}"
        );
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["total_cents"].as_i64().unwrap() > 0);

    // The README's support walk-through, with the commands the script
    // printed: an outage parks checkouts, one bulk retry completes them.
    let printed_after = |prefix: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no `{prefix}` line printed"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_owned();
        }
    };
    let _console = printed_after("Support console: ");
    let sagactl = printed_after("Support CLI: ");
    let sagactl = sagactl.trim_end_matches(" failures").to_owned();
    let drill = printed_after("Payment outage drill: ");
    let outage_on = drill.split("   (then").next().unwrap().to_owned();
    let outage_off = outage_on.replace("outage on", "outage off");
    let sh = |line: &str| {
        let output = Command::new("bash").arg("-c").arg(line).output().unwrap();
        testing::succeeded(&output)
    };
    sh(&outage_on);
    let mut parked = Vec::new();
    for _ in 0..2 {
        let created: Value =
            serde_json::from_str(&sh(&curl.replace("Idempotency-Key", "X-Ignored")))
                .expect("a checkout");
        parked.push(created["checkout_id"].as_str().unwrap().to_owned());
    }
    testing::eventually("both checkouts parked", Duration::from_secs(60), || {
        let json = sh(&format!("{sagactl} --json failures"));
        async move {
            let failures: Value = serde_json::from_str(&json).unwrap();
            (failures["total"] == 2).then_some(())
        }
    })
    .await;
    sh(&outage_off);
    let retried = sh(&format!(
        "{sagactl} retry-all --step payment.charge --error 'payment provider outage' --reason 'provider back'"
    ));
    assert!(retried.contains('2'), "{retried}");
    for id in &parked {
        let done: Value = testing::json_answer(
            client.get(format!("http://127.0.0.1:{port}/v1/checkouts/{id}?wait=30")),
        )
        .await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    drop(group);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&run_dir);
    for service in ["orchestrator", "inventory", "tax", "payment"] {
        let url = testing::admin_database_url();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{db_prefix}{service}\" WITH (FORCE)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}
