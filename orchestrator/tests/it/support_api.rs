//! The support API's contract: authentication, validation, wrong states,
//! filters and pagination.

use serde_json::{json, Value};

use crate::answers::{fields, strings};
use crate::system::{order, System, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_support_route_needs_a_valid_token() {
    let system = System::start().await;
    let id = uuid::Uuid::now_v7();
    let routes = [
        ("GET", "/v1/admin/sagas".to_owned()),
        ("GET", format!("/v1/admin/sagas/{id}")),
        ("POST", format!("/v1/admin/sagas/{id}/retry")),
        ("POST", format!("/v1/admin/sagas/{id}/cancel")),
        ("POST", "/v1/admin/sagas/retry".to_owned()),
        ("GET", "/v1/admin/failures".to_owned()),
    ];
    for (method, path) in &routes {
        for token in [None, Some("wrong-token"), Some(&ADMIN_TOKEN[1..])] {
            let mut request = system
                .http
                .request(
                    method.parse().unwrap(),
                    format!("{}{path}", system.base_url),
                )
                .json(&json!({"reason": "x"}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "urn:checkout-saga:problem:unauthorized");
        }
    }
    // The console page itself loads without a token; its API calls need one.
    let page = system.fetch("/admin").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("id=\"token\""));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page_newest_first_and_bad_input_names_the_field() {
    let system = System::start().await;
    let mut ids = Vec::new();
    for method in ["sim_approve", "sim_decline", "sim_approve"] {
        let done = system.checkout(&order(&[("BOOK", 1)], method)).await;
        ids.push(done["checkout_id"].as_str().unwrap().to_owned());
    }
    let page = system.sagas("status=completed&limit=1").await;
    assert_eq!(page["sagas"][0]["saga_id"], ids[2].as_str(), "newest first");
    assert_eq!(page["sagas"][0]["checkout_status"], "completed");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next = system
        .sagas(&format!("status=completed&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(next["sagas"][0]["saga_id"], ids[0].as_str());
    assert_eq!(next["next_cursor"], Value::Null);

    let rejected = system.sagas("status=compensated").await;
    assert_eq!(rejected["sagas"].as_array().unwrap().len(), 1);
    assert_eq!(rejected["sagas"][0]["saga_id"], ids[1].as_str());
    let future = system.sagas("created_after=2999-01-01T00:00:00Z").await;
    assert_eq!(future["sagas"], json!([]));

    let (status, problem) = system
        .admin(
            "GET",
            "/v1/admin/sagas?status=stuck&step=payment.pay&limit=0&created_after=yesterday",
            None,
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        fields(&problem),
        ["status", "step", "created_after", "limit"]
    );

    // Detail: steps, the timeline, and what support may do (nothing, final).
    let detail = system.saga_view(&ids[1]).await;
    assert_eq!(detail["status"], "compensated");
    assert_eq!(detail["reason"], "payment_declined");
    assert_eq!(detail["actions"], json!([]));
    assert_eq!(
        strings(&detail["steps"], "step"),
        [
            "inventory.reserve",
            "tax.calculate",
            "payment.charge",
            "inventory.release"
        ]
    );

    // Unknown or malformed ids are 404; a missing reason is 422; a wrong
    // state is 409; nothing changed.
    for path in [
        format!("/v1/admin/sagas/{}", uuid::Uuid::now_v7()),
        "/v1/admin/sagas/not-a-uuid".to_owned(),
    ] {
        assert_eq!(system.admin("GET", &path, None).await.0, 404);
    }
    let retry = format!("/v1/admin/sagas/{}/retry", ids[0]);
    let (status, problem) = system.admin("POST", &retry, Some(json!({}))).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "reason");
    let (status, problem) = system
        .admin("POST", &retry, Some(json!({"reason": "try"})))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("completed"));
    let (status, problem) = system
        .bulk_retry(json!({"step": "payment.charge", "phase": "forward", "error": "x"}))
        .await;
    assert_eq!(status, 422, "bulk retry without a reason: {problem}");
    assert_eq!(problem["errors"][0]["field"], "reason", "{problem}");
    let (status, none) = system
        .bulk_retry(
            json!({"step": "payment.charge", "phase": "forward", "error": "x", "dry_run": true}),
        )
        .await;
    assert_eq!((status, none["count"].clone()), (200, json!(0)));
    system.stop().await;
}
