//! A RabbitMQ resource alarm (memory or disk watermark) blocks every
//! publishing connection. Raising a real alarm on the shared broker would
//! block every other test's connections too, so a proxy in front of it
//! plays the broker's part: it slips `connection.blocked` and
//! `connection.unblocked` frames into what the broker sends, which the
//! client handles exactly as it would the broker's own.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use saga_protocol::Step;
use saga_testkit as testing;
use saga_testkit::metrics::scrape;
use saga_testkit::proxy::{Proxy, Wire};
use serde_json::Value;

use crate::system::{order, Setup, System};

/// A proxy in front of the shared broker that can raise and clear an
/// alarm on the connections through it.
struct AlarmProxy(Proxy);

/// An AMQP method frame on channel 0 of `class`.`method` with `arguments`.
fn connection_frame(method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&10u16.to_be_bytes()); // class: connection
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![1u8, 0, 0]; // method frame, channel 0
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

impl AlarmProxy {
    async fn start() -> AlarmProxy {
        AlarmProxy(Proxy::start_framed("127.0.0.1:5672", Wire::Amqp).await)
    }

    fn url(&self) -> String {
        self.0.url_for(&testing::amqp_url(), 5672)
    }

    /// What RabbitMQ sends every publishing connection when an alarm is raised.
    fn block(&self, reason: &str) {
        let mut arguments = vec![reason.len() as u8];
        arguments.extend_from_slice(reason.as_bytes());
        self.0.inject(connection_frame(60, &arguments));
    }

    /// ... and when it clears.
    fn unblock(&self) {
        self.0.inject(connection_frame(61, &[]));
    }
}

async fn readyz(system: &System) -> (u16, Value) {
    system.get("/readyz").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_alarm_shows_in_readyz_and_metrics_and_checkouts_complete_once_it_clears() {
    let proxy = AlarmProxy::start().await;
    // A short publish allowance (2 attempts of 1.5 s): a relay that took
    // publishes the alarm holds for refusals would park the saga before
    // the alarm clears.
    let reserve = System::fast_retries_within(2, Duration::from_millis(1_500));
    let system = System::start_setup(Setup {
        policies: StepPolicies::default().with(Step::Reserve, reserve),
        amqp_url: Some(proxy.url()),
        ..Setup::default()
    })
    .await;
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed");
    let (status, body) = readyz(&system).await;
    assert_eq!(
        (status, &body["checks"]["broker"]),
        (200, &"up".into()),
        "{body}"
    );
    assert_eq!(
        scrape(&system.base_url)
            .await
            .value("checkout_broker_blocked"),
        Some(0.0)
    );

    proxy.block("low on memory");
    let body = testing::eventually("/readyz says blocked", Duration::from_secs(10), || async {
        let (status, body) = readyz(&system).await;
        (body["checks"]["broker"] == "blocked").then_some((status, body))
    })
    .await;
    // Still ready: checkouts are accepted, and wait for the broker.
    assert_eq!(body.0, 200, "{}", body.1);
    assert_eq!(body.1["status"], "ready");
    assert_eq!(body.1["checks"]["database"], "up");
    assert_eq!(body.1["broker_blocked"]["reason"], "low on memory");
    assert!(body.1["broker_blocked"]["since"].is_string(), "{}", body.1);
    assert_eq!(
        scrape(&system.base_url)
            .await
            .value("checkout_broker_blocked"),
        Some(1.0)
    );

    let id = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    // The alarm lasts past the confirm wait (5 s) and the step's publish
    // allowance (3 s): only a window of time shows that nothing happened
    // meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut tx = system.orchestrator_db.pool.begin().await.unwrap();
    // The relay holds the outbox without sitting in a transaction on its
    // row (a publish into a blocked connection waits for the alarm to
    // clear): another instance could take the row, and no refusal counted.
    let waiting: Option<(i32, bool)> = sqlx::query_as(
        "SELECT publish_attempts, first_failed_at IS NOT NULL FROM outbox
         WHERE saga_id = $1::uuid FOR UPDATE SKIP LOCKED",
    )
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        waiting,
        Some((0, false)),
        "the command waits unlocked and unrefused"
    );
    assert_eq!(system.saga_status(&id).await, "running");

    proxy.unblock();
    assert_eq!(system.wait_final(&id).await["status"], "completed");
    let (status, body) = readyz(&system).await;
    assert_eq!(
        (status, &body["checks"]["broker"]),
        (200, &"up".into()),
        "{body}"
    );
    assert!(body.get("broker_blocked").is_none(), "{body}");
    assert_eq!(
        scrape(&system.base_url)
            .await
            .value("checkout_broker_blocked"),
        Some(0.0)
    );
    system.stop().await;
}
