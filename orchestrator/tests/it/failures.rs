//! Failure paths: transient replies, missed deadlines, outages, parked
//! sagas, support retries and cancels, and a restart with retries pending.

use std::time::Duration;

use orchestrator::saga::{OnExhausted, RetryPolicy, StepPolicies};
use saga_protocol::Step;
use serde_json::{json, Value};

use crate::system::{order, System, ADMIN_ACTOR};

/// (step, attempt, event) of a saga's timeline, via the support API.
async fn timeline(system: &System, id: &str) -> Vec<(String, i64, String, String)> {
    system
        .timeline(id)
        .await
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap_or("").to_owned(),
                e["attempt"].as_i64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn act(system: &System, id: &str, action: &str, reason: &str) -> (u16, Value) {
    system
        .admin(
            "POST",
            &format!("/v1/admin/sagas/{id}/{action}"),
            Some(json!({ "reason": reason })),
        )
        .await
}

const PARK_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_retry_with_backoff_and_charge_once() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(5))).await;
    let done = system
        .checkout(&order(&[("BOOK", 1)], "sim_transient_2"))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    system.assert_one_charge(1_545).await;
    let id = done["checkout_id"].as_str().unwrap();
    let charge: Vec<(i64, String, String)> = timeline(&system, id)
        .await
        .into_iter()
        .filter(|(step, ..)| step == "payment.charge")
        .map(|(_, attempt, event, detail)| (attempt, event, detail))
        .collect();
    let events: Vec<(i64, &str)> = charge.iter().map(|(a, e, _)| (*a, e.as_str())).collect();
    assert_eq!(
        events,
        [
            (1, "sent"),
            (1, "transient"),
            (2, "sent"),
            (2, "transient"),
            (3, "sent"),
            (3, "ok")
        ]
    );
    // The retries say how long they waited: full jitter under 20 ms, then 40 ms.
    for (i, ceiling) in [(2, 20), (4, 40)] {
        let detail = &charge[i].2;
        let waited: u64 = detail
            .strip_prefix("after a backoff of ")
            .and_then(|rest| rest.split(" ms").next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no backoff in `{detail}`"));
        assert!(waited <= ceiling, "{detail}");
    }
    let steps = &system.saga_view(id).await["steps"];
    assert_eq!(
        steps[2],
        json!({"step": "payment.charge", "attempts": 3, "last_event": "ok"})
    );
    system.stop().await;
}

/// A charge that answers after 2 s while its deadline is 300 ms.
fn slow_charge(on_exhausted: OnExhausted) -> StepPolicies {
    StepPolicies::uniform(System::fast_retries(5)).with(
        Step::Charge,
        RetryPolicy {
            on_exhausted,
            ..System::fast_retries_within(2, Duration::from_millis(300))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_past_its_deadline_parks_then_a_retry_completes_with_one_charge() {
    let system = System::start_with(slow_charge(OnExhausted::Park)).await;
    let id = system
        .place(&order(&[("TSHIRT", 1)], "sim_slow_2000"))
        .await;
    system
        .wait_status(std::slice::from_ref(&id), "suspended", PARK_WAIT)
        .await;
    let parked = system.saga_view(&id).await;
    assert_eq!(parked["step"], "payment.charge");
    assert_eq!(parked["phase"], "forward");
    assert!(
        parked["last_error"]
            .as_str()
            .unwrap()
            .contains("outcome unknown"),
        "{parked}"
    );
    assert_eq!(parked["checkout_status"], "pending");
    assert_eq!(parked["deadline_at"], Value::Null);
    // The provider did charge, late: both late answers are recorded and
    // change nothing.
    saga_testkit::eventually("two late charge replies", PARK_WAIT, || async {
        let late = timeline(&system, &id)
            .await
            .iter()
            .filter(|(step, _, event, _)| step == "payment.charge" && event == "late_ok")
            .count();
        (late == 2).then_some(())
    })
    .await;
    assert_eq!(system.saga_status(&id).await, "suspended");
    system.assert_one_charge(2_145).await;
    // Support retries: the provider's record answers, no second charge.
    let (status, body) = act(&system, &id, "retry", "provider answered late").await;
    assert_eq!(status, 200, "{body}");
    let done = system.wait_final(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    system.assert_one_charge(2_145).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_past_its_deadline_set_to_compensate_refunds_what_it_took() {
    let system = System::start_with(slow_charge(OnExhausted::Compensate)).await;
    system
        .checkout_rejected(&order(&[("TSHIRT", 2)], "sim_slow_2000"), "unavailable")
        .await;
    // Whatever the provider did was undone: no net charge, no stock held.
    assert_eq!(system.net_charged().await, 0);
    assert_eq!(system.held().await, 0);
    assert_eq!(system.available("TSHIRT").await, 100);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_parks_fifty_checkouts_and_a_bulk_retry_completes_them() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(3))).await;
    system.outage(true).await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let ids: Vec<String> = futures::future::join_all((0..50).map(|_| system.place(&body))).await;
    system.wait_status(&ids, "suspended", PARK_WAIT).await;

    // Parked, not lost: still pending to the client, stock still held.
    let (_, checkout) = system.get(&format!("/v1/checkouts/{}", ids[0])).await;
    assert_eq!(checkout["status"], "pending");
    assert_eq!(system.held().await, 50);
    assert_eq!(system.available("TSHIRT").await, 50);
    assert_eq!(system.net_charged().await, 0);
    let failures = system.admin_read("/v1/admin/failures").await;
    assert_eq!(failures["total"], 50);
    assert_eq!(
        failures["groups"].as_array().unwrap().len(),
        1,
        "{failures}"
    );
    let group = &failures["groups"][0];
    assert_eq!(group["step"], "payment.charge");
    assert_eq!(group["phase"], "forward");
    assert_eq!(group["count"], 50);
    let error = group["error"].as_str().unwrap();
    assert!(error.contains("outage"), "{error}");

    system.outage(false).await;
    let selection = json!({"step": "payment.charge", "phase": "forward", "error": error});
    let mut dry = selection.clone();
    dry["dry_run"] = json!(true);
    let (status, preview) = system.bulk_retry(dry).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["dry_run"].clone(), preview["count"].clone()),
        (json!(true), json!(50))
    );
    assert_eq!(system.saga_status(&ids[0]).await, "suspended");

    let mut real = selection;
    real["reason"] = json!("provider outage is over");
    let (status, retried) = system.bulk_retry(real).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["count"], 50);
    system.wait_status(&ids, "completed", PARK_WAIT).await;

    let payments = system.payments().await;
    assert_eq!(payments.len(), 50);
    assert!(payments
        .iter()
        .all(|p| *p == ("charged".to_owned(), 2_145, 0)));
    assert_eq!(system.held().await, 50);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_events WHERE event = 'retry' AND actor = $1 AND reason = $2",
    )
    .bind(ADMIN_ACTOR)
    .bind("provider outage is over")
    .fetch_one(&system.orchestrator_db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 50);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_parked_saga_releases_the_stock_with_no_net_charge() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(2))).await;
    let id = system.park(&order(&[("TSHIRT", 3)], "sim_approve")).await;
    assert_eq!(system.held().await, 3);
    system.outage(false).await;

    let (status, body) = act(&system, &id, "cancel", "customer changed their mind").await;
    assert_eq!(status, 200, "{body}");
    let done = system.wait_final(&id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(system.held().await, 0);
    assert_eq!(system.available("TSHIRT").await, 100);
    assert_eq!(system.net_charged().await, 0);
    let cancel = timeline(&system, &id)
        .await
        .into_iter()
        .find(|(_, _, event, _)| event == "cancel");
    assert!(cancel.is_some());
    let timeline = system.timeline(&id).await;
    let entry = timeline.iter().find(|e| e["event"] == "cancel").unwrap();
    assert_eq!(entry["actor"], ADMIN_ACTOR);
    assert_eq!(entry["reason"], "customer changed their mind");

    // Final now: both actions are the wrong state.
    for action in ["cancel", "retry"] {
        let (status, problem) = act(&system, &id, action, "again").await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["type"], "urn:checkout-saga:problem:conflict");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_failing_during_an_outage_parks_while_compensating_then_a_retry_compensates() {
    // The charge goes through, but only after its deadline: the saga
    // compensates, and the refund meets an outage.
    let policies = StepPolicies::uniform(System::fast_retries(2)).with(
        Step::Charge,
        RetryPolicy {
            on_exhausted: OnExhausted::Compensate,
            ..System::fast_retries_within(1, Duration::from_millis(1_000))
        },
    );
    let system = System::start_with(policies).await;
    let id = system
        .place(&order(&[("TSHIRT", 3)], "sim_slow_2000"))
        .await;
    // The provider answers 2 s after the charge began; the outage starts
    // while the charge is at the provider (its intent committed), before
    // its deadline, so the refund that follows the deadline fails.
    saga_testkit::eventually("the charge at the provider", PARK_WAIT, || async {
        let charging: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'charging'")
                .fetch_one(&system.payment_db.pool)
                .await
                .unwrap();
        (charging == 1).then_some(())
    })
    .await;
    system.outage(true).await;
    system
        .wait_status(std::slice::from_ref(&id), "suspended", PARK_WAIT)
        .await;
    // The refund no longer waits on the charge (no lock is held while the
    // provider works): the charge in flight lands after the park.
    saga_testkit::eventually("charged, not yet refunded", PARK_WAIT, || async {
        (system.net_charged().await == 2_145 * 3).then_some(())
    })
    .await;
    let parked = system.saga_view(&id).await;
    assert_eq!(parked["phase"], "compensating", "{parked}");
    assert_eq!(parked["step"], "payment.refund");
    assert_eq!(
        parked["pending_compensations"],
        json!(["payment.refund", "inventory.release"])
    );
    assert_eq!(parked["actions"], json!(["retry"]));
    assert_eq!(system.held().await, 3, "release has not run yet");
    let (status, problem) = act(&system, &id, "cancel", "give up").await;
    assert_eq!(status, 409, "{problem}");

    system.outage(false).await;
    let (status, body) = act(&system, &id, "retry", "refunds work again").await;
    assert_eq!(status, 200, "{body}");
    let done = system.wait_final(&id).await;
    assert_eq!(done["status"], "rejected", "{done}");
    assert_eq!(done["reason"], "unavailable");
    assert_eq!(system.saga_status(&id).await, "compensated");
    assert_eq!(system.held().await, 0);
    assert_eq!(system.net_charged().await, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_pending_across_an_orchestrator_restart_all_run() {
    // Slow backoff so that retries are still waiting when the orchestrator
    // has stopped. Full jitter draws each delay uniformly below the cap:
    // with a cap of 1 s, a stop that took over a second under a loaded CI
    // let every retry fall due (and go out) first, and the precondition
    // below failed. Below 5 s, all 100 falling due within even 3 s has a
    // chance of 0.6^100.
    let slow = RetryPolicy {
        max_attempts: 50,
        base_delay: Duration::from_millis(5_000),
        max_delay: Duration::from_millis(5_000),
        ..RetryPolicy::default()
    };
    let mut system = System::start_with(StepPolicies::uniform(slow)).await;
    system.outage(true).await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let ids: Vec<String> = futures::future::join_all((0..100).map(|_| system.place(&body))).await;
    // Wait until every charge has failed at least once: each then has a
    // durable retry (an outbox row due later, or an attempt awaiting its
    // deadline).
    saga_testkit::eventually("a failed charge on all 100", PARK_WAIT, || async {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT saga_id) FROM saga_events
             WHERE step = 'payment.charge' AND event = 'transient'",
        )
        .fetch_one(&system.orchestrator_db.pool)
        .await
        .unwrap();
        (failed == 100).then_some(())
    })
    .await;
    system.stop_orchestrator().await;

    let pool = &system.orchestrator_db.pool;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE not_before > now()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        pending > 0,
        "no retry was left pending; the test proves nothing"
    );
    let without_timer: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas s WHERE status = 'running'
         AND deadline_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.saga_id = s.id)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(without_timer, 0, "a running saga with no durable timer");

    system.outage(false).await;
    system.start_orchestrator().await;
    system.wait_status(&ids, "completed", PARK_WAIT).await;
    let payments = system.payments().await;
    assert_eq!(payments.len(), 100);
    assert!(payments.iter().all(|p| p.0 == "charged" && p.2 == 0));
    system.stop().await;
}
