//! `GET /metrics`: Prometheus text an operator can alert on.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use saga_testkit as testing;
use saga_testkit::metrics::{scrape, Metrics};

use crate::system::{order, System};

/// Scrapes until the gauges count `completed` completed sagas (they are
/// re-counted every few seconds, not at each scrape).
async fn scrape_counting(system: &System, completed: f64) -> Metrics {
    testing::eventually(
        "the saga gauges refreshed",
        Duration::from_secs(20),
        || async {
            let metrics = scrape(&system.base_url).await;
            (metrics.value(r#"checkout_sagas{status="completed"}"#) == Some(completed))
                .then_some(metrics)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sagas_by_status_and_what_the_orchestrator_did() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(2))).await;
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed");
    system.park(&order(&[("BOOK", 1)], "sim_approve")).await;

    let response = system.fetch("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    drop(response);
    // From this system's database: exact, once counted.
    let metrics = testing::eventually(
        "the saga gauges refreshed",
        Duration::from_secs(20),
        || async {
            let metrics = scrape(&system.base_url).await;
            (metrics.value(r#"checkout_sagas{status="suspended"}"#) == Some(1.0)).then_some(metrics)
        },
    )
    .await;
    assert_eq!(
        metrics.value(r#"checkout_sagas{status="completed"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metrics.value(r#"checkout_sagas{status="cancelled"}"#),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metrics.value("checkout_outbox_pending"),
        Some(0.0),
        "{metrics}"
    );
    // Counters of the process (shared with the other tests running in it).
    for series in [
        "checkout_sagas_started_total",
        r#"checkout_sagas_finished_total{status="completed"}"#,
        r#"checkout_sagas_suspended_total{step="payment.charge"}"#,
        "checkout_outbox_published_total",
    ] {
        assert!(
            metrics.value(series).is_some_and(|n| n >= 1.0),
            "{series}: {metrics}"
        );
    }
    system.outage(false).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_serves_the_last_counts_without_counting_the_tables() {
    let system = System::start().await;
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed");
    scrape_counting(&system, 1.0).await;

    // Counting the sagas now would wait behind this lock; a scrape still
    // answers at once, with the gauges as last counted.
    let mut blocker = system.orchestrator_db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut scrapes = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let scraped = tokio::time::timeout(Duration::from_secs(3), scrape(&system.base_url)).await;
        scrapes.push((started.elapsed(), scraped));
    }
    blocker.rollback().await.unwrap();
    for (took, scraped) in scrapes {
        let metrics = scraped.expect("a scrape answers while the sagas table is locked");
        assert!(took < Duration::from_secs(1), "a scrape took {took:?}");
        assert_eq!(
            metrics.value(r#"checkout_sagas{status="completed"}"#),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metrics.value("checkout_long_polls_waiting"),
            Some(0.0),
            "{metrics}"
        );
    }
    system.stop().await;
}
