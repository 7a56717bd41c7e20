//! The HTTP server's bounds: slow clients, too many connections, too many
//! long-polls, slow requests, and long-polls woken by their own saga only.

use std::time::{Duration, Instant};

use orchestrator::config::HttpLimits;
use orchestrator::saga::StepPolicies;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::system::{order, Setup, System};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: orchestrator\r\n\r\n";

fn limits(change: impl FnOnce(&mut HttpLimits)) -> HttpLimits {
    let mut limits = HttpLimits::default();
    change(&mut limits);
    limits
}

async fn system_with(limits: HttpLimits) -> System {
    System::start_setup(Setup {
        policies: StepPolicies::uniform(System::fast_retries(1)),
        http_limits: limits,
        ..Setup::default()
    })
    .await
}

async fn connect(system: &System) -> TcpStream {
    TcpStream::connect(system.base_url.trim_start_matches("http://"))
        .await
        .expect("the orchestrator accepts TCP connections")
}

/// Reads until the response head of one answer has arrived; its status line.
async fn status_line(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.expect("the response reads");
        assert!(n > 0, "connection closed before a response");
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or_default().to_owned()
}

/// A checkout parked by a provider outage: pending to its client, for as
/// long as the test likes.
async fn parked_checkout(system: &System) -> String {
    let id = system.park(&order(&[("BOOK", 1)], "sim_approve")).await;
    system.outage(false).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_with_its_headers_is_cut_off() {
    let system = system_with(limits(|l| l.header_read_timeout = Duration::from_secs(1))).await;
    let (mut slow, mut trickle) = connect(&system).await.into_split();
    let started = Instant::now();
    // One header byte every 200 ms: alive, but never a whole request.
    let sender = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: orchestrator\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    sender.abort();
    assert!(
        closed.is_ok(),
        "a client trickling its headers is still connected after 10 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A client that sends its request at once is served as ever.
    let mut prompt = connect(&system).await;
    prompt.write_all(HEALTHZ).await.unwrap();
    assert!(status_line(&mut prompt).await.contains(" 200 "));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    let system = system_with(limits(|l| {
        l.max_connections = 2;
        l.max_waiters = 1;
        // The held connections idle: they must outlive the test's waits.
        l.header_read_timeout = Duration::from_secs(60);
    }))
    .await;
    // Two keep-alive connections, served once and left open: the cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = connect(&system).await;
        connection.write_all(HEALTHZ).await.unwrap();
        assert!(status_line(&mut connection).await.contains(" 200 "));
        held.push(connection);
    }
    let mut third = connect(&system).await;
    third.write_all(HEALTHZ).await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), status_line(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection was served over a cap of two: {early:?}"
    );
    drop(held.pop());
    let answered = tokio::time::timeout(Duration::from_secs(5), status_line(&mut third))
        .await
        .expect("the waiting connection is served once another closes");
    assert!(answered.contains(" 200 "), "{answered}");
    drop(held);
    drop(third);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_beyond_the_bound_get_503_with_retry_after() {
    let system = system_with(limits(|l| l.max_waiters = 1)).await;
    let id = parked_checkout(&system).await;
    let first = long_poll(&system, &id, 20).await;

    let started = Instant::now();
    let second = system.fetch(&format!("/v1/checkouts/{id}?wait=5")).await;
    assert_eq!(second.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(second.headers()["retry-after"], "1");
    let problem: Value = second.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:checkout-saga:problem:too-many-waiters"
    );
    // A plain read takes no place among the waiters.
    let (status, view) = system.get(&format!("/v1/checkouts/{id}")).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("pending")));

    // The waiter is woken by its saga finishing, and its place is free again.
    system.cancel(&id).await;
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the waiter answers when its saga finishes")
        .unwrap();
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(system.waiters.waiting(), 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_saga_wakes_only_its_own_waiter() {
    let system = system_with(HttpLimits::default()).await;
    let other = parked_checkout(&system).await;
    let wait = Duration::from_secs(12);
    let started = Instant::now();
    // Asleep, not only registered: a poll still at its first read would see
    // the finish below and answer at once, for the wrong reason.
    let other_poll = long_poll(&system, &other, wait.as_secs()).await;
    // Finished behind the orchestrator's back (no notification): only a
    // re-read shows it, and only its own finish may trigger one before
    // its wait is over.
    cancel_unannounced(&system, &other).await;

    let mine = system.place(&order(&[("BOOK", 1)], "sim_approve")).await;
    let done = system.wait_final(&mine).await;
    assert_eq!(done["status"], "completed");
    let finished_mine = started.elapsed();
    assert!(
        finished_mine < wait,
        "the other checkout took {finished_mine:?}"
    );

    let (body, answered) = other_poll.await.unwrap();
    assert!(
        answered >= wait,
        "the other saga's long-poll was woken by another saga finishing (answered after {answered:?})"
    );
    // At its deadline the long-poll reads again rather than repeat what it saw.
    assert_eq!(body["status"], "cancelled", "{body}");
    system.stop_without_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_gets_503() {
    let system = system_with(limits(|l| l.request_timeout = Duration::from_secs(1))).await;
    // A lock nobody gets past: the list query waits behind it.
    let mut blocker = system.orchestrator_db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE sagas IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(8),
        system.admin("GET", "/v1/admin/sagas", None),
    )
    .await;
    let elapsed = started.elapsed();
    blocker.rollback().await.unwrap();
    let (status, problem) = answer.expect("a stuck request is answered within its timeout");
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:checkout-saga:problem:timeout");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // The next request, with nothing in its way, is served.
    let (status, _) = system.admin("GET", "/v1/admin/sagas", None).await;
    assert_eq!(status, 200);
    system.stop().await;
}

/// Long-polls `id` with `wait` seconds in the background, the one
/// long-poll of the system, and returns once it is asleep: (body, when).
async fn long_poll(
    system: &System,
    id: &str,
    wait: u64,
) -> tokio::task::JoinHandle<(Value, Duration)> {
    let (http, url, id) = (system.http.clone(), system.base_url.clone(), id.to_owned());
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let response = http
            .get(format!("{url}/v1/checkouts/{id}?wait={wait}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        (response.json().await.unwrap(), started.elapsed())
    });
    until_waiting(system, 1).await;
    poll
}

/// Until `n` long-polls have read their saga and sleep (a registered one
/// may still be reading, and would see a change made now at once).
async fn until_waiting(system: &System, n: usize) {
    saga_testkit::eventually("the long-poll waits", Duration::from_secs(10), || async {
        (system.waiters.asleep() == n).then_some(())
    })
    .await;
}

/// Cancels the saga `id` straight in its table, as no writer of the
/// orchestrator does: no notification tells a waiter.
async fn cancel_unannounced(system: &System, id: &str) {
    sqlx::query(
        "UPDATE sagas SET status = 'cancelled',
                state = jsonb_set(state, '{status}', '\"cancelled\"')
         WHERE id = $1",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .execute(&system.orchestrator_db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_listener_reconnects_every_waiter_rechecks() {
    let system = system_with(HttpLimits::default()).await;
    let id = parked_checkout(&system).await;
    let poll = long_poll(&system, &id, 25).await;
    // Finished while no notification could arrive.
    cancel_unannounced(&system, &id).await;
    let pool = &system.orchestrator_db.pool;
    saga_testkit::eventually(
        "the listener's connection cut",
        Duration::from_secs(10),
        || async {
            let cut: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            cut.contains(&true).then_some(())
        },
    )
    .await;
    let (body, answered) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the waiter re-checked after the reconnect")
        .unwrap();
    assert_eq!(body["status"], "cancelled", "{body}");
    assert!(answered < Duration::from_secs(20), "{answered:?}");
    system.stop_without_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_orchestrator_answers_its_long_polls_at_once() {
    let mut system = system_with(HttpLimits::default()).await;
    let id = parked_checkout(&system).await;
    let poll = long_poll(&system, &id, 30).await;
    let started = Instant::now();
    system.stop_orchestrator().await;
    let stopped = started.elapsed();
    let (body, _) = poll.await.unwrap();
    assert_eq!(body["status"], "pending", "{body}");
    assert!(
        stopped < Duration::from_secs(10),
        "a long-poll held the shutdown for {stopped:?}"
    );
    system.stop().await;
}

/// Sends what a finishing transition notifies, for a saga that in truth
/// is still pending: a long-poll that answers with it did not read the
/// saga again.
async fn notify_finished(system: &System, id: &str, total_cents: i64) {
    let answer = json!({
        "checkout_id": id,
        "status": "completed",
        "subtotal_cents": total_cents,
        "tax_cents": 0,
        "total_cents": total_cents,
        "currency": "USD",
        "created_at": "2026-11-30T18:00:00+00:00",
        "updated_at": "2026-11-30T18:00:01.5+00:00",
    });
    sqlx::query("SELECT pg_notify('saga_final', $1)")
        .bind(answer.to_string())
        .execute(&system.orchestrator_db.pool)
        .await
        .unwrap();
}

async fn listener_pids(system: &System) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&system.orchestrator_db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_from_the_notification_before_and_after_a_reconnect() {
    let system = system_with(HttpLimits::default()).await;
    let id = parked_checkout(&system).await;
    let poll = long_poll(&system, &id, 25).await;
    notify_finished(&system, &id, 4242).await;
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the notification answered the long-poll")
        .unwrap();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["total_cents"], 4242, "{body}");
    assert_eq!(body["updated_at"], "2026-11-30T18:00:01.500Z", "{body}");
    // The saga itself never changed.
    assert_eq!(system.saga_status(&id).await, "suspended");

    let poll = long_poll(&system, &id, 25).await;
    let before = listener_pids(&system).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid")
        .bind(&before)
        .execute(&system.orchestrator_db.pool)
        .await
        .unwrap();
    saga_testkit::eventually("the listener back", Duration::from_secs(15), || async {
        let now = listener_pids(&system).await;
        (!now.is_empty() && now.iter().all(|pid| !before.contains(pid))).then_some(())
    })
    .await;
    // The re-check after the reconnect read the saga: still pending, the
    // poll waits on.
    until_waiting(&system, 1).await;
    assert!(!poll.is_finished());
    notify_finished(&system, &id, 4343).await;
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("a notification after the reconnect answered the long-poll")
        .unwrap();
    assert_eq!(body["total_cents"], 4343, "{body}");
    system.stop_without_audit().await;
}
