use serde_json::{json, Value};

use crate::answers::fields;
use crate::system::{order, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_a_problem_naming_the_field_and_creates_nothing() {
    let system = System::start().await;
    let good = order(&[("BOOK", 1)], "sim_approve");
    let with = |path: &[&str], value: Value| {
        let mut body = good.clone();
        let mut target = &mut body;
        for key in &path[..path.len() - 1] {
            target = match key.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*key],
            };
        }
        target[path[path.len() - 1]] = value;
        body
    };
    let without = |key: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing field", without("customer_id"), "customer_id"),
        (
            "missing nested field",
            with(&["ship_to"], json!({"region": "CA"})),
            "ship_to.country",
        ),
        ("unknown field", with(&["coupon"], json!("FREE")), "coupon"),
        (
            "unknown item field",
            with(&["items", "0", "colour"], json!("red")),
            "items[0].colour",
        ),
        ("empty items", with(&["items"], json!([])), "items"),
        (
            "zero quantity",
            with(&["items", "0", "quantity"], json!(0)),
            "items[0].quantity",
        ),
        (
            "negative quantity",
            with(&["items", "0", "quantity"], json!(-3)),
            "items[0].quantity",
        ),
        (
            "quantity over 10,000",
            with(&["items", "0", "quantity"], json!(10_001)),
            "items[0].quantity",
        ),
        (
            "fractional quantity",
            with(&["items", "0", "quantity"], json!(1.5)),
            "items[0].quantity",
        ),
        (
            "quantity as text",
            with(&["items", "0", "quantity"], json!("2")),
            "items[0].quantity",
        ),
        (
            "duplicate SKU line",
            with(
                &["items"],
                json!([{"sku": "BOOK", "quantity": 1}, {"sku": "BOOK", "quantity": 2}]),
            ),
            "items[1].sku",
        ),
        (
            "over-long customer id",
            with(&["customer_id"], json!("c".repeat(129))),
            "customer_id",
        ),
        (
            "over-long SKU",
            with(&["items", "0", "sku"], json!("S".repeat(65))),
            "items[0].sku",
        ),
        (
            "empty payment method",
            with(&["payment_method"], json!("")),
            "payment_method",
        ),
        (
            "bad country",
            with(&["ship_to", "country"], json!("USA")),
            "ship_to.country",
        ),
        (
            "items not a list",
            with(&["items"], json!({"sku": "BOOK"})),
            "items",
        ),
    ];
    for (what, body, field) in cases {
        let (status, problem) = system.post(&body, None).await;
        assert_eq!(status, 422, "{what}: {problem}");
        assert_eq!(problem["status"], 422, "{what}: {problem}");
        assert!(
            fields(&problem).contains(&field),
            "{what}: expected field {field} in {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{what}: {problem}"
        );
    }

    // Not JSON at all, and JSON with trailing garbage: 400.
    let trailing = format!("{good} {{}}");
    for raw in ["{\"customer_id\": ", "not json", trailing.as_str()] {
        let response = system.post_raw("application/json", raw.to_owned()).await;
        assert_eq!(response.status(), 400, "{raw}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("JSON"),
            "{problem}"
        );
    }

    // Over 64 KiB: refused before parsing.
    let huge = with(&["customer_id"], json!("x".repeat(70 * 1024)));
    let (status, problem) = system.post(&huge, None).await;
    assert_eq!(status, 413, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("65536"),
        "{problem}"
    );

    // Not declared as JSON.
    let response = system.post_raw("text/plain", good.to_string()).await;
    assert_eq!(response.status(), 415);

    // An over-long Idempotency-Key names the header.
    let (status, problem) = system.post(&good, Some(&"k".repeat(300))).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["Idempotency-Key"]);

    assert_eq!(
        system.saga_count().await,
        0,
        "no bad request may create a checkout"
    );
    assert_eq!(system.held().await, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_checkout_is_404_and_a_bad_wait_is_named() {
    let system = System::start().await;
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let (status, problem) = system.get(&format!("/v1/checkouts/{id}")).await;
        assert_eq!(status, 404, "{problem}");
        assert_eq!(problem["status"], 404);
        assert!(problem["detail"].as_str().unwrap().contains(&id));
    }
    let body = order(&[("BOOK", 1)], "sim_approve").to_string();
    let response = system.post_raw("application/json", body).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["checkout_id"].as_str().unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(location, format!("/v1/checkouts/{id}"));
    let (status, found) = system.get(&location).await;
    assert_eq!(
        (status, &found["checkout_id"]),
        (200, &created["checkout_id"])
    );
    for wait in ["31", "-1", "soon"] {
        let (status, problem) = system.get(&format!("/v1/checkouts/{id}?wait={wait}")).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(fields(&problem), ["wait"]);
    }
    system.stop().await;
}
