//! RabbitMQ nodes die under a running system (a three-node cluster from
//! `scripts/cluster`, every process given all three URLs): nothing is lost
//! or doubled, and everything completes.

use std::time::Duration;

use futures::future::join_all;
use saga_testkit as testing;
use serde_json::Value;

use orchestrator::saga::{RetryPolicy, StepPolicies};

use crate::cluster::RabbitCluster;
use crate::system::{order, Setup, System};

const PATIENCE: Duration = Duration::from_secs(120);

/// Every process on the cluster's three nodes. A command the broker
/// refuses may wait longer than the test's patience before its saga parks:
/// a node restarted on a loaded machine has taken more than the default
/// allowance (5 attempts x 10 s) to take commands again, and these tests
/// are about waiting for it, not about parking.
async fn on_cluster(cluster: &RabbitCluster) -> System {
    let patient = RetryPolicy {
        max_attempts: 2 * PATIENCE.as_secs() as u32 / 10,
        deadline: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    assert!(patient.publish_allowance() > PATIENCE);
    System::start_setup(Setup {
        amqp_url: Some(cluster.amqp_url.clone()),
        policies: StepPolicies::uniform(patient),
        ..Setup::default()
    })
    .await
}

async fn place(system: &System, n: usize) -> Vec<String> {
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    join_all((0..n).map(|_| system.place(&body))).await
}

/// Each checkout charged exactly once (a TSHIRT with tax: 2 145), none
/// refunded, stock taken once each, and the auditor content.
async fn each_once(system: &System, checkouts: usize) {
    system.assert_one_tshirt_charge_each(checkouts).await;
    assert_eq!(system.available("TSHIRT").await, 100 - checkouts as i32);
    system.audit().await;
}

async fn readyz_until(system: &System, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    testing::eventually(what, PATIENCE, || async {
        let (status, body) = system.get("/readyz").await;
        check(status, &body).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_that_leads_the_command_queues_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let system = on_cluster(&cluster).await;
    let mut ids = place(&system, 20).await;
    // With those in flight, the leader of the first step's queue dies.
    let leader = cluster
        .leader(&format!("{}inventory.commands", system.prefix))
        .await;
    cluster.kill(leader).await;
    ids.extend(place(&system, 20).await);

    system.wait_status(&ids, "completed", PATIENCE).await;
    each_once(&system, 40).await;
    let ready = readyz_until(&system, "ready on a live node", |status, _| status == 200).await;
    assert_eq!(ready["checks"]["broker"], "up", "{ready}");
    assert_ne!(
        ready["broker_node"],
        RabbitCluster::address(leader),
        "{ready}"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_node_down_for_the_whole_run_everything_works() {
    let cluster = RabbitCluster::start().await;
    cluster.kill(3).await;
    let system = on_cluster(&cluster).await;
    let ids = place(&system, 20).await;
    system.wait_status(&ids, "completed", PATIENCE).await;
    each_once(&system, 20).await;
    let (status, ready) = system.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_ne!(ready["broker_node"], RabbitCluster::address(3), "{ready}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_nodes_down_checkouts_wait_in_the_outbox_until_one_returns() {
    let cluster = RabbitCluster::start().await;
    let system = on_cluster(&cluster).await;
    let mut ids = place(&system, 5).await;
    system.wait_status(&ids, "completed", PATIENCE).await;

    cluster.kill(2).await;
    cluster.kill(3).await;
    // Still accepted: their commands wait in the outbox, refused by the
    // one node left (no queue has a majority).
    let during = place(&system, 10).await;
    let degraded = readyz_until(&system, "broker degraded", |_, body| {
        body["checks"]["broker"] == "degraded"
    })
    .await;
    assert_eq!(
        degraded["broker_node"],
        RabbitCluster::address(1),
        "{degraded}"
    );
    assert!(
        degraded["broker_degraded"]["since"].is_string(),
        "{degraded}"
    );
    let (status, _) = system.get("/readyz").await;
    assert_eq!(status, 200, "a degraded broker still takes checkouts");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&system.orchestrator_db.pool)
        .await
        .unwrap();
    assert!(waiting > 0, "commands wait in the outbox");
    ids.extend(during);

    cluster.start_node(2).await;
    system.wait_status(&ids, "completed", PATIENCE).await;
    each_once(&system, 15).await;
    readyz_until(&system, "broker up again", |status, body| {
        status == 200 && body["checks"]["broker"] == "up"
    })
    .await;
    system.stop().await;
}
