//! What ships in `deploy/` for operators queries only metrics that exist:
//! every metric the Grafana dashboard and the Prometheus alert rules name
//! is one a running orchestrator's `/metrics` exports after one checkout
//! (or one Prometheus or RabbitMQ itself provides).

use std::collections::BTreeSet;
use std::path::PathBuf;

use saga_testkit::metrics::scrape;
use serde_json::Value;

use crate::system::{order, System};

/// Series that come from elsewhere: Prometheus's own `up`, and RabbitMQ's
/// `rabbitmq_prometheus` plugin.
const NOT_OURS: &[&str] = &["up", "rabbitmq_queue_consumers"];

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// Aggregations, which may read `sum by (le) (...)`: not followed by `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The metric names a PromQL expression selects: identifiers outside
/// strings, label matchers, ranges and `by (...)` lists, that are neither
/// functions nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut labels_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if labels_next => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                labels_next = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if KEYWORDS.contains(&word.as_str()) {
                    labels_next = call
                        && matches!(
                            word.as_str(),
                            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                        );
                } else if !call && !AGGREGATIONS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (`5m`, `1e-9`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels is a list");
    assert!(!panels.is_empty(), "the dashboard has no panel");
    panels
        .iter()
        .flat_map(|panel| {
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(
                !targets.is_empty(),
                "panel {} queries nothing",
                panel["title"]
            );
            targets
        })
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect()
}

/// Every `expr:` of the rules file, one-line or block (`|`).
fn alert_queries(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, step) (rate(checkout_step_round_trip_seconds_bucket{step=~"a|b"}[5m]))) > 5
           and on (step) max(up{job="x"}) / ignoring(instance) checkout_x offset 5m"#,
    );
    let expected: BTreeSet<String> = [
        "checkout_step_round_trip_seconds_bucket",
        "up",
        "checkout_x",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_query_only_metrics_the_orchestrator_exports() {
    let dashboard: Value = serde_json::from_str(&deploy("grafana/checkout.json"))
        .expect("deploy/grafana/checkout.json is valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let rules = deploy("prometheus/alerts.yml");

    let system = System::start().await;
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed");
    // The database gauges appear once counted (every few seconds).
    let metrics = saga_testkit::eventually(
        "the database gauges counted",
        std::time::Duration::from_secs(20),
        || async {
            let metrics = scrape(&system.base_url).await;
            metrics
                .value("checkout_outbox_oldest_due_seconds")
                .is_some()
                .then_some(metrics)
        },
    )
    .await;
    let exported = metrics.names();

    for (what, queries) in [
        (
            "deploy/grafana/checkout.json",
            dashboard_queries(&dashboard),
        ),
        ("deploy/prometheus/alerts.yml", alert_queries(&rules)),
    ] {
        assert!(
            queries.len() >= 10,
            "{what}: only {} queries",
            queries.len()
        );
        let mut named = BTreeSet::new();
        for query in &queries {
            named.extend(metric_names(query));
        }
        let missing: Vec<&String> = named
            .iter()
            .filter(|name| !NOT_OURS.contains(&name.as_str()) && !exported.contains(*name))
            .collect();
        assert!(
            missing.is_empty(),
            "{what} queries metrics /metrics does not export: {missing:?}\n{metrics}"
        );
        // Each shipped histogram and the new counters are on show.
        for name in [
            "checkout_duration_seconds_bucket",
            "checkout_step_round_trip_seconds_bucket",
            "checkout_outbox_oldest_due_seconds",
            "checkout_broker_blocked",
        ] {
            assert!(
                named.contains(name) || what.ends_with("alerts.yml"),
                "{what} never shows {name}"
            );
        }
    }
    system.stop().await;
}
