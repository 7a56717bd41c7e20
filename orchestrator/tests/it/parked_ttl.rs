//! A parked saga holds its stock until someone acts: past
//! `PARKED_SAGA_TTL` the orchestrator is that someone, and cancels it with
//! compensation, saying why in its timeline. Support can give one saga
//! more time.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use serde_json::{json, Value};

use crate::system::{order, Setup, System, ADMIN_ACTOR};

const PATIENCE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3);

fn events(view: &Value) -> Vec<(String, String)> {
    view["timeline"]
        .as_array()
        .unwrap()
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
    system.outage(true).await;
    let expiring = system.place(&order(&[("MUG", 1)], "sim_approve")).await;
    let extended = system.place(&order(&[("MUG", 1)], "sim_approve")).await;
    let both = [expiring.clone(), extended.clone()];
    system.wait_status(&both, "suspended", PATIENCE).await;

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
    let (_, view) = system
        .admin("GET", &format!("/v1/admin/sagas/{expiring}"), None)
        .await;
    let timeline = events(&view);
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
    let (_, view) = system
        .admin("GET", &format!("/v1/admin/sagas/{extended}"), None)
        .await;
    let extension = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "park_extended")
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(extension["detail"], "time limit extended by 1h");
    assert_eq!(extension["actor"], ADMIN_ACTOR);

    // Only a parked saga has a limit to extend; a duration is required.
    let (status, problem) = system
        .admin(
            "POST",
            &format!("/v1/admin/sagas/{expiring}/extend-park"),
            Some(json!({"by": "1h", "reason": "too late"})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = system
        .admin(
            "POST",
            &format!("/v1/admin/sagas/{extended}/extend-park"),
            Some(json!({"by": "soon", "reason": "x"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");

    // Support ends it the ordinary way.
    system.retry(&extended, "provider back").await;
    assert_eq!(system.wait_final(&extended).await["status"], "completed");
    system.stop().await;
}
