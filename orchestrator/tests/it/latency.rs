//! The latency histograms and the replies counter on `GET /metrics`,
//! timed from what the database keeps: a checkout started on one
//! orchestrator instance and finished on a restarted one is still timed
//! from its POST.

use std::time::Duration;

use saga_testkit as testing;
use saga_testkit::metrics::{scrape, Metrics};

use crate::system::{order, Setup, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_finished_by_a_restarted_instance_is_timed_from_its_post() {
    let mut system = System::start().await;
    let before = scrape(&system.base_url).await;

    // The payment provider answers after 3 s; meanwhile the instance that
    // took the POST stops, and a new one applies the reply.
    let id = system.place(&order(&[("BOOK", 1)], "sim_slow_3000")).await;
    system
        .wait_status(
            std::slice::from_ref(&id),
            "running",
            Duration::from_secs(10),
        )
        .await;
    testing::eventually("the charge sent", Duration::from_secs(10), || async {
        let step: Option<String> =
            sqlx::query_scalar("SELECT current_step FROM sagas WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&system.orchestrator_db.pool)
                .await
                .unwrap();
        (step.as_deref() == Some("payment.charge")).then_some(())
    })
    .await;
    system.stop_orchestrator().await;
    system.start_orchestrator().await;
    assert_eq!(system.wait_final(&id).await["status"], "completed");

    let declined = system.checkout(&order(&[("BOOK", 1)], "sim_decline")).await;
    assert_eq!(declined["status"], "rejected");
    let after = scrape(&system.base_url).await;

    // POST to final: over 3 s (the slow charge), well under 10 s.
    let duration = |le: &str| {
        after.growth_since(
            &before,
            &format!(r#"checkout_duration_seconds_bucket{{status="completed",le="{le}"}}"#),
        )
    };
    assert!(
        duration("10") - duration("2.5") >= 1.0,
        "no completed checkout timed between 2.5 s and 10 s:\n{after}"
    );
    assert!(
        after.growth_since(
            &before,
            r#"checkout_duration_seconds_count{status="compensated"}"#
        ) >= 1.0,
        "{after}"
    );
    // The charge's round trip: over 2.5 s, under its 10 s deadline.
    let charge = |le: &str| {
        after.growth_since(
            &before,
            &format!(
                r#"checkout_step_round_trip_seconds_bucket{{step="payment.charge",le="{le}"}}"#
            ),
        )
    };
    assert!(
        charge("10") - charge("2.5") >= 1.0,
        "no charge timed between 2.5 s and 10 s:\n{after}"
    );
    for series in [
        r#"checkout_step_round_trip_seconds_count{step="inventory.reserve"}"#,
        r#"checkout_step_round_trip_seconds_count{step="tax.calculate"}"#,
        r#"checkout_step_round_trip_seconds_count{step="inventory.release"}"#,
        r#"checkout_replies_total{step="payment.charge",outcome="ok"}"#,
        r#"checkout_replies_total{step="payment.charge",outcome="rejected"}"#,
        r#"checkout_replies_total{step="inventory.reserve",outcome="ok"}"#,
        "checkout_relay_publish_seconds_count",
    ] {
        assert!(
            after.growth_since(&before, series) >= 1.0,
            "{series}:\n{after}"
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_unsent_command_ages_while_the_broker_is_away() {
    let system = System::start_setup(Setup {
        broker_proxy: true,
        ..Setup::default()
    })
    .await;
    // Left out of a scrape until the database gauges are first counted.
    let oldest = |metrics: Metrics| metrics.value("checkout_outbox_oldest_due_seconds");
    let settled = testing::eventually(
        "the outbox gauges counted",
        Duration::from_secs(20),
        || async { oldest(scrape(&system.base_url).await) },
    )
    .await;
    assert_eq!(settled, 0.0);

    system.broker_proxy.as_ref().unwrap().cut();
    let id = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    testing::eventually(
        "the unsent command is seen ageing",
        Duration::from_secs(30),
        || async { (oldest(scrape(&system.base_url).await)? >= 2.0).then_some(()) },
    )
    .await;

    system.broker_proxy.as_ref().unwrap().restore();
    assert_eq!(system.wait_final(&id).await["status"], "completed");
    testing::eventually(
        "the outbox empty again",
        Duration::from_secs(20),
        || async { (oldest(scrape(&system.base_url).await)? == 0.0).then_some(()) },
    )
    .await;
    system.stop().await;
}
