//! The real `sagactl` binary against a running system: what support sees,
//! and the exit codes scripts rely on.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use serde_json::Value;
use tokio::process::Command;

use crate::answers::strings;
use crate::system::{order, System, ADMIN_ACTOR, ADMIN_TOKEN};

/// How long one sagactl run may take; it only makes one HTTP call.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The first line on stdout that `wanted` takes, which must be there:
    /// `what`, in the failure.
    fn line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> &str {
        self.stdout
            .lines()
            .find(|line| wanted(line))
            .unwrap_or_else(|| panic!("{what}: {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs sagactl with `url` and `token` from the environment, as a support
/// user would set them, and nothing inherited from the test's own.
async fn sagactl(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagactl"));
    command
        .args(args)
        .env_remove("SAGACTL_TOKEN")
        .env("SAGACTL_URL", url)
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("SAGACTL_TOKEN", token);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("sagactl {args:?} ends within {RUN_TIMEOUT:?}"))
        .expect("sagactl runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An error run: its exit code, and exactly one line on stderr, with
/// nothing on stdout.
fn assert_fails(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(run.stderr.starts_with("sagactl: "), "{run}");
    assert!(run.stderr.contains(needle), "wanted {needle:?}: {run}");
}

/// A dry run of retrying the charges parked with `error`, which must say
/// that `would` sagas would be retried.
async fn retry_all_dry_run(url: &str, token: Option<&str>, error: &str, would: usize) -> Run {
    let run = sagactl(
        url,
        token,
        &[
            "retry-all",
            "--dry-run",
            "--step",
            "payment.charge",
            "--error",
            error,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains(&format!(
            "dry run: {would} suspended sagas would be retried"
        )),
        "{run}"
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_finds_retries_and_reads_parked_sagas_with_sagactl() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(2))).await;
    let url = system.base_url.as_str();
    let token = Some(ADMIN_TOKEN);

    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let completed = done["checkout_id"].as_str().unwrap().to_owned();

    let parked = system
        .park_each(&order(&[("BOOK", 1)], "sim_approve"), 2)
        .await;

    // No token, or one the server does not know: 5, and never echoed.
    assert_fails(&sagactl(url, None, &["failures"]).await, 5, "SAGACTL_TOKEN");
    let wrong = "not-the-token-7f3a";
    let run = sagactl(url, Some(wrong), &["failures"]).await;
    assert_fails(&run, 5, "Unauthorized");
    assert!(!run.stderr.contains(wrong), "{run}");

    let unknown = uuid::Uuid::now_v7().to_string();
    assert_fails(&sagactl(url, token, &["show", &unknown]).await, 3, &unknown);

    let run = sagactl(url, token, &["failures"]).await;
    assert_eq!(run.code, 0, "{run}");
    let group = run.line("a payment.charge group", |l| l.contains("payment.charge"));
    assert!(
        group.starts_with("2 ") && group.contains("forward") && group.contains("outage"),
        "{run}"
    );
    assert!(run.stdout.contains("total: 2 suspended sagas"), "{run}");

    let run = sagactl(url, token, &["list", "--status", "suspended"]).await;
    assert_eq!(run.code, 0, "{run}");
    for id in &parked {
        let row = run.line(&format!("{id} listed"), |l| l.starts_with(id.as_str()));
        assert!(
            row.contains("suspended") && row.contains("payment.charge"),
            "{run}"
        );
    }
    // One row a page: the next page's cursor is printed, and it works.
    let run = sagactl(
        url,
        token,
        &["list", "--status", "suspended", "--limit", "1"],
    )
    .await;
    let cursor = run
        .stdout
        .lines()
        .find_map(|l| l.split("--cursor ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a next-page cursor: {run}"));
    let next = sagactl(
        url,
        token,
        &[
            "list",
            "--status",
            "suspended",
            "--limit",
            "1",
            "--cursor",
            cursor,
        ],
    )
    .await;
    assert_eq!(next.code, 0, "{next}");
    assert!(!next.stdout.contains("--cursor"), "the last page: {next}");
    assert_ne!(
        run.stdout.lines().nth(1),
        next.stdout.lines().nth(1),
        "{run}{next}"
    );

    let run = sagactl(url, token, &["list", "--status", "sideways"]).await;
    assert_fails(&run, 6, "status: must be one of");

    // A partial error names no group: nothing would be retried.
    retry_all_dry_run(url, token, "outage", 0).await;
    let run = retry_all_dry_run(url, token, "payment provider outage", 2).await;
    for id in &parked {
        assert!(run.stdout.lines().any(|l| l == id), "{id}: {run}");
    }
    assert_eq!(system.saga_status(&parked[0]).await, "suspended");

    let listed: Vec<&str> = run.stdout.lines().skip(1).collect();

    let run = sagactl(url, token, &["retry-all"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--reason"), "{run}");
    // Never "every suspended saga": a group or ids it must be.
    let run = sagactl(url, token, &["retry-all", "--reason", "everything"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--saga-id"), "{run}");

    let run = sagactl(
        url,
        token,
        &["retry", &completed, "--reason", "just checking"],
    )
    .await;
    assert_fails(&run, 4, "Conflict");

    system.outage(false).await;
    let reason = "provider back after the outage";
    let ids = listed.join(",");
    let run = sagactl(
        url,
        token,
        &["retry-all", "--saga-id", &ids, "--reason", reason],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "retried 2 sagas\n", "{run}");
    for id in &parked {
        let done = system.wait_final(id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    let run = sagactl(url, token, &["show", &parked[0]]).await;
    assert_eq!(run.code, 0, "{run}");
    for needle in [
        "completed (checkout completed)",
        "total 15.45 USD",
        "pending compensations  none",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?}: {run}");
    }
    let retry_line = run.line("a retry line in the timeline", |l| l.contains(" retry "));
    assert!(
        retry_line.contains("payment.charge")
            && retry_line.contains(&format!("by {ADMIN_ACTOR}: {reason}")),
        "{run}"
    );
    // The charge's last attempt after the retry succeeded.
    let after_retry = run.stdout.split(retry_line).nth(1).unwrap();
    assert!(
        after_retry
            .lines()
            .any(|l| l.contains("payment.charge") && l.contains(" ok")),
        "{run}"
    );

    let run = sagactl(url, token, &["list", "--status", "suspended"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "no sagas match\n", "{run}");
    let run = sagactl(url, token, &["--json", "list", "--status", "suspended"]).await;
    assert_eq!(run.code, 0, "{run}");
    let page: Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    assert_eq!(page["sagas"], Value::Array(Vec::new()), "{run}");
    assert_eq!(page["next_cursor"], Value::Null, "{run}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = sagactl(
        url,
        token,
        &["--url", &format!("http://127.0.0.1:{closed}"), "failures"],
    )
    .await;
    assert_fails(&run, 7, "Server unreachable");

    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_naming_the_exit_codes_and_hiding_the_token() {
    let secret = "s3cret-token-in-env";
    for command in ["list", "show", "retry", "cancel", "failures", "retry-all"] {
        let run = sagactl("http://127.0.0.1:9", Some(secret), &[command, "--help"]).await;
        assert_eq!(run.code, 0, "{command}: {run}");
        assert!(run.stdout.contains("Usage: sagactl"), "{command}: {run}");
        assert!(!run.stdout.contains(secret), "{command}: {run}");
    }
    let run = sagactl("http://127.0.0.1:9", Some(secret), &["--help"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.stdout.contains(secret), "{run}");
    for code in [
        "3  not found",
        "4  conflict",
        "5  unauthorized",
        "6  invalid",
        "7  server",
    ] {
        assert!(run.stdout.contains(code), "{code}: {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagactl_finds_checkouts_by_customer_key_or_id() {
    let system = System::start().await;
    let mut body = order(&[("BOOK", 1)], "sim_approve");
    body["customer_id"] = serde_json::json!("cust-9");
    let (status, created) = system.post(&body, Some("key-9")).await;
    assert_eq!(status, 202, "{created}");
    let id = created["checkout_id"].as_str().unwrap().to_owned();
    let other = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    system.wait_final(&id).await;
    system.wait_final(&other).await;
    let url = system.base_url.as_str();
    let token = Some(ADMIN_TOKEN);

    for (args, wanted) in [
        (["list", "--customer", "cust-9"], &id),
        (["list", "--key", "key-9"], &id),
        (["list", "--search", other.as_str()], &other),
    ] {
        let run = sagactl(url, token, &args).await;
        assert_eq!(run.code, 0, "{run}");
        let mut lines = run.stdout.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.contains("CUSTOMER") && header.contains("TOTAL"),
            "{run}"
        );
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 1, "{args:?}: {run}");
        assert!(rows[0].starts_with(wanted.as_str()), "{args:?}: {run}");
        assert!(rows[0].contains("15.45 USD"), "{run}");
    }
    let run = sagactl(url, token, &["list", "--customer", "cust-9\u{1b}[2J"]).await;
    assert_fails(&run, 6, "customer_id");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_add_list_set_and_revoke_and_a_revoked_key_gets_401() {
    let system = System::start().await;
    let url = system.base_url.as_str();
    // Support's own runs, with the support token.
    let support = |args: &'static [&'static str]| sagactl(url, Some(ADMIN_TOKEN), args);
    let added = support(&["clients", "add", "kiosk", "--max-in-flight", "7"]).await;
    assert_eq!(added.code, 0, "{added}");
    let key = added
        .line("the key is printed", |l| l.starts_with("ck_"))
        .to_owned();
    assert!(added.stdout.contains("shown once"), "{added}");
    let body = order(&[("BOOK", 1)], "sim_approve");
    let post = |key: String| {
        let body = body.clone();
        let url = url.to_owned();
        async move {
            crate::system::http_with_key(&key)
                .post(format!("{url}/v1/checkouts"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(key.clone()).await, 202);

    let listed = support(&["clients", "list"]).await;
    assert_eq!(listed.code, 0, "{listed}");
    assert!(
        !listed.stdout.contains(&key),
        "the key is never listed: {listed}"
    );
    let kiosk = listed.line("kiosk listed", |l| l.starts_with("kiosk"));
    assert!(kiosk.contains("/7") && kiosk.contains("active"), "{listed}");
    let json = support(&["--json", "clients", "list"]).await;
    let answer: Value = serde_json::from_str(&json.stdout).unwrap();
    let names = strings(&answer["clients"], "name");
    assert_eq!(names, ["kiosk", "other-shop", "test-shop"], "{json}");

    let set = support(&["clients", "set", "kiosk", "--rate", "5"]).await;
    assert_eq!(set.code, 0, "{set}");
    assert!(set.stdout.contains(" 5.0 "), "{set}");
    let taken = support(&["clients", "add", "kiosk"]).await;
    assert_fails(&taken, 4, "kiosk");
    let missing = support(&["clients", "revoke", "nobody"]).await;
    assert_fails(&missing, 3, "nobody");

    let revoked = support(&["clients", "revoke", "kiosk"]).await;
    assert_eq!(revoked.code, 0, "{revoked}");
    assert!(revoked.stdout.contains("revoked"), "{revoked}");
    // At once on the instance that revoked it.
    assert_eq!(post(key.clone()).await, 401);
    system.stop().await;
}
