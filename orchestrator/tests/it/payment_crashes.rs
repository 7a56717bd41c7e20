//! The real payment binary killed between the provider's approval and the
//! recording of it (a failpoint aborts the process there), then restarted:
//! the provider's ledger shows the money moved once. And a slow provider
//! pins no database connection: a burst of slow charges leaves the pool
//! free and other checkouts flowing.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;

use saga_testkit as testing;

use crate::crashes::{bin_dir, charge_compensated_after_one_second, Deployment, PATIENCE};
use crate::system::{count_sagas, order};

/// `payment ledger`, the provider's side, without its header.
async fn ledger(deployment: &Deployment) -> Vec<String> {
    let output = tokio::process::Command::new(bin_dir().join("payment"))
        .arg("ledger")
        .env("DATABASE_URL", &deployment.databases["payment"].url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let csv = String::from_utf8(output.stdout).unwrap();
    let mut lines = csv.lines().map(str::to_owned);
    assert_eq!(
        lines.next().as_deref(),
        Some("saga_id,charges,charged_cents,refunds,refunded_cents")
    );
    lines.collect()
}

/// Waits for the payment process to die at its failpoint.
pub async fn aborted(deployment: &mut Deployment) {
    let mut child = deployment.processes.remove("payment").unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the payment worker reaches its failpoint")
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "aborted at the failpoint: {status}"
    );
}

async fn payment_status(deployment: &Deployment) -> Vec<String> {
    deployment
        .payments()
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect()
}

/// Where a payment worker killed at its failpoint left the money.
struct Crash {
    /// The `PAYMENT_FAILPOINT` the worker aborts at.
    failpoint: &'static str,
    /// The provider's ledger row of the saga past its id (charges,
    /// charged, refunds, refunded): the money moved there.
    ledger: &'static str,
    /// The payment's status as the worker last recorded it.
    recorded: &'static str,
}

/// Starts a deployment (the orchestrator with the `orchestrator`
/// settings) whose payment worker aborts at `crash.failpoint`, places one
/// TSHIRT checkout paid with `payment_method`, waits for the payment worker
/// to die as `crash` says, restarts it, and checks that the saga ends `ends`
/// with the provider's ledger unchanged (the money moved once) and the
/// payment `settled`.
async fn restarted_after(
    orchestrator: Vec<(&'static str, String)>,
    payment_method: &str,
    crash: Crash,
    ends: &str,
    settled: (&str, i64, i64),
) {
    let failpoint = ("PAYMENT_FAILPOINT", crash.failpoint.to_owned());
    let mut deployment = Deployment::start_with(HashMap::from([
        ("payment", vec![failpoint]),
        ("orchestrator", orchestrator),
    ]))
    .await;
    let id = deployment
        .place(&order(&[("TSHIRT", 1)], payment_method))
        .await;
    let ledger_row = format!("{id},{}", crash.ledger);
    aborted(&mut deployment).await;
    assert_eq!(ledger(&deployment).await, vec![ledger_row.clone()]);
    assert_eq!(payment_status(&deployment).await, vec![crash.recorded]);

    deployment.env.remove("payment");
    deployment.spawn("payment");
    let statuses = deployment.settle().await;

    assert_eq!(statuses.get(ends), Some(&1), "{statuses:?}");
    assert_eq!(
        ledger(&deployment).await,
        vec![ledger_row],
        "the money moved once at the provider"
    );
    let (status, charged, refunded) = settled;
    assert_eq!(
        deployment.payments().await,
        vec![(status.to_owned(), charged, refunded)]
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_provider_charged_charges_once_after_restart() {
    // The provider took the money; the worker never recorded it.
    let crash = Crash {
        failpoint: "after_provider_charge",
        ledger: "1,2145,0,0",
        recorded: "charging",
    };
    let charged = ("charged", 2_145, 0);
    restarted_after(Vec::new(), "sim_approve", crash, "completed", charged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_provider_refunded_refunds_once_after_restart() {
    // The charge outlives its deadline and the saga compensates at once:
    // the refund arrives while the charge is still at the provider.
    let orchestrator = charge_compensated_after_one_second();
    let crash = Crash {
        failpoint: "after_provider_refund",
        ledger: "1,2145,1,2145",
        recorded: "refunding",
    };
    let refunded = ("refunded", 2_145, 2_145);
    restarted_after(
        orchestrator,
        "sim_slow_3000",
        crash,
        "compensated",
        refunded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_slow_charges_pin_no_connection_and_others_keep_completing() {
    // Every process has a pool of 4 here; the payment worker's prefetch is
    // its default (64), above its pool size.
    const POOL_SIZE: i64 = 4;
    const SLOW: &str = "sim_slow_2000";
    let deployment = Deployment::start().await;
    let payment_db = deployment.databases["payment"].url.clone();
    let database = payment_db.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&testing::admin_database_url())
        .await
        .unwrap();
    let payments = deployment.databases["payment"].pool.clone();
    let orchestrator = deployment.databases["orchestrator"].pool.clone();
    // (intents waiting on the provider, slow charges the provider booked)
    let slow_progress = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM payments WHERE status = 'charging'),
                    (SELECT count(*) FROM provider_ledger WHERE payment_method = $1)",
        )
        .bind(SLOW)
        .fetch_one(&payments)
        .await
        .unwrap()
    };
    // The payment worker's connections doing something: running a
    // statement or holding a transaction open.
    let in_use = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND state IN ('active', 'idle in transaction')",
        )
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap()
    };

    let slow = order(&[("BOOK", 1)], SLOW);
    let slow_ids = futures::future::join_all((0..32).map(|_| deployment.place(&slow))).await;
    // Every slow charge is at the provider, none answered yet: sample the
    // pool in that window, and send a quick checkout through it.
    testing::eventually("all 32 slow charges at the provider", PATIENCE, || async {
        (slow_progress().await == (32, 0)).then_some(())
    })
    .await;
    let quick = deployment
        .place(&order(&[("TSHIRT", 1)], "sim_approve"))
        .await;
    let mut busiest = Vec::new();
    for _ in 0..5 {
        let sample = in_use().await;
        if slow_progress().await.1 == 0 {
            busiest.push(sample);
        }
    }
    testing::eventually("the quick checkout completed", PATIENCE, || async {
        let status: String = sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1::uuid")
            .bind(&quick)
            .fetch_one(&orchestrator)
            .await
            .unwrap();
        (status == "completed").then_some(())
    })
    .await;
    let slow_uuids: Vec<uuid::Uuid> = slow_ids.iter().map(|id| id.parse().unwrap()).collect();
    let slow_open = count_sagas(&orchestrator, &slow_uuids, "status <> 'completed'").await;

    assert!(
        slow_open > 0,
        "the quick checkout finished only after every slow one: it waited behind them"
    );
    assert!(!busiest.is_empty(), "sampled while the provider was slow");
    assert!(
        busiest.iter().all(|n| *n < POOL_SIZE),
        "payment connections in use while the provider sat on 32 charges: {busiest:?}"
    );
    let statuses = deployment.settle().await;
    assert_eq!(statuses.get("completed"), Some(&33), "{statuses:?}");
    assert!(
        deployment.payments().await.iter().all(|p| p.0 == "charged"),
        "every slow charge charged once the provider answered"
    );
    deployment.stop().await;
}
