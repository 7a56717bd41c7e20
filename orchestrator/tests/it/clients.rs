//! Checkout clients: a key on every checkout route, each client's own
//! checkouts and idempotency keys, and its limits, across instances.

use std::time::Duration;

use orchestrator::clients::ClientLimits;
use saga_testkit as testing;
use serde_json::Value;

use crate::system::{
    http_with_key, order, Setup, System, ADMIN_TOKEN, CLIENT_KEY, OTHER_CLIENT, OTHER_CLIENT_KEY,
};

async fn answer(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// POST /v1/checkouts at `base` as the client holding `key`.
async fn post_as(
    base: &str,
    key: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http_with_key(key)
        .post(format!("{base}/v1/checkouts"))
        .json(body);
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    answer(request.send().await.expect("POST answers")).await
}

fn assert_problem(status: u16, body: &Value, expected: u16, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:checkout-saga:problem:{kind}"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_routes_need_a_client_key_and_the_two_kinds_of_token_stay_apart() {
    let system = System::start().await;
    let (status, placed) = system
        .post(&order(&[("BOOK", 1)], "sim_approve"), Some("order-9"))
        .await;
    assert_eq!(status, 202, "{placed}");
    let id = placed["checkout_id"].as_str().unwrap().to_owned();
    let bare = reqwest::Client::new();
    let base = &system.base_url;
    let body = order(&[("BOOK", 1)], "sim_approve");

    let no_key = bare.post(format!("{base}/v1/checkouts")).json(&body);
    let (status, headers, problem) = answer(no_key.send().await.unwrap()).await;
    assert_problem(status, &problem, 401, "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, problem) = answer(
        bare.get(format!("{base}/v1/checkouts/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(status, &problem, 401, "unauthorized");
    let (status, _, problem) = post_as(base, "not-a-client-key-at-all", &body, None).await;
    assert_problem(status, &problem, 401, "unauthorized");

    // A support token opens no checkout route...
    let (status, _, problem) = post_as(base, ADMIN_TOKEN, &body, None).await;
    assert_problem(status, &problem, 401, "unauthorized");
    let as_support = http_with_key(ADMIN_TOKEN).get(format!("{base}/v1/checkouts/{id}"));
    let (status, _, problem) = answer(as_support.send().await.unwrap()).await;
    assert_problem(status, &problem, 401, "unauthorized");
    // ...and a client key no support route.
    for path in ["/v1/admin/sagas", "/v1/admin/clients"] {
        let as_client = http_with_key(CLIENT_KEY).get(format!("{base}{path}"));
        let (status, _, problem) = answer(as_client.send().await.unwrap()).await;
        assert_problem(status, &problem, 401, "unauthorized");
    }

    // The saga records its client, and support finds it by the client.
    let found = system.sagas("client=test-shop").await;
    let sagas = found["sagas"].as_array().unwrap();
    assert_eq!(sagas.len(), 1, "{found}");
    assert_eq!(sagas[0]["client"], "test-shop", "{found}");
    let none = system.sagas(&format!("client={OTHER_CLIENT}")).await;
    assert_eq!(none["sagas"].as_array().unwrap().len(), 0, "{none}");
    let detail = system.saga_view(&id).await;
    assert_eq!(detail["client"], "test-shop", "{detail}");
    // Support finds it by the idempotency key as the client sent it.
    let keyed = system.sagas("idempotency_key=order-9").await;
    assert_eq!(keyed["sagas"][0]["saga_id"], id, "{keyed}");
    system.wait_final(&id).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_only_its_own_checkouts_and_its_own_idempotency_keys() {
    let system = System::start().await;
    let base = &system.base_url;
    let one = order(&[("BOOK", 1)], "sim_approve");
    let two = order(&[("BOOK", 2)], "sim_approve");

    let (status, _, mine) = post_as(base, CLIENT_KEY, &one, Some("order-1")).await;
    assert_eq!(status, 202, "{mine}");
    // The same key with another body, from another client: its own checkout.
    let (status, _, theirs) = post_as(base, OTHER_CLIENT_KEY, &two, Some("order-1")).await;
    assert_eq!(status, 202, "{theirs}");
    assert_ne!(mine["checkout_id"], theirs["checkout_id"]);
    // Each replay finds its own client's checkout.
    let (status, _, again) = post_as(base, OTHER_CLIENT_KEY, &two, Some("order-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["checkout_id"], theirs["checkout_id"]);
    let (status, _, again) = post_as(base, CLIENT_KEY, &one, Some("order-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["checkout_id"], mine["checkout_id"]);
    // The same client, the same key, another body: still refused.
    let (status, _, problem) = post_as(base, CLIENT_KEY, &two, Some("order-1")).await;
    assert_problem(status, &problem, 422, "idempotency-key-reused");

    let mine = mine["checkout_id"].as_str().unwrap().to_owned();
    let theirs = theirs["checkout_id"].as_str().unwrap().to_owned();
    let other = http_with_key(OTHER_CLIENT_KEY);
    for wait in ["", "?wait=2"] {
        let response = other
            .get(format!("{base}/v1/checkouts/{mine}{wait}"))
            .send();
        let (status, _, problem) = answer(response.await.unwrap()).await;
        assert_problem(status, &problem, 404, "not-found");
    }
    let done = system.wait_final(&mine).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Once final, a long-poll of another client's checkout is still 404,
    // however its answer reaches this instance.
    let response = other
        .get(format!("{base}/v1/checkouts/{mine}?wait=1"))
        .send();
    let (status, _, problem) = answer(response.await.unwrap()).await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, body) = system.get(&format!("/v1/checkouts/{theirs}")).await;
    assert_eq!(status, 404, "{body}");
    let (_, _, theirs_done) = answer(
        other
            .get(format!("{base}/v1/checkouts/{theirs}?wait=20"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(theirs_done["status"], "completed", "{theirs_done}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_rate_holds_across_two_instances_with_429_and_ratelimit_headers() {
    let mut system = System::start_setup(Setup {
        client_limits: Some(ClientLimits {
            // A burst of 4, then one checkout every 50 s: nothing comes
            // back during the test.
            rate_per_second: 0.02,
            rate_burst: 4,
            max_in_flight: 1_000,
        }),
        without_workers: true,
        ..Setup::default()
    })
    .await;
    let second = system.add_orchestrator().await;
    let instances = [
        system.clients.clone().unwrap(),
        system.other_clients[0].clone(),
    ];
    testing::eventually(
        "each instance sees both",
        Duration::from_secs(20),
        || async { instances.iter().all(|c| c.instances() == 2).then_some(()) },
    )
    .await;
    let bases = [system.base_url.clone(), second];
    let body = order(&[("BOOK", 1)], "sim_approve");
    let mut accepted = 0;
    let mut refused = Vec::new();
    for n in 0..10 {
        let (status, headers, answer) = post_as(&bases[n % 2], CLIENT_KEY, &body, None).await;
        match status {
            202 => accepted += 1,
            429 => refused.push((headers, answer)),
            _ => panic!("{status}: {answer}"),
        }
    }
    // Each instance takes half the burst: 4 in all, not 4 on each.
    assert_eq!(accepted, 4, "refused: {refused:?}");
    let (headers, problem) = &refused[0];
    assert_problem(429, problem, 429, "rate-limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{headers:?}");
    assert_eq!(headers["ratelimit-limit"], "4");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], headers["retry-after"]);
    // Another client has a rate of its own.
    let (status, _, answer) = post_as(&bases[0], OTHER_CLIENT_KEY, &body, None).await;
    assert_eq!(status, 202, "{answer}");
    system.stop_without_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_limit_of_checkouts_in_flight_gets_429_and_limits_are_per_client() {
    let system = System::start_setup(Setup {
        client_limits: Some(ClientLimits {
            max_in_flight: 2,
            ..crate::system::roomy_limits()
        }),
        // No worker: every checkout stays in flight.
        without_workers: true,
        ..Setup::default()
    })
    .await;
    let base = &system.base_url;
    let body = order(&[("BOOK", 1)], "sim_approve");
    for key in ["a", "b"] {
        let (status, _, answer) = post_as(base, CLIENT_KEY, &body, Some(key)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let (status, headers, problem) = post_as(base, CLIENT_KEY, &body, Some("c")).await;
    assert_problem(status, &problem, 429, "too-many-in-flight");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["ratelimit-limit"], "2");
    // A replay of a key still finds its checkout at the limit.
    let (status, _, again) = post_as(base, CLIENT_KEY, &body, Some("a")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(system.saga_count().await, 2);

    // Support gives the other client a limit of its own, of one.
    let (status, set) = system
        .admin(
            "PATCH",
            &format!("/v1/admin/clients/{OTHER_CLIENT}"),
            Some(serde_json::json!({"max_in_flight": 1})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["limits"]["max_in_flight"], 1, "{set}");
    let (status, _, answer) = post_as(base, OTHER_CLIENT_KEY, &body, None).await;
    assert_eq!(status, 202, "{answer}");
    let (status, _, problem) = post_as(base, OTHER_CLIENT_KEY, &body, None).await;
    assert_problem(status, &problem, 429, "too-many-in-flight");
    let (_, list) = system.admin("GET", "/v1/admin/clients", None).await;
    let clients = list["clients"].as_array().unwrap();
    let in_flight: Vec<(String, i64)> = clients
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["in_flight"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        in_flight,
        [("other-shop".to_owned(), 1), ("test-shop".to_owned(), 2)],
        "{list}"
    );
    system.stop_without_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_http_addr_the_support_routes_leave_the_public_listener() {
    let system = System::start_setup(Setup {
        admin_listener: true,
        without_workers: true,
        ..Setup::default()
    })
    .await;
    assert_ne!(system.admin_url, system.base_url);
    let support = http_with_key(ADMIN_TOKEN);
    for path in ["/v1/admin/sagas", "/v1/admin/clients", "/admin", "/metrics"] {
        for (listener, url, expected) in [
            ("public", &system.base_url, 404),
            ("admin", &system.admin_url, 200),
        ] {
            let answer = support.get(format!("{url}{path}")).send().await.unwrap();
            assert_eq!(
                answer.status(),
                expected,
                "{path} on the {listener} listener"
            );
        }
    }
    let body = order(&[("BOOK", 1)], "sim_approve");
    let (status, _, answer) = post_as(&system.admin_url, CLIENT_KEY, &body, None).await;
    assert_eq!(status, 404, "no checkout on the admin listener: {answer}");
    let (status, _, answer) = post_as(&system.base_url, CLIENT_KEY, &body, None).await;
    assert_eq!(status, 202, "{answer}");
    for base in [&system.base_url, &system.admin_url] {
        let ready = reqwest::get(format!("{base}/healthz")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    system.stop_without_audit().await;
}
