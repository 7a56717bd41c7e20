//! `GET /openapi.json`: the published contract names every API route, its
//! bodies and its security.

use serde_json::{json, Value};

use crate::answers::fields;
use crate::system::{order, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let system = System::start().await;
    let (status, doc) = system.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/checkouts", "post"),
        ("/v1/checkouts/{id}", "get"),
        ("/v1/admin/sagas", "get"),
        ("/v1/admin/sagas/{id}", "get"),
        ("/v1/admin/sagas/{id}/retry", "post"),
        ("/v1/admin/sagas/{id}/cancel", "post"),
        ("/v1/admin/sagas/retry", "post"),
        ("/v1/admin/failures", "get"),
        ("/v1/admin/dead-letters", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        if path.starts_with("/v1/admin") {
            assert_eq!(
                operation["security"][0]["bearer"],
                Value::Array(vec![]),
                "{path}"
            );
            assert!(operation["responses"]["401"].is_object(), "{path}");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // The checkout request: its required fields, as the API enforces them.
    let body =
        &paths["/v1/checkouts"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let name = body["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    let schema = &doc["components"]["schemas"][name];
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(
        required,
        ["customer_id", "items", "payment_method", "ship_to"]
    );
    // What a client reads back: the statuses it must handle.
    let status = &doc["components"]["schemas"]["ClientStatus"]["enum"];
    assert_eq!(
        status,
        &serde_json::json!(["pending", "completed", "rejected", "cancelled"])
    );
    system.stop().await;
}

/// A component schema by name, or the one a `$ref` points at.
fn schema<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => &doc["components"]["schemas"][reference.rsplit('/').next().unwrap()],
        None => schema,
    }
}

fn parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["schema"])
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

/// What a client generated from the document allows is what the API takes:
/// each bound read from the document is accepted at the bound and refused
/// one past it, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_bounds_are_the_enforced_bounds() {
    let system = System::start().await;
    let (_, doc) = system.get("/openapi.json").await;
    let checkout = schema(
        &doc,
        &doc["paths"]["/v1/checkouts"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    let customer_id = &checkout["properties"]["customer_id"];
    let item = schema(&doc, &checkout["properties"]["items"]["items"]);
    let quantity = &item["properties"]["quantity"];
    let ship_to = schema(&doc, &checkout["properties"]["ship_to"]);
    assert_eq!(checkout["properties"]["items"]["minItems"], 1, "{checkout}");
    assert_eq!(
        checkout["properties"]["items"]["maxItems"], 100,
        "{checkout}"
    );
    assert_eq!(ship_to["properties"]["country"]["pattern"], "^[A-Za-z]{2}$");
    assert_eq!(checkout["additionalProperties"], false);

    let longest = customer_id["maxLength"]
        .as_u64()
        .expect("customer_id has a maxLength") as usize;
    assert_eq!(customer_id["minLength"], 1);
    let mut body = order(&[("BOOK", 1)], "sim_approve");
    body["customer_id"] = json!("c".repeat(longest));
    let (status, answer) = system.post(&body, None).await;
    assert_eq!(status, 202, "{answer}");
    body["customer_id"] = json!("c".repeat(longest + 1));
    let (status, answer) = system.post(&body, None).await;
    assert_eq!((status, fields(&answer)), (422, vec!["customer_id"]));

    let most = quantity["maximum"]
        .as_i64()
        .expect("quantity has a maximum");
    assert_eq!(quantity["minimum"], 1);
    let mut body = order(&[("BOOK", 1)], "sim_approve");
    body["items"][0]["quantity"] = json!(most);
    let (status, answer) = system.post(&body, None).await;
    assert_eq!(status, 202, "{answer}");
    body["items"][0]["quantity"] = json!(most + 1);
    let (status, answer) = system.post(&body, None).await;
    assert_eq!((status, fields(&answer)), (422, vec!["items[0].quantity"]));
    // JSON Schema's integer 2 may be written 2.0.
    body["items"][0]["quantity"] = json!(2.0);
    let (status, answer) = system.post(&body, None).await;
    assert_eq!(status, 202, "{answer}");

    let id = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    let wait = parameter(&doc, "/v1/checkouts/{id}", "get", "wait");
    assert_eq!(wait["type"], "integer");
    assert_eq!(wait["minimum"], 0);
    let max_wait = wait["maximum"].as_u64().expect("wait has a maximum");
    let (status, answer) = system
        .get(&format!("/v1/checkouts/{id}?wait={}", max_wait + 1))
        .await;
    assert_eq!((status, fields(&answer)), (422, vec!["wait"]));
    let checkout_id = parameter(&doc, "/v1/checkouts/{id}", "get", "id");
    assert_eq!(checkout_id["format"], "uuid");

    // Each documented status filters; anything else, empty included, is refused.
    let statuses = parameter(&doc, "/v1/admin/sagas", "get", "status")["enum"]
        .as_array()
        .expect("status is an enum")
        .clone();
    assert_eq!(statuses.len(), 6, "{statuses:?}");
    for status_name in &statuses {
        let (status, answer) = system
            .admin(
                "GET",
                &format!("/v1/admin/sagas?status={}", status_name.as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, 200, "{status_name}: {answer}");
    }
    for refused in ["pending", ""] {
        let (status, answer) = system
            .admin("GET", &format!("/v1/admin/sagas?status={refused}"), None)
            .await;
        assert_eq!(
            (status, fields(&answer)),
            (422, vec!["status"]),
            "{refused:?}"
        );
    }
    let steps = &parameter(&doc, "/v1/admin/sagas", "get", "step")["enum"];
    assert_eq!(
        steps,
        &json!([
            "inventory.reserve",
            "tax.calculate",
            "payment.charge",
            "inventory.release",
            "payment.refund"
        ])
    );
    let limit = parameter(&doc, "/v1/admin/sagas", "get", "limit");
    let (status, _) = system
        .admin(
            "GET",
            &format!("/v1/admin/sagas?limit={}", limit["maximum"]),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = system
        .admin(
            "GET",
            &format!(
                "/v1/admin/sagas?limit={}",
                limit["maximum"].as_u64().unwrap() + 1
            ),
            None,
        )
        .await;
    assert_eq!((status, fields(&answer)), (422, vec!["limit"]));
    // A parameter given twice is a problem naming it, as documented (422),
    // not a plain-text 400.
    let (status, answer) = system
        .admin(
            "GET",
            "/v1/admin/sagas?step=tax.calculate&step=payment.charge",
            None,
        )
        .await;
    assert_eq!((status, fields(&answer)), (422, vec!["step"]));

    // The reason a support action needs.
    let action = schema(
        &doc,
        &doc["paths"]["/v1/admin/sagas/{id}/retry"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"],
    );
    assert_eq!(action["required"], json!(["reason"]));
    assert_eq!(action["properties"]["reason"]["maxLength"], 500);
    let bulk = schema(
        &doc,
        &doc["paths"]["/v1/admin/sagas/retry"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"],
    );
    assert_eq!(bulk["properties"]["saga_ids"]["items"]["format"], "uuid");
    assert_eq!(bulk["properties"]["saga_ids"]["maxItems"], 10_000);
    system.stop().await;
}

/// Every answer a route can give is documented with its problem body: the
/// ones every route shares, and for a route that reads JSON the refusals
/// of a body that is not JSON, too large or not declared as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_answer_is_documented() {
    let system = System::start().await;
    let (_, doc) = system.get("/openapi.json").await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let mut expected = vec!["503"];
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            if path.starts_with("/v1/admin") {
                expected.push("401");
            }
            for status in expected {
                let problem = &responses[status]["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    problem["$ref"], "#/components/schemas/Problem",
                    "{method} {path}: {status} is not documented as a problem"
                );
            }
        }
    }
    for (path, status) in [
        ("/v1/admin/sagas/{id}/retry", "409"),
        ("/v1/admin/sagas/{id}/cancel", "409"),
        ("/v1/admin/sagas/{id}", "404"),
        ("/v1/checkouts/{id}", "404"),
    ] {
        let item = &doc["paths"][path];
        let operation = item.get("post").or_else(|| item.get("get")).unwrap();
        assert!(
            operation["responses"][status].is_object(),
            "{path}: {status}"
        );
    }
    // What the document says, the API does: a body sent as text is a 415
    // problem on the bulk retry route too.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/admin/sagas/retry", system.base_url))
        .bearer_auth(crate::system::ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    system.stop().await;
}
