//! Measures POST-to-completed latency of checkouts against a running
//! system: `checkout-bench --url http://127.0.0.1:8080 --count 200`.
//!
//! Each checkout is posted, then long-polled (`?wait=`) until final; the
//! latency is from just before the POST to the final answer.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "checkout-bench",
    version,
    about = "POST-to-completed latency of checkouts"
)]
struct Args {
    /// Base URL of the orchestrator.
    #[arg(long, env = "CHECKOUT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many checkouts to run.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Checkouts in flight at once (1 = sequential).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// SKUs to choose from (they must exist with enough stock).
    #[arg(long, value_delimiter = ',', default_value = "SKU-TSHIRT,SKU-BOOK")]
    skus: Vec<String>,
    /// Lines per checkout, each a different SKU picked at random from `--skus`.
    #[arg(long, default_value_t = 2)]
    lines: usize,
    #[arg(long, default_value = "US")]
    country: String,
    #[arg(long, default_value = "CA")]
    region: String,
    #[arg(long, default_value = "sim_approve")]
    payment_method: String,
}

async fn one(
    client: &reqwest::Client,
    args: &Args,
    n: usize,
) -> Result<(Duration, String), String> {
    let body = json!({
        "customer_id": format!("bench-{n}"),
        "items": rand::seq::index::sample(&mut rand::rng(), args.skus.len(), args.lines.min(args.skus.len()))
            .into_iter()
            .map(|i| json!({"sku": args.skus[i], "quantity": 1}))
            .collect::<Vec<_>>(),
        "ship_to": {"country": args.country, "region": args.region},
        "payment_method": args.payment_method,
    });
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/checkouts", args.url))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let created: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("POST answered {status}: {created}"));
    }
    let id = created["checkout_id"]
        .as_str()
        .ok_or("no checkout_id")?
        .to_owned();
    loop {
        let response = client
            .get(format!("{}/v1/checkouts/{id}?wait=30", args.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        // Over the server's long-poll bound: poll again when it says.
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            if let Some(seconds) = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                continue;
            }
        }
        let view: Value = response.json().await.map_err(|e| e.to_string())?;
        let status = view["status"].as_str().unwrap_or("?").to_owned();
        if status != "pending" {
            return Ok((started.elapsed(), status));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(args.count);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut next = 0usize;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    while next < args.count || !in_flight.is_empty() {
        while next < args.count && in_flight.len() < args.concurrency.max(1) {
            in_flight.push(one(&client, &args, next));
            next += 1;
        }
        match in_flight.next().await {
            Some(Ok((latency, status))) => {
                latencies.push(latency);
                *outcomes.entry(status).or_default() += 1;
            }
            Some(Err(error)) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
            None => break,
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{} checkouts, concurrency {}, in {:.2} s ({:.0}/s)",
        latencies.len(),
        args.concurrency,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!("outcomes: {outcomes:?}");
    println!(
        "POST-to-final latency: p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    ExitCode::SUCCESS
}
