//! The real `orchestrator` binary's start-up checks.

use std::process::Command;

fn orchestrator(env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("orchestrator runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_malformed_variable_stops_it_with_one_line_naming_it() {
    let (code, stderr) = orchestrator(&[("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL is missing"), "{stderr}");

    let (code, stderr) = orchestrator(&[
        (
            "DATABASE_URL",
            "postgres://postgres:s3cret@127.0.0.1:5432/x",
        ),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("HTTP_ADDR", "localhost:eighty"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP_ADDR is invalid"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "no secret in the message: {stderr}"
    );
}

#[test]
fn help_describes_the_service() {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("DATABASE_URL") && text.contains("orchestrator"),
        "{text}"
    );
}

#[test]
fn an_unreadable_ca_file_stops_it_at_start_naming_the_variable() {
    let database = "postgres://postgres@127.0.0.1:5432/x";
    let (code, stderr) = orchestrator(&[
        ("DATABASE_URL", database),
        ("AMQP_URL", "amqps://guest:guest@127.0.0.1:5671/%2f"),
        ("AMQP_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("AMQP_CA_FILE is invalid"), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");

    let (code, stderr) = orchestrator(&[
        (
            "DATABASE_URL",
            &format!("{database}?sslmode=verify-full&sslrootcert=/nonexistent/root.crt"),
        ),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL is invalid"), "{stderr}");
    assert!(stderr.contains("/nonexistent/root.crt"), "{stderr}");
}

#[tokio::test]
async fn migrate_is_a_step_of_its_own_and_a_service_that_may_not_migrate_refuses_a_schema_behind_it(
) {
    let db = saga_testkit::TestDatabase::create("orchestrator_migrate_bin").await;
    let n = orchestrator::app::SCHEMA.build_version();
    let serve = [
        ("DATABASE_URL", db.url.as_str()),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("MIGRATE_ON_START", "false"),
    ];
    let (code, stderr) = orchestrator(&serve);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("error: orchestrator: database schema is at version 0, this build needs {n}: run `orchestrator migrate` first")
    );

    let migrate = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("orchestrator migrate runs");
    let stdout = saga_testkit::succeeded(&migrate);
    assert!(
        stdout.starts_with("orchestrator: applied 1 sagas\n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!("orchestrator: schema now at version {n}\n")),
        "{stdout}"
    );
    let status = saga_shared::schema::check(&db.pool, &orchestrator::app::SCHEMA)
        .await
        .expect("the schema is this build's now");
    assert_eq!(status.version, n);
}

/// `orchestrator topology`, run twice around an older release's policy:
/// it creates what is missing, then sets the policy back to this build's.
#[tokio::test]
async fn topology_declares_what_is_missing_and_sets_the_queue_policy_to_this_builds() {
    use saga_shared::queue_policies::Management;
    use saga_shared::topology::Topology;
    use saga_testkit as testing;

    let prefix = testing::random_prefix();
    let _guard = testing::TopologyGuard::new(&prefix);
    let topology = Topology::new(&prefix);
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .arg("topology")
            .env_clear()
            .env("AMQP_URL", testing::amqp_url())
            .env("AMQP_PREFIX", &prefix)
            .output()
            .expect("orchestrator topology runs");
        testing::succeeded(&output)
    };
    let policy = format!("{prefix}checkout-work-queues");

    let said = run();
    assert!(
        said.contains(&format!("policy {policy}: created")),
        "{said}"
    );

    // An older release's policy (a higher delivery limit) is set back.
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:15672/api/policies/%2F/{policy}");
    let older = serde_json::json!({
        "pattern": topology.policies()[0].pattern,
        "definition": {"delivery-limit": 20},
        "apply-to": "queues",
    });
    let put = client
        .put(&url)
        .basic_auth("guest", Some("guest"))
        .json(&older)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    // A service's start leaves another release's policy as it is.
    let applied = Management::new(&testing::amqp_url(), None)
        .unwrap()
        .apply(&topology, false)
        .await
        .unwrap();
    assert_eq!(
        applied,
        vec![saga_shared::queue_policies::Applied::LeftAsItIs(
            policy.clone()
        )]
    );
    let said = run();
    assert!(
        said.contains(&format!("policy {policy}: updated to this build's")),
        "{said}"
    );
    let now: serde_json::Value =
        testing::json_answer(client.get(&url).basic_auth("guest", Some("guest"))).await;
    assert_eq!(now["definition"], topology.policies()[0].definition);
    assert_eq!(
        now["definition"]["delivery-limit"],
        saga_shared::topology::DELIVERY_LIMIT
    );

    // The queues it declared are there, and taken as they are next time.
    let said = run();
    assert!(
        said.contains(&format!("policy {policy}: already this build's")),
        "{said}"
    );
}

/// `orchestrator broker-users`: a service whose password the operator
/// chose (as docker-compose.yml does) gets that one and it is never
/// printed; the others get new ones, printed once as their AMQP_URL.
#[tokio::test]
async fn broker_users_takes_the_operators_passwords_and_prints_only_new_ones() {
    use saga_shared::config::url_as;
    use saga_testkit as testing;

    let prefix = testing::random_prefix();
    let _guard = testing::TopologyGuard::new(&prefix);
    let base = prefix.trim_end_matches('.');
    let chosen = "chosen-by-the-operator-0123456789";
    let run = |inventory_password: &str| {
        Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["broker-users", "--base", base, "--rotate"])
            .env_clear()
            .env("AMQP_URL", testing::amqp_url())
            .env("AMQP_PREFIX", &prefix)
            .env("INVENTORY_AMQP_PASSWORD", inventory_password)
            .output()
            .expect("orchestrator broker-users runs")
    };

    let output = run(chosen);
    let said = testing::succeeded(&output);
    assert!(
        said.contains(&format!(
            "# INVENTORY_AMQP_URL: user {base}-inventory has the password of INVENTORY_AMQP_PASSWORD"
        )),
        "{said}"
    );
    assert!(
        !said.contains(chosen),
        "the operator's password is not echoed: {said}"
    );
    assert!(
        said.contains(&format!(
            "WORKER_USERS=inventory={base}-inventory,tax={base}-tax,payment={base}-payment"
        )),
        "{said}"
    );
    let tax_url = said
        .lines()
        .find_map(|line| line.strip_prefix("TAX_AMQP_URL="))
        .expect("a new user's URL is printed");

    // Both passwords open a connection.
    let inventory_url = url_as(&testing::amqp_url(), &format!("{base}-inventory"), chosen);
    for url in [inventory_url.as_str(), tax_url] {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("the service's user connects");
        connection.close(200, "bye".into()).await.ok();
    }

    // A weak chosen password is refused, naming the variable, not echoing it.
    let output = run("tiny123");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("INVENTORY_AMQP_PASSWORD is invalid"),
        "{stderr}"
    );
    assert!(!stderr.contains("tiny123"), "{stderr}");
}
