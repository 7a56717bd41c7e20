//! Support finds a checkout by what the caller has at hand (its id, the
//! customer id, the idempotency key) and reads how many sagas are in each
//! status and how checkouts ended minute by minute.

use std::time::Duration;

use orchestrator::saga::StepPolicies;
use serde_json::{json, Value};

use crate::answers::{fields, strings};
use crate::system::{order, System};

fn for_customer(customer: &str, sku: &str, payment_method: &str) -> Value {
    let mut body = order(&[(sku, 1)], payment_method);
    body["customer_id"] = json!(customer);
    body
}

/// The saga ids a list answer holds, in its order.
fn ids(list: &Value) -> Vec<&str> {
    strings(&list["sagas"], "saga_id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_finds_a_checkout_by_its_id_customer_or_idempotency_key() {
    let system = System::start().await;
    let (status, first) = system
        .post(
            &for_customer("cust-42", "BOOK", "sim_approve"),
            Some("app-key-1"),
        )
        .await;
    assert_eq!(status, 202, "{first}");
    let first = first["checkout_id"].as_str().unwrap().to_owned();
    let second = system
        .place(&for_customer("cust-42", "MUG", "sim_approve"))
        .await;
    let other = system
        .place(&for_customer("cust-7", "BOOK", "sim_approve"))
        .await;
    for id in [&first, &second, &other] {
        system.wait_final(id).await;
    }

    // The customer's checkouts, newest first, each with its customer and total.
    let by_customer = system.sagas("q=cust-42").await;
    assert_eq!(ids(&by_customer), [second.as_str(), first.as_str()]);
    let newest = &by_customer["sagas"][0];
    assert_eq!(newest["customer_id"], "cust-42");
    // MUG: 999 plus California's general rate of 8.25%, rounded half-up
    // (82.4175 -> 82).
    assert_eq!(newest["total_cents"], 999 + 82, "{newest}");
    assert_eq!(newest["currency"], "USD");

    assert_eq!(
        ids(&system.sagas(&format!("q={other}")).await),
        [other.as_str()]
    );
    assert_eq!(ids(&system.sagas("q=app-key-1").await), [first.as_str()]);
    // A pasted id keeps its surrounding spaces; they are not part of it.
    assert_eq!(ids(&system.sagas("q=%20cust-7%20").await), [other.as_str()]);
    assert_eq!(
        ids(&system.sagas("customer_id=cust-7").await),
        [other.as_str()]
    );
    assert_eq!(
        ids(&system.sagas("idempotency_key=app-key-1").await),
        [first.as_str()]
    );
    // Exact, not a substring: a customer id is not found by a part of it.
    assert!(ids(&system.sagas("q=cust-4").await).is_empty());
    // Terms narrow together with the other filters.
    assert!(ids(&system.sagas("customer_id=cust-42&status=suspended").await).is_empty());

    // The detail names the customer and the total too.
    let detail = system.saga_view(&first).await;
    assert_eq!(detail["customer_id"], "cust-42");
    assert_eq!(detail["total_cents"], 1_500 + 45, "{detail}");

    let stats = system.admin_read("/v1/admin/stats/minutes").await;
    let minutes = stats["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60, "one entry per minute of the last hour");
    let completed: i64 = minutes
        .iter()
        .map(|m| m["completed"].as_i64().unwrap())
        .sum();
    assert_eq!(completed, 3, "{stats}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_and_outcomes_per_minute_show_an_outage() {
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(1))).await;
    system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    system.checkout(&order(&[("BOOK", 1)], "sim_decline")).await;
    let parked = system
        .park_each(&order(&[("BOOK", 1)], "sim_approve"), 2)
        .await;

    // The counts are the gauges' (re-counted every few seconds).
    saga_testkit::eventually(
        "the status counts to show the parked sagas",
        Duration::from_secs(20),
        || async {
            let body = system.admin_read("/v1/admin/stats/statuses").await;
            let counts = &body["counts"];
            (counts["suspended"] == 2).then(|| counts.clone())
        },
    )
    .await;
    let (_, body) = system.admin("GET", "/v1/admin/stats/statuses", None).await;
    assert_eq!(
        body["counts"],
        json!({"running": 0, "compensating": 0, "suspended": 2, "completed": 1,
               "compensated": 1, "cancelled": 0, "total": 4})
    );

    let stats = system.admin_read("/v1/admin/stats/minutes?minutes=5").await;
    let minutes = stats["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 5);
    let sum = |key: &str| -> i64 { minutes.iter().map(|m| m[key].as_i64().unwrap()).sum() };
    assert_eq!(
        (sum("completed"), sum("rejected"), sum("suspended")),
        (1, 1, 2),
        "{stats}"
    );
    system.outage(false).await;
    for id in &parked {
        let (status, _) = system
            .admin(
                "POST",
                &format!("/v1/admin/sagas/{id}/cancel"),
                Some(json!({"reason": "test over"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_stats_inputs_are_checked() {
    let system = System::start().await;
    let long = "x".repeat(256);
    let cases = [
        ("/v1/admin/sagas?q=cust%00", "q"),
        ("/v1/admin/sagas?customer_id=a%1Bb", "customer_id"),
        ("/v1/admin/sagas?idempotency_key=k%0A", "idempotency_key"),
        (&*format!("/v1/admin/sagas?q={long}"), "q"),
        (
            &*format!("/v1/admin/sagas?customer_id={}", &long[..129]),
            "customer_id",
        ),
        (
            &*format!("/v1/admin/sagas?idempotency_key={long}"),
            "idempotency_key",
        ),
        ("/v1/admin/stats/minutes?minutes=%00", "minutes"),
        ("/v1/admin/stats/minutes?minutes=0", "minutes"),
        ("/v1/admin/stats/minutes?minutes=1441", "minutes"),
        ("/v1/admin/stats/minutes?minutes=an%20hour", "minutes"),
    ];
    for (path, field) in cases {
        let (status, problem) = system.admin("GET", path, None).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert_eq!(fields(&problem), [field], "{path}: {problem}");
    }
    for path in ["/v1/admin/stats/statuses", "/v1/admin/stats/minutes"] {
        let (status, _) = system.get(path).await;
        assert_eq!(status, 401, "{path} without a token");
    }

    // The published contract says the same.
    let (_, doc) = system.get("/openapi.json").await;
    let paths = &doc["paths"];
    for path in ["/v1/admin/stats/statuses", "/v1/admin/stats/minutes"] {
        let operation = &paths[path]["get"];
        assert_eq!(operation["security"][0]["bearer"], json!([]), "{path}");
        assert!(operation["responses"]["401"].is_object(), "{path}");
    }
    let param = |path: &str, name: &str| -> Value {
        paths[path]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} documents `{name}`"))["schema"]
            .clone()
    };
    assert_eq!(param("/v1/admin/sagas", "q")["maxLength"], 255);
    assert_eq!(param("/v1/admin/sagas", "customer_id")["maxLength"], 128);
    assert_eq!(
        param("/v1/admin/sagas", "idempotency_key")["maxLength"],
        255
    );
    let minutes = param("/v1/admin/stats/minutes", "minutes");
    assert_eq!(
        (&minutes["minimum"], &minutes["maximum"]),
        (&json!(1), &json!(1440)),
        "{minutes}"
    );
    system.stop().await;
}
