//! `GET /openapi.json`: the published contract names every API route, its
//! bodies and its security.

use serde_json::Value;

use crate::system::System;

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
