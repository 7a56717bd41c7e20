//! One checkout is one trace: the four real binaries export their spans
//! over OTLP (http/protobuf) to a collector this test runs on a port-0
//! listener, each process under its own `service.name`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use saga_testkit as testing;

use crate::crashes::{charge_compensated_after_one_second, Deployment, PATIENCE};
use crate::system::order;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Collected {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root.
    parent: String,
    attributes: HashMap<String, String>,
}

impl Collected {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Collected>>>;

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// The OTLP/HTTP traces endpoint of a collector: decodes each export and
/// keeps its spans.
async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            return (axum::http::StatusCode::BAD_REQUEST, error.to_string()).into_response()
        }
    };
    let mut collected = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .and_then(|a| a.get("service.name").cloned())
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            collected.push(Collected {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
            });
        }
    }
    // An empty ExportTraceServiceResponse: every span accepted.
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn start_collector() -> (String, Spans) {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// `span` and its ancestors, root first, as far as the collected spans go.
fn lineage<'a>(spans: &'a [Collected], span: &'a Collected) -> Vec<&'a Collected> {
    let by_id: HashMap<&str, &Collected> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut chain = vec![span];
    while let Some(parent) = by_id.get(chain.last().unwrap().parent.as_str()) {
        chain.push(parent);
    }
    chain.reverse();
    chain
}

/// The spans a checkout's path goes through; others (a database call, the
/// inbox) hang off them.
const CHAIN: [&str; 7] = [
    "request",
    "create",
    "publish",
    "command",
    "reply",
    "apply_reply",
    "transition",
];

/// A span of the chain as the test names it: service, span name, and the
/// attribute that tells it from its siblings.
fn label(span: &Collected) -> String {
    let detail = match span.name.as_str() {
        "request" => format!(
            "{} {}",
            span.attribute("method").unwrap_or("?"),
            span.attribute("uri").unwrap_or("?")
        ),
        "publish" => span.attribute("routing_key").unwrap_or("?").to_owned(),
        "command" | "reply" | "apply_reply" => span.attribute("step").unwrap_or("?").to_owned(),
        "transition" => format!("to {}", span.attribute("to").unwrap_or("?")),
        _ => String::new(),
    };
    format!("{}: {} {}", span.service, span.name, detail)
        .trim_end()
        .to_owned()
}

fn print_tree(spans: &[Collected], id: &str, depth: usize) {
    for span in spans.iter().filter(|s| s.span_id == id) {
        println!("{}{}", "  ".repeat(depth), label(span));
    }
    for child in spans.iter().filter(|s| s.parent == id) {
        print_tree(spans, &child.span_id, depth + 1);
    }
}

/// The four binaries, exporting to a collector of this test; the
/// orchestrator gets `orchestrator_env` too.
async fn traced_deployment(orchestrator_env: Vec<(&'static str, String)>) -> (Deployment, Spans) {
    let (collector, spans) = start_collector().await;
    let mut env = HashMap::new();
    for service in ["orchestrator", "inventory", "tax", "payment"] {
        env.insert(
            service,
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()),
                // Nothing leaves on the timer within a test: what the
                // collector holds was flushed at exit.
                ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
                // The log level a service has unless told otherwise. A
                // log that enables the same spans as the trace filter is
                // what lost the workers' and the replies' spans: the
                // suite's usual `warn` hid it.
                ("RUST_LOG", "info,sqlx=warn".to_owned()),
            ],
        );
    }
    let orchestrator = env.get_mut("orchestrator").unwrap();
    orchestrator.push(("OTEL_SERVICE_NAME", "checkout-api".to_owned()));
    orchestrator.extend(orchestrator_env);
    (Deployment::start_with(env).await, spans)
}

/// Once the orchestrator's spans are in: the path from the root of the
/// checkout's transition to `last` to that transition (as labels), every
/// span collected, and the id of that root.
async fn path_to(spans: &Spans, id: &str, last: &str) -> (Vec<String>, Vec<Collected>, String) {
    testing::eventually("the checkout's last transition", PATIENCE, || {
        let spans = spans.lock().unwrap().clone();
        async move {
            let end = spans.iter().find(|s| {
                s.name == "transition"
                    && s.attribute("saga_id") == Some(id)
                    && s.attribute("to") == Some(last)
            })?;
            // Every process flushed as it stopped: a chain that stops short
            // of the request is a broken trace, which the caller's
            // assertion on it shows.
            let chain = lineage(&spans, end);
            let root = chain[0].span_id.clone();
            let chain: Vec<String> = chain
                .into_iter()
                .filter(|s| CHAIN.contains(&s.name.as_str()))
                .map(label)
                .collect();
            Some((chain, spans, root))
        }
    })
    .await
}

/// Once the deployment's one saga, the checkout `id`, has ended `ending`
/// and every process has stopped (SIGTERM to each; each exits 0, flushing
/// its spans on the way out): [`path_to`] its last transition, with the
/// whole trace printed as the collector holds it (`--nocapture` shows it).
async fn settled_trace(
    deployment: Deployment,
    spans: &Spans,
    id: &str,
    ending: &str,
) -> (Vec<String>, Vec<Collected>, String) {
    let statuses = deployment.settle().await;
    assert_eq!(statuses.get(ending), Some(&1), "{statuses:?}");
    deployment.stop().await;
    let (chain, all, root) = path_to(spans, id, ending).await;
    print_tree(&all, &root, 0);
    (chain, all, root)
}

/// One TSHIRT checkout paid with `payment_method` through a
/// [`traced_deployment`], ended `ending`: its id, and its [`settled_trace`].
async fn traced_checkout(
    orchestrator_env: Vec<(&'static str, String)>,
    payment_method: &str,
    ending: &str,
) -> (String, Vec<String>, Vec<Collected>) {
    let (deployment, spans) = traced_deployment(orchestrator_env).await;
    let id = deployment
        .place(&order(&[("TSHIRT", 1)], payment_method))
        .await;
    let (chain, all, _) = settled_trace(deployment, &spans, &id, ending).await;
    (id, chain, all)
}

/// Every span that names the checkout is in one trace, with spans of the
/// four services; that trace's id.
fn assert_one_trace(all: &[Collected], id: &str) -> String {
    let ours: Vec<&Collected> = all
        .iter()
        .filter(|s| s.attribute("saga_id") == Some(id))
        .collect();
    let trace = ours[0].trace_id.clone();
    assert!(
        ours.iter().all(|s| s.trace_id == trace),
        "every span of the checkout in one trace: {ours:#?}"
    );
    let services: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|s| s.trace_id == trace)
        .map(|s| s.service.as_str())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["checkout-api", "inventory", "payment", "tax"]
    );
    // The deployment handled this checkout alone: every worker's handling
    // of a command is in its trace, under that command's span.
    let handlings: Vec<&Collected> = all.iter().filter(|s| s.name == "handle_command").collect();
    assert!(!handlings.is_empty(), "the workers' handling is exported");
    for handling in handlings {
        let parent = all.iter().find(|s| s.span_id == handling.parent);
        assert!(
            handling.trace_id == trace && parent.is_some_and(|p| p.name == "command"),
            "{handling:?} under {parent:?}, in trace {trace}"
        );
    }
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_the_four_services() {
    let (id, chain, all) = traced_checkout(vec![], "sim_approve", "completed").await;
    assert_eq!(
        chain,
        [
            "checkout-api: request POST /v1/checkouts",
            "checkout-api: create",
            "checkout-api: publish inventory.reserve",
            "inventory: command inventory.reserve",
            "checkout-api: reply inventory.reserve",
            "checkout-api: apply_reply inventory.reserve",
            "checkout-api: transition to running",
            "checkout-api: publish tax.calculate",
            "tax: command tax.calculate",
            "checkout-api: reply tax.calculate",
            "checkout-api: apply_reply tax.calculate",
            "checkout-api: transition to running",
            "checkout-api: publish payment.charge",
            "payment: command payment.charge",
            "checkout-api: reply payment.charge",
            "checkout-api: apply_reply payment.charge",
            "checkout-api: transition to completed",
        ],
        "the parent order of the checkout's spans"
    );
    let trace = assert_one_trace(&all, &id);
    for command in all
        .iter()
        .filter(|s| s.name == "command" && s.trace_id == trace)
    {
        assert_eq!(
            command.attribute("saga_id"),
            Some(id.as_str()),
            "{command:?}"
        );
        assert_eq!(command.attribute("attempt"), Some("1"), "{command:?}");
        assert!(command.attribute("step").is_some(), "{command:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_and_the_compensation_it_starts_stay_in_the_checkouts_trace() {
    // No message causes the deadline's transition: it continues the trace
    // the saga was created in.
    let orchestrator_env = charge_compensated_after_one_second();
    let (id, chain, all) = traced_checkout(orchestrator_env, "sim_slow_2000", "compensated").await;
    assert_eq!(
        chain,
        [
            "checkout-api: request POST /v1/checkouts",
            "checkout-api: create",
            "checkout-api: transition to compensating",
            "checkout-api: publish payment.refund",
            "payment: command payment.refund",
            "checkout-api: reply payment.refund",
            "checkout-api: apply_reply payment.refund",
            "checkout-api: transition to compensating",
            "checkout-api: publish inventory.release",
            "inventory: command inventory.release",
            "checkout-api: reply inventory.release",
            "checkout-api: apply_reply inventory.release",
            "checkout-api: transition to compensated",
        ],
        "the compensation hangs off the checkout's creation"
    );
    assert_one_trace(&all, &id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_a_traceparent_finds_the_whole_checkout_in_its_own_trace() {
    let (deployment, spans) = traced_deployment(vec![]).await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let id = deployment
        .place_with_headers(
            &order(&[("TSHIRT", 1)], "sim_approve"),
            &[(
                "traceparent",
                &format!("00-{client_trace}-{client_span}-01"),
            )],
        )
        .await;
    let (_, all, root) = settled_trace(deployment, &spans, &id, "completed").await;
    let request = all.iter().find(|s| s.span_id == root).unwrap();
    assert_eq!(request.trace_id, client_trace, "{request:?}");
    assert_eq!(
        request.parent, client_span,
        "the client's span is the parent"
    );
    assert_eq!(assert_one_trace(&all, &id), client_trace);
}

#[test]
fn an_otel_variable_this_build_cannot_honour_stops_a_service_with_one_line_naming_it() {
    let orchestrator = std::path::PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"));
    for binary in [orchestrator, crate::crashes::bin_dir().join("tax")] {
        let mut child = std::process::Command::new(&binary)
            .env_clear()
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", binary.display()));
        // A build that ignored the variable would start and wait for its
        // (missing) database for ever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} started despite the variable", binary.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{}: {stderr}", binary.display());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL is invalid"),
            "{stderr}"
        );
    }
}
