use serde_json::Value;

use crate::system::{order, System};

/// A book checkout posted with `key`: new (202).
async fn first_post(system: &System, key: &str) -> Value {
    let (status, first) = system.post(&book(1), Some(key)).await;
    assert_eq!(status, 202, "{first}");
    first
}

fn book(quantity: u32) -> Value {
    order(&[("BOOK", quantity)], "sim_approve")
}

/// With `key` again, the same body is the checkout `first` (200) and
/// another body is refused (422): the problem.
async fn assert_key_holds(system: &System, key: &str, first: &Value) -> Value {
    let (again_status, again) = system.post(&book(1), Some(key)).await;
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(again["checkout_id"], first["checkout_id"]);
    let (conflict_status, problem) = system.post(&book(2), Some(key)).await;
    assert_eq!(conflict_status, 422, "{problem}");
    problem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_body_is_the_same_checkout_and_another_body_is_422() {
    let system = System::start().await;
    let first = first_post(&system, "key-1").await;
    let problem = assert_key_holds(&system, "key-1", &first).await;
    assert_eq!(problem["status"], 422);
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));

    let done = system
        .wait_final(first["checkout_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"], "completed");
    // A retry after completion still answers with the same, now completed, checkout.
    let (_, replay) = system.post(&book(1), Some("key-1")).await;
    assert_eq!(replay["checkout_id"], first["checkout_id"]);
    assert_eq!(replay["status"], "completed");
    assert_eq!(system.saga_count().await, 1);
    assert_eq!(system.payments().await.len(), 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_with_one_key_create_one_checkout() {
    let system = System::start().await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let answers =
        futures::future::join_all((0..8).map(|_| system.post(&body, Some("race-key")))).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, b)| {
            assert!(*status == 202 || *status == 200, "{status} {b}");
            b["checkout_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 202).count(), 1);
    assert_eq!(system.saga_count().await, 1);
    let done = system.wait_final(ids.iter().next().unwrap()).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(system.available("TSHIRT").await, 99);
    system.stop().await;
}

/// A retry whose first try reached a release before checkout clients (its
/// key stored bare, no client) finds that checkout here: rolling the
/// orchestrators never turns one checkout into two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_a_release_before_clients_stored_bare_is_still_the_same_checkout() {
    let system = System::start().await;
    let first = first_post(&system, "legacy-1").await;
    let id = first["checkout_id"].as_str().unwrap();
    // As v0.3.0 writes it.
    sqlx::query("UPDATE sagas SET idempotency_key = 'legacy-1', client = NULL WHERE id = $1::uuid")
        .bind(id)
        .execute(&system.orchestrator_db.pool)
        .await
        .unwrap();

    assert_key_holds(&system, "legacy-1", &first).await;
    assert_eq!(system.saga_count().await, 1);
    system.wait_final(id).await;
    system.stop().await;
}
