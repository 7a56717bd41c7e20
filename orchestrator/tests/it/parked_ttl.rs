//! A parked saga holds its stock until someone acts: past
//! `PARKED_SAGA_TTL` the orchestrator is that someone, and cancels it with
//! compensation, saying why in its timeline. Support can give one saga
//! more time.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use serde_json::{json, Value};

use crate::system::{order, Setup, System, ADMIN_ACTOR};

const TTL: Duration = Duration::from_secs(3);

fn events(timeline: &[Value]) -> Vec<(String, String)> {
    timeline
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_park_past_its_ttl_is_cancelled_with_compensation_unless_extended() {
    let system = System::start_setup(Setup {
        policies: StepPolicies::uniform(System::fast_retries(2)),
        parked_saga_ttl: Some(TTL),
        ..Setup::default()
    })
    .await;
    let before = system.available("MUG").await;
    // The provider is down: both charges exhaust their attempts and park,
    // each holding its mug.
    let both = system
        .park_each(&order(&[("MUG", 1)], "sim_approve"), 2)
        .await;
    let (expiring, extended) = (both[0].clone(), both[1].clone());

    // Support extends it with sagactl, as an operator would.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagactl"))
        .args([
            "extend",
            &extended,
            "--by",
            "1h",
            "--reason",
            "the customer called; provider back soon",
        ])
        .env("SAGACTL_URL", &system.base_url)
        .env("SAGACTL_TOKEN", crate::system::ADMIN_TOKEN)
        .output()
        .await
        .expect("sagactl runs");
    let stdout = saga_testkit::succeeded(&run);
    assert!(
        stdout.starts_with(&format!("saga {extended} parked until ")),
        "{stdout}"
    );
    system.outage(false).await;

    // The other one outlives its limit: released and refunded (nothing was
    // charged), and it says why.
    let done = system.wait_final(&expiring).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let timeline = events(&system.timeline(&expiring).await);
    assert!(
        timeline.contains(&(
            "park_expired".to_owned(),
            "parked longer than PARKED_SAGA_TTL (3s); cancelling with compensation".to_owned()
        )),
        "{timeline:?}"
    );
    assert_eq!(system.available("MUG").await, before - 1, "one mug back");

    // The extended one is still parked, past the same limit, and its
    // timeline has who extended it and why.
    assert_eq!(system.saga_status(&extended).await, "suspended");
    let timeline = system.timeline(&extended).await;
    let extension = timeline
        .iter()
        .find(|e| e["event"] == "park_extended")
        .unwrap_or_else(|| panic!("{timeline:?}"));
    assert_eq!(extension["detail"], "time limit extended by 1h");
    assert_eq!(extension["actor"], ADMIN_ACTOR);

    // Only a parked saga has a limit to extend; a duration is required.
    for (id, extension, answer) in [
        (&expiring, json!({"by": "1h", "reason": "too late"}), 409),
        (&extended, json!({"by": "soon", "reason": "x"}), 422),
    ] {
        let path = format!("/v1/admin/sagas/{id}/extend-park");
        let (status, problem) = system.admin("POST", &path, Some(extension)).await;
        assert_eq!(status, answer, "{id}: {problem}");
    }

    // Support ends it the ordinary way.
    system.retry(&extended, "provider back").await;
    assert_eq!(system.wait_final(&extended).await["status"], "completed");
    system.stop().await;
}
