//! `GET /metrics`: Prometheus text an operator can alert on.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use saga_shared::testing;

use crate::system::{order, System};

/// The value of the first sample line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(system: &System) -> String {
    let response = system
        .http
        .get(format!("{}/metrics", system.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Scrapes until the gauges count `completed` completed sagas (they are
/// re-counted every few seconds, not at each scrape).
async fn scrape_counting(system: &System, completed: f64) -> String {
    testing::eventually(
        "the saga gauges refreshed",
        Duration::from_secs(20),
        || async {
            let text = scrape(system).await;
            (sample(&text, r#"checkout_sagas{status="completed"}"#) == Some(completed))
                .then_some(text)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sagas_by_status_and_what_the_orchestrator_did() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(2))).await;
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed");
    system.outage(true).await;
    let parked = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    system
        .wait_status(
            std::slice::from_ref(&parked),
            "suspended",
            Duration::from_secs(60),
        )
        .await;

    let response = system
        .http
        .get(format!("{}/metrics", system.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    drop(response);
    // From this system's database: exact, once counted.
    let text = testing::eventually(
        "the saga gauges refreshed",
        Duration::from_secs(20),
        || async {
            let text = scrape(&system).await;
            (sample(&text, r#"checkout_sagas{status="suspended"}"#) == Some(1.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(
        sample(&text, r#"checkout_sagas{status="completed"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"checkout_sagas{status="cancelled"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "checkout_outbox_pending"),
        Some(0.0),
        "{text}"
    );
    // Counters of the process (shared with the other tests running in it).
    for series in [
        "checkout_sagas_started_total",
        r#"checkout_sagas_finished_total{status="completed"}"#,
        r#"checkout_sagas_suspended_total{step="payment.charge"}"#,
        "checkout_outbox_published_total",
    ] {
        assert!(
            sample(&text, series).is_some_and(|n| n >= 1.0),
            "{series}: {text}"
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
        let text = tokio::time::timeout(Duration::from_secs(3), scrape(&system)).await;
        scrapes.push((started.elapsed(), text));
    }
    blocker.rollback().await.unwrap();
    for (took, text) in scrapes {
        let text = text.expect("a scrape answers while the sagas table is locked");
        assert!(took < Duration::from_secs(1), "a scrape took {took:?}");
        assert_eq!(
            sample(&text, r#"checkout_sagas{status="completed"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "checkout_long_polls_waiting"),
            Some(0.0),
            "{text}"
        );
    }
    system.stop().await;
}
