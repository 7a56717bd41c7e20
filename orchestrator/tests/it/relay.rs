//! The relay judges each publish on its own: a worker queue that is
//! deleted, or that refuses every publish, holds back only its own
//! commands; those that cannot be published for longer than their step
//! allows park their sagas, visible to support, who retry them once the
//! broker accepts again.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use orchestrator::saga::{RetryPolicy, StepPolicies};
use saga_protocol::messages::WorkerKind;
use saga_protocol::Step;
use saga_shared::broker::Broker;
use saga_shared::topology::Topology;
use saga_testkit as testing;
use saga_testkit::metrics::scrape;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::system::{count_sagas, order, System};

const PATIENCE: Duration = Duration::from_secs(90);

/// A connection of the test's own, as an operator's tool would have.
async fn operator(system: &System) -> (Arc<Broker>, lapin::Channel) {
    let broker = Arc::new(
        system
            .connect_broker("test-operator", &CancellationToken::new())
            .await,
    );
    let channel = broker.channel().await.expect("a channel");
    (broker, channel)
}

async fn delete_queue(channel: &lapin::Channel, queue: &str) {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .expect("queue deleted");
}

/// Whether `queue` exists (a passive declare on a throwaway channel: a
/// missing queue closes the channel it was asked on).
async fn queue_exists(broker: &Broker, queue: &str) -> bool {
    let channel = broker.channel().await.expect("a channel");
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let exists = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .is_ok();
    let _ = channel.close(200, "checked".into()).await;
    exists
}

/// `(status, current_step, last_error, deadline_at is set)` of each saga.
async fn sagas(
    system: &System,
    ids: &[String],
) -> Vec<(String, Option<String>, Option<String>, bool)> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    sqlx::query_as(
        "SELECT status, current_step, last_error, deadline_at IS NOT NULL FROM sagas
         WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&uuids)
    .fetch_all(&system.orchestrator_db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_worker_queue_is_declared_again_and_every_checkout_completes() {
    // Short deadlines: the commands inside the deleted queue are lost with
    // it, and their sagas retry once the deadline passes.
    let policy = System::fast_retries_within(6, Duration::from_secs(3));
    let system = System::start_with(StepPolicies::uniform(policy)).await;
    let (operator, channel) = operator(&system).await;
    let topology = Topology::new(&system.prefix);
    let tax_queue = topology.command_queue(WorkerKind::Tax);
    let body = order(&[("TSHIRT", 1)], "sim_approve");

    let mut ids: Vec<String> =
        futures::future::join_all((0..10).map(|_| system.place(&body))).await;
    // Deleted under a running system, with commands in flight.
    delete_queue(&channel, &tax_queue).await;
    ids.extend(futures::future::join_all((0..10).map(|_| system.place(&body))).await);

    system.wait_status(&ids, "completed", PATIENCE).await;
    assert!(
        queue_exists(&operator, &tax_queue).await,
        "the relay declared the tax queue again"
    );
    system.assert_one_tshirt_charge_each(20).await;
    assert_eq!(system.held().await, 20);
    operator.close().await;
    system.stop().await;
}

/// The refused commands support sees, as `(saga_id, routing_key)`.
async fn refused_commands(system: &System) -> Vec<Value> {
    let body = system.admin_read("/v1/admin/outbox").await;
    body["commands"].as_array().unwrap().clone()
}

/// What `sagactl` prints for `args`, run as support would.
async fn sagactl(system: &System, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagactl"))
        .args(args)
        .env("SAGACTL_URL", &system.base_url)
        .env("SAGACTL_TOKEN", crate::system::ADMIN_TOKEN)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("sagactl answers within 30 s")
        .expect("sagactl runs");
    testing::succeeded(&output)
}

/// Replaces the worker's quorum queue with one bound the same way that
/// refuses every publish (`reject-publish` at length 0): what a queue that
/// lost its quorum, or an operator's limit, looks like to a publisher. A
/// quorum queue's own `reject-publish` counts only messages not yet handed
/// to a consumer, so with its worker consuming it never refuses.
async fn make_refusing(channel: &lapin::Channel, topology: &Topology, worker: WorkerKind) {
    let queue = topology.command_queue(worker);
    delete_queue(channel, &queue).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, args)
        .await
        .expect("refusing queue declared");
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.command_exchange().into(),
            format!("{}.*", worker.as_str()).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("refusing queue bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_refuses_every_publish_parks_only_its_sagas_until_support_retries() {
    // Charges retried for as long as the test keeps the provider down
    // (about 100 ms apart, a thousand times).
    let fast = RetryPolicy {
        max_delay: Duration::from_millis(200),
        ..System::fast_retries(1_000)
    };
    // Tax commands may be refused for 4 x 4 s before their sagas park.
    let tax = System::fast_retries_within(4, Duration::from_secs(4));
    let system =
        System::start_with(StepPolicies::uniform(fast).with(Step::CalculateTax, tax)).await;
    let (operator, channel) = operator(&system).await;
    let topology = Topology::new(&system.prefix);
    let tshirt = order(&[("TSHIRT", 1)], "sim_approve");

    // Sagas already past tax, whose charges keep being retried: the
    // provider is down.
    system.outage(true).await;
    let charging: Vec<String> =
        futures::future::join_all((0..3).map(|_| system.place(&tshirt))).await;
    testing::eventually("charges being retried", PATIENCE, || async {
        let uuids: Vec<uuid::Uuid> = charging.iter().map(|id| id.parse().unwrap()).collect();
        let retried = "current_step = 'payment.charge' AND attempt >= 2";
        let n = count_sagas(&system.orchestrator_db.pool, &uuids, retried).await;
        (n == 3).then_some(())
    })
    .await;

    make_refusing(&channel, &topology, WorkerKind::Tax).await;
    let refused: Vec<String> =
        futures::future::join_all((0..3).map(|_| system.place(&tshirt))).await;

    // Support sees the refused commands, and so does the gauge.
    let commands = testing::eventually("refused commands listed", PATIENCE, || async {
        let commands = refused_commands(&system).await;
        (commands.len() == 3).then_some(commands)
    })
    .await;
    let mut listed: Vec<String> = commands
        .iter()
        .map(|c| c["saga_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = refused.clone();
    expected.sort();
    assert_eq!(listed, expected, "{commands:?}");
    for command in &commands {
        assert_eq!(command["routing_key"], "tax.calculate", "{command}");
        assert_eq!(command["attempt"], 1, "{command}");
        assert!(
            command["publish_attempts"].as_i64().unwrap() >= 1,
            "{command}"
        );
        assert!(command["since"].is_string(), "{command}");
        assert!(
            command["last_error"].as_str().unwrap().contains("nack"),
            "{command}"
        );
    }
    let listed_by_sagactl = sagactl(&system, &["outbox"]).await;
    for id in &refused {
        assert!(
            listed_by_sagactl.contains(id.as_str()),
            "{id}: {listed_by_sagactl}"
        );
    }
    assert!(
        listed_by_sagactl.contains("tax.calculate"),
        "{listed_by_sagactl}"
    );
    testing::eventually("the stuck gauge counts them", PATIENCE, || async {
        let metrics = scrape(&system.base_url).await;
        (metrics.value("checkout_outbox_stuck") == Some(3.0)).then_some(())
    })
    .await;
    let (status, _) = system.get("/v1/admin/outbox").await;
    assert_eq!(status, 401, "the outbox list needs a support token");

    // Meanwhile inventory and payment commands of the other sagas flow:
    // the reserves of the refused ones were answered, an out-of-stock
    // checkout is rejected, and the retried charges complete once the
    // provider is back.
    let scarce = system
        .checkout(&order(&[("SCARCE", 2)], "sim_approve"))
        .await;
    assert_eq!(scarce["status"], "rejected", "{scarce}");
    system.outage(false).await;
    system.wait_status(&charging, "completed", PATIENCE).await;
    for (_, step, _, _) in sagas(&system, &refused).await {
        assert_eq!(
            step.as_deref(),
            Some("tax.calculate"),
            "reserved, then stuck at tax"
        );
    }

    // Refused past their allowance, the stuck sagas park for support, and
    // no deadline keeps them waiting.
    system.wait_status(&refused, "suspended", PATIENCE).await;
    for (_, step, error, deadline) in sagas(&system, &refused).await {
        assert_eq!(step.as_deref(), Some("tax.calculate"));
        let error = error.unwrap();
        assert!(error.starts_with("cannot publish: "), "{error}");
        assert!(error.contains("nack"), "{error}");
        assert!(!deadline, "a parked saga awaits no deadline");
    }
    let timeline = system.timeline(&refused[0]).await;
    let events: Vec<&str> = timeline
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["publish_failed", "suspended"]),
        "{events:?}"
    );
    assert!(refused_commands(&system).await.is_empty());
    testing::eventually("the stuck gauge back to 0", PATIENCE, || async {
        let metrics = scrape(&system.base_url).await;
        (metrics.value("checkout_outbox_stuck") == Some(0.0)).then_some(())
    })
    .await;

    // The queue is fixed; support retries, and each completes with one charge.
    delete_queue(&channel, &topology.command_queue(WorkerKind::Tax)).await;
    operator.redeclare().await.expect("topology declared");
    for id in &refused {
        system.retry(id, "tax queue fixed").await;
    }
    system.wait_status(&refused, "completed", PATIENCE).await;
    system.assert_one_tshirt_charge_each(6).await;
    operator.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_judges_each_message_on_its_own() {
    let prefix = testing::random_prefix();
    let _guard = testing::TopologyGuard::new(&prefix);
    let topology = Topology::new(&prefix);
    let broker = Broker::connect(
        &testing::amqp_url(),
        topology.clone(),
        "test-publisher",
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let channel = broker.channel().await.unwrap();
    make_refusing(&channel, &topology, WorkerKind::Tax).await;
    let command = |routing_key: &str| saga_shared::broker::Outgoing {
        exchange: topology.command_exchange(),
        routing_key: routing_key.to_owned(),
        body: b"{}".to_vec(),
        message_id: uuid::Uuid::now_v7(),
        saga_id: uuid::Uuid::now_v7(),
        message_type: routing_key.to_owned(),
        traceparent: String::new(),
    };
    let results = broker
        .publish_all(
            &[
                command("inventory.reserve"),
                command("nobody.listens"),
                command("tax.calculate"),
                command("payment.charge"),
            ],
            Duration::from_secs(5),
        )
        .await;
    let judged: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_owned(),
        })
        .collect();
    assert_eq!(
        judged,
        vec!["ok", "Unroutable", "Nacked", "ok"],
        "{results:?}"
    );
    assert_eq!(results.iter().flatten().count(), 2);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.is_refusal()));
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_timer_parks_a_saga_whose_command_was_refused_past_its_allowance() {
    // The reserve's allowance is 1,000 x 1 s: the relay alone would keep
    // trying for a quarter of an hour.
    let reserve = System::fast_retries_within(1_000, Duration::from_secs(1));
    let system = System::start_with(StepPolicies::default().with(Step::Reserve, reserve)).await;
    let (operator, channel) = operator(&system).await;
    let topology = Topology::new(&system.prefix);
    make_refusing(&channel, &topology, WorkerKind::Inventory).await;
    let id = system.place(&order(&[("TSHIRT", 1)], "sim_approve")).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let pool = &system.orchestrator_db.pool;
    testing::eventually("the reserve refused", PATIENCE, || async {
        let refusals: Option<i32> =
            sqlx::query_scalar("SELECT publish_attempts FROM outbox WHERE saga_id = $1")
                .bind(uuid)
                .fetch_optional(pool)
                .await
                .unwrap();
        refusals.is_some_and(|n| n >= 1).then_some(())
    })
    .await;
    // As if refused for an hour, with the relay's next try an hour away:
    // the deadline timer must not push the saga's deadline back again.
    // The relay claims a row by deleting it until the broker has answered
    // and then puts a refused one back: an edit that lands meanwhile finds
    // no row and is tried again.
    testing::eventually("the outbox row edited", PATIENCE, || async {
        let edited = sqlx::query(
            "UPDATE outbox SET first_failed_at = now() - interval '1 hour',
                               not_before = now() + interval '1 hour'
             WHERE saga_id = $1",
        )
        .bind(uuid)
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
        (edited == 1).then_some(())
    })
    .await;
    system
        .wait_status(std::slice::from_ref(&id), "suspended", PATIENCE)
        .await;
    let (_, step, error, deadline) = sagas(&system, std::slice::from_ref(&id)).await.remove(0);
    assert_eq!(step.as_deref(), Some("inventory.reserve"));
    let error = error.unwrap();
    assert!(error.starts_with("cannot publish: "), "{error}");
    assert!(error.contains("nack"), "{error}");
    assert!(!deadline, "a parked saga awaits no deadline");
    assert!(refused_commands(&system).await.is_empty());

    delete_queue(&channel, &topology.command_queue(WorkerKind::Inventory)).await;
    operator.redeclare().await.expect("topology declared");
    system.retry(&id, "inventory queue fixed").await;
    system
        .wait_status(std::slice::from_ref(&id), "completed", PATIENCE)
        .await;
    system.assert_one_tshirt_charge_each(1).await;
    operator.close().await;
    system.stop().await;
}
