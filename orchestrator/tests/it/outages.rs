//! The broker and the database go away and come back (through a proxy the
//! test cuts, so only this test's system sees the outage): nothing is lost
//! or doubled, the API says what is down, and everything resumes.

use std::time::Duration;

use saga_testkit as testing;
use serde_json::Value;

use orchestrator::saga::StepPolicies;

use crate::system::{count_sagas, order, Setup, System};

const PATIENCE: Duration = Duration::from_secs(60);

async fn readyz(system: &System) -> (u16, Value) {
    system.get("/readyz").await
}

async fn wait_ready(system: &System, ready: bool) -> Value {
    testing::eventually(
        if ready { "ready" } else { "not ready" },
        PATIENCE,
        || async {
            let (status, body) = readyz(system).await;
            ((status == 200) == ready).then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_and_doubles_nothing() {
    // Short deadlines: the outage outlasts several of them.
    let policy = System::fast_retries_within(10, Duration::from_millis(1_000));
    let system = System::start_setup(Setup {
        broker_proxy: true,
        policies: StepPolicies::uniform(policy),
        ..Setup::default()
    })
    .await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let mut ids: Vec<String> =
        futures::future::join_all((0..10).map(|_| system.place(&body))).await;

    // The broker goes away with those in flight.
    system.broker_proxy.as_ref().unwrap().cut();
    let down = wait_ready(&system, false).await;
    assert_eq!(down["checks"]["broker"], "down", "{down}");
    assert_eq!(down["checks"]["database"], "up", "{down}");
    // Checkouts are still taken: their commands wait in the outbox.
    let during: Vec<String> = futures::future::join_all((0..10).map(|_| system.place(&body))).await;
    // A command that was never sent has not missed its deadline: the
    // deadline moves on rather than burning attempts.
    let uuids: Vec<uuid::Uuid> = during.iter().map(|id| id.parse().unwrap()).collect();
    testing::eventually("deadlines pushed back twice", PATIENCE, || async {
        let pool = &system.orchestrator_db.pool;
        let pushed_back = "deadline_at > created_at + interval '2500 milliseconds'";
        let pushed = count_sagas(pool, &uuids, pushed_back).await;
        (pushed == 10).then_some(())
    })
    .await;
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempt) FROM sagas WHERE id = ANY($1)")
        .bind(&uuids)
        .fetch_one(&system.orchestrator_db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "no attempt spent while nothing could be sent");
    ids.extend(during);

    system.broker_proxy.as_ref().unwrap().restore();
    wait_ready(&system, true).await;
    system.wait_status(&ids, "completed", PATIENCE).await;
    system.assert_one_tshirt_charge_each(20).await;
    assert_eq!(system.held().await, 20);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_then_everything_resumes() {
    let system = System::start_setup(Setup {
        database_proxy: true,
        ..Setup::default()
    })
    .await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let mut ids: Vec<String> =
        futures::future::join_all((0..10).map(|_| system.place(&body))).await;

    let proxy = system.database_proxy.as_ref().unwrap();
    proxy.cut();
    let down = wait_ready(&system, false).await;
    assert_eq!(down["checks"]["database"], "down", "{down}");
    assert_eq!(down["checks"]["broker"], "up", "{down}");
    let (status, problem) = system.post(&body, None).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:checkout-saga:problem:unavailable");
    let (status, problem) = system.get(&format!("/v1/checkouts/{}", ids[0])).await;
    assert_eq!(status, 503, "{problem}");

    proxy.restore();
    wait_ready(&system, true).await;
    ids.extend(futures::future::join_all((0..10).map(|_| system.place(&body))).await);
    system.wait_status(&ids, "completed", PATIENCE).await;
    system.assert_one_tshirt_charge_each(20).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_share_the_work_and_advance_each_saga_once() {
    let mut system = System::start().await;
    let second = system.add_orchestrator().await;
    let first = system.base_url.clone();
    let body = order(&[("TSHIRT", 1)], "sim_transient_1");
    // Half the checkouts through each instance; both consume replies and
    // relay the outbox.
    let mut ids = Vec::new();
    for i in 0..40 {
        let base = if i % 2 == 0 { &first } else { &second };
        let response = system
            .http
            .post(format!("{base}/v1/checkouts"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let created: Value = response.json().await.unwrap();
        ids.push(created["checkout_id"].as_str().unwrap().to_owned());
    }
    system.wait_status(&ids, "completed", PATIENCE).await;
    system.assert_one_tshirt_charge_each(40).await;
    // Each attempt was sent once and answered once: no transition was
    // applied twice.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT saga_id, step, attempt, event FROM saga_events
         WHERE event IN ('sent', 'ok', 'transient') GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d",
    )
    .fetch_one(&system.orchestrator_db.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    // Long-polls on one instance see sagas finished by the other.
    let (status, done) = system
        .get(&format!("/v1/checkouts/{}?wait=5", ids[1]))
        .await;
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));
    system.stop().await;
}
