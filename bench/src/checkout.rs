//! One checkout as a storefront places it: POST, then long-poll until the
//! status is final.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::BenchError;

/// What every checkout of a run looks like.
#[derive(Clone, Debug)]
pub struct CheckoutShape {
    pub url: String,
    /// The checkout client key sent as the bearer token.
    pub key: String,
    /// SKUs to pick from; they must exist with enough stock.
    pub skus: Vec<String>,
    /// Lines per checkout, each a different SKU picked at random.
    pub lines: usize,
    pub country: String,
    pub region: String,
    pub payment_method: String,
}

impl CheckoutShape {
    fn body(&self, n: u64) -> Value {
        let picked = rand::seq::index::sample(
            &mut rand::rng(),
            self.skus.len(),
            self.lines.min(self.skus.len()),
        );
        json!({
            "customer_id": format!("bench-{n}"),
            "items": picked
                .into_iter()
                .map(|i| json!({"sku": self.skus[i], "quantity": 1}))
                .collect::<Vec<_>>(),
            "ship_to": {"country": self.country, "region": self.region},
            "payment_method": self.payment_method,
        })
    }
}

/// An HTTP client sized for `in_flight` checkouts at once, each holding a
/// connection for its long-poll.
pub fn client(in_flight: usize) -> Result<reqwest::Client, BenchError> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Places checkout number `n` and waits for its final status (`completed`,
/// `rejected`, `cancelled`).
pub async fn place_and_wait(
    client: &reqwest::Client,
    shape: &CheckoutShape,
    n: u64,
) -> Result<String, BenchError> {
    let response = client
        .post(format!("{}/v1/checkouts", shape.url))
        .bearer_auth(&shape.key)
        .json(&shape.body(n))
        .send()
        .await?;
    let created: Value = succeeded(response, "POST /v1/checkouts")
        .await?
        .json()
        .await?;
    let id = created["checkout_id"]
        .as_str()
        .ok_or(BenchError::Malformed("POST /v1/checkouts"))?
        .to_owned();
    if let Some(status) = final_status(&created) {
        return Ok(status);
    }
    loop {
        let response = client
            .get(format!("{}/v1/checkouts/{id}?wait=30", shape.url))
            .bearer_auth(&shape.key)
            .send()
            .await?;
        let status = response.status();
        // Over the server's long-poll bound: poll again when it says.
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
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
        let view: Value = succeeded(response, "GET /v1/checkouts/{id}")
            .await?
            .json()
            .await?;
        if let Some(status) = final_status(&view) {
            return Ok(status);
        }
    }
}

/// `response` if it succeeded; otherwise `what` was refused, and its body
/// says why.
async fn succeeded(
    response: reqwest::Response,
    what: &'static str,
) -> Result<reqwest::Response, BenchError> {
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        Err(BenchError::Refused {
            what,
            status,
            body: response.text().await.unwrap_or_default(),
        })
    }
}

fn final_status(view: &Value) -> Option<String> {
    match view["status"].as_str() {
        Some("pending") | None => None,
        Some(status) => Some(status.to_owned()),
    }
}
