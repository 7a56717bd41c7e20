//! Support input the database cannot take is the user's mistake (422
//! naming the field), and a bulk retry takes exactly the group it names.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use serde_json::{json, Value};

use crate::answers::{fields, strings};
use crate::system::{order, System};

const PARK_WAIT: Duration = Duration::from_secs(60);
const OUTAGE: &str = "payment provider outage";

/// Checkouts parked at `payment.charge` by an outage.
async fn parked_by_outage(system: &System, n: usize) -> Vec<String> {
    let ids = system
        .park_each(&order(&[("BOOK", 1)], "sim_approve"), n)
        .await;
    system.outage(false).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_support_input_are_422_naming_the_field() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(1))).await;
    let parked = parked_by_outage(&system, 1).await.remove(0);

    let group = |error: &str| json!({"step": "payment.charge", "phase": "forward", "error": error});
    let mut cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            "/v1/admin/sagas/retry".into(),
            Some({
                let mut dry = group("\u{0}");
                dry["dry_run"] = json!(true);
                dry
            }),
            "error",
        ),
        (
            "POST",
            "/v1/admin/sagas/retry".into(),
            Some({
                let mut real = group(OUTAGE);
                real["reason"] = json!("provider back\u{0}");
                real
            }),
            "reason",
        ),
        (
            "POST",
            format!("/v1/admin/sagas/{parked}/retry"),
            Some(json!({"reason": "provider back\u{0}"})),
            "reason",
        ),
        (
            "POST",
            format!("/v1/admin/sagas/{parked}/cancel"),
            Some(json!({"reason": "customer asked\u{1b}[31m"})),
            "reason",
        ),
        ("GET", "/v1/admin/sagas?error=%00".into(), None, "error"),
        (
            "GET",
            "/v1/admin/sagas?error=out%1Bage".into(),
            None,
            "error",
        ),
        ("GET", "/v1/admin/sagas?cursor=%00".into(), None, "cursor"),
        (
            "GET",
            "/v1/admin/dead-letters?saga_id=%00".into(),
            None,
            "saga_id",
        ),
    ];
    for (method, path, body, field) in cases.drain(..) {
        let (status, problem) = system.admin(method, &path, body.clone()).await;
        assert_eq!(status, 422, "{method} {path} {body:?}: {problem}");
        assert_eq!(fields(&problem), [field], "{method} {path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("control characters"),
            "{problem}"
        );
    }
    // Nothing was done to the saga meanwhile.
    assert_eq!(system.saga_status(&parked).await, "suspended");
    system.cancel(&parked).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_takes_exactly_the_group_it_names() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(1))).await;
    // Two groups at the same step: a provider that is down, and an outage.
    let down = system.place(&order(&[("BOOK", 1)], "sim_down")).await;
    system
        .wait_status(std::slice::from_ref(&down), "suspended", PARK_WAIT)
        .await;
    let outage = parked_by_outage(&system, 2).await;
    let (_, failures) = system.admin("GET", "/v1/admin/failures", None).await;
    let errors = strings(&failures["groups"], "error");
    assert_eq!(errors.len(), 2, "{failures}");
    assert!(errors.contains(&OUTAGE), "{failures}");

    let dry_run = |error: &str| json!({"step": "payment.charge", "phase": "forward", "error": error, "dry_run": true});
    // An empty or partial error names no group here: it never widens to
    // every saga at that step.
    for error in [
        "",
        "outage",
        "PAYMENT PROVIDER OUTAGE",
        " payment provider outage",
    ] {
        let (status, preview) = system.bulk_retry(dry_run(error)).await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(preview["count"], 0, "error {error:?} selected {preview}");
    }
    // A group needs all of its key; nothing at all is not "everything".
    for body in [
        json!({"step": "payment.charge", "phase": "forward", "reason": "r"}),
        json!({"step": "payment.charge", "error": OUTAGE, "reason": "r"}),
        json!({"dry_run": true}),
    ] {
        let (status, problem) = system.bulk_retry(body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    let (status, problem) = system
        .bulk_retry(
            json!({"step": "payment.charge", "phase": "forward", "error": OUTAGE,
                        "saga_ids": [down], "reason": "r"}),
        )
        .await;
    assert_eq!(
        (status, fields(&problem)),
        (422, vec!["saga_ids"]),
        "{problem}"
    );

    // Ids up to the bulk bound fit in one body (beyond the usual 64 KiB).
    let many: Vec<uuid::Uuid> = (0..10_000).map(|_| uuid::Uuid::now_v7()).collect();
    let (status, none) = system
        .bulk_retry(json!({"saga_ids": many, "dry_run": true}))
        .await;
    assert_eq!((status, none["count"].clone()), (200, json!(0)), "{none}");
    let mut too_many = many;
    too_many.push(uuid::Uuid::now_v7());
    let (status, problem) = system
        .bulk_retry(json!({"saga_ids": too_many, "dry_run": true}))
        .await;
    assert_eq!(
        (status, fields(&problem)),
        (422, vec!["saga_ids"]),
        "{problem}"
    );

    // The exact group: its two sagas, listed by the dry run, then retried.
    let (_, preview) = system.bulk_retry(dry_run(OUTAGE)).await;
    let mut listed: Vec<String> = preview["saga_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = outage.clone();
    expected.sort();
    assert_eq!(listed, expected, "{preview}");
    let (status, retried) = system
        .bulk_retry(json!({"saga_ids": listed, "reason": "provider back"}))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["count"], 2, "{retried}");
    system.wait_status(&outage, "completed", PARK_WAIT).await;
    assert_eq!(system.saga_status(&down).await, "suspended");

    // The ids of sagas no longer suspended are skipped, not retried twice.
    let (_, again) = system
        .bulk_retry(json!({"saga_ids": outage, "reason": "once more"}))
        .await;
    assert_eq!(again["count"], 0, "{again}");

    system.cancel(&down).await;
    system.stop().await;
}
