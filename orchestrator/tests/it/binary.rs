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
