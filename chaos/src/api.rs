//! The checkout API as a patient client sees it across two orchestrators
//! that come and go: every call is retried against either instance until a
//! bound, and a POST is only ever retried with the same Idempotency-Key and
//! body, so a retry can return the checkout a lost answer created but never
//! create a second one.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use saga_shared::broker::Backoff;
use serde_json::Value;
use uuid::Uuid;

use crate::workload::Planned;

/// One POST or GET (without a long-poll) may take this long: past it the
/// instance is treated as down and the other one is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The `?wait=` of a long-poll (the API allows up to 30).
const LONG_POLL_SECONDS: u64 = 20;

#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    bases: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Posted {
    /// 202 (created) or 200 (the key's checkout, created by an earlier
    /// attempt whose answer was lost).
    Accepted { id: Uuid, attempts: u32 },
    /// Never accepted within the bound; the last failure.
    Refused { attempts: u32, last_error: String },
    /// A 4xx: the request itself is wrong, retrying cannot help.
    Invalid { status: u16, body: String },
}

/// A checkout as `GET /v1/checkouts/{id}` shows it.
#[derive(Debug, Clone)]
pub struct View {
    pub status: String,
    pub reason: Option<String>,
}

impl View {
    pub fn is_final(&self) -> bool {
        self.status != "pending"
    }

    /// `completed`, `rejected <reason>`, `cancelled` or `pending`.
    pub fn label(&self) -> String {
        match (&*self.status, &self.reason) {
            ("rejected", Some(reason)) => format!("rejected {reason}"),
            (status, _) => status.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Lookup {
    Found(View),
    /// A 404 from a live instance: the checkout does not exist.
    NotFound,
    /// No instance answered within the bound.
    Unanswered(String),
}

impl Api {
    /// `key`: the checkout client key sent with every request.
    pub fn new(bases: Vec<String>, key: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}")
                .parse()
                .expect("a hex key is a valid header"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            // A killed instance leaves dead pooled connections; keep few.
            .pool_idle_timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client without TLS builds");
        Api { client, bases }
    }

    pub fn base(&self, instance: usize) -> &str {
        &self.bases[instance % self.bases.len()]
    }

    /// Posts `checkout` to instance `first`, then alternately to each, until
    /// accepted or `bound` has passed.
    pub async fn post_checkout(&self, checkout: &Planned, first: usize, bound: Duration) -> Posted {
        let started = Instant::now();
        let mut attempts = 0;
        let mut pause = pauses();
        loop {
            let base = self.base(first + attempts as usize);
            attempts += 1;
            let sent = self
                .client
                .post(format!("{base}/v1/checkouts"))
                .header("Idempotency-Key", &checkout.key)
                .json(&checkout.body)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await;
            let last_error = match sent {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    if status == StatusCode::ACCEPTED || status == StatusCode::OK {
                        match checkout_id(&body) {
                            Some(id) => return Posted::Accepted { id, attempts },
                            None => format!("{status} without a checkout_id: {body}"),
                        }
                    } else if status.is_client_error()
                        && status != StatusCode::REQUEST_TIMEOUT
                        && status != StatusCode::TOO_MANY_REQUESTS
                    {
                        return Posted::Invalid {
                            status: status.as_u16(),
                            body,
                        };
                    } else {
                        format!("{status}: {}", first_line(&body))
                    }
                }
                Err(error) => describe(&error),
            };
            if started.elapsed() >= bound {
                return Posted::Refused {
                    attempts,
                    last_error,
                };
            }
            tokio::time::sleep(pause.next_ceiling()).await;
        }
    }

    /// Long-polls until the checkout is final or `bound` has passed; the
    /// last view seen (pending, or `None` if no instance ever answered).
    pub async fn wait_final(&self, id: Uuid, first: usize, bound: Duration) -> Option<View> {
        let started = Instant::now();
        let mut last = None;
        let mut instance = first;
        let mut pause = pauses();
        while started.elapsed() < bound {
            let left = bound.saturating_sub(started.elapsed()).as_secs();
            let wait = left.clamp(1, LONG_POLL_SECONDS);
            match self.get(id, instance, wait).await {
                Ok(Some(view)) if view.is_final() => return Some(view),
                Ok(Some(view)) => {
                    last = Some(view);
                    pause = pauses();
                }
                // A 404 is for `lookup` to judge; keep waiting here.
                Ok(None) | Err(_) => {
                    instance += 1;
                    tokio::time::sleep(pause.next_ceiling()).await;
                }
            }
        }
        last
    }

    /// Whether the checkout exists, asking each instance in turn until one
    /// answers (200 or 404) or `bound` has passed.
    pub async fn lookup(&self, id: Uuid, bound: Duration) -> Lookup {
        let started = Instant::now();
        let mut instance = 0;
        let mut pause = pauses();
        loop {
            match self.get(id, instance, 0).await {
                Ok(Some(view)) => return Lookup::Found(view),
                Ok(None) => return Lookup::NotFound,
                Err(error) if started.elapsed() >= bound => return Lookup::Unanswered(error),
                Err(_) => {
                    instance += 1;
                    tokio::time::sleep(pause.next_ceiling()).await;
                }
            }
        }
    }

    /// One GET; `Ok(None)` is a 404.
    async fn get(&self, id: Uuid, instance: usize, wait: u64) -> Result<Option<View>, String> {
        let response = self
            .client
            .get(format!(
                "{}/v1/checkouts/{id}?wait={wait}",
                self.base(instance)
            ))
            .timeout(REQUEST_TIMEOUT + Duration::from_secs(wait))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| describe(&e))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(format!("{status}: {}", first_line(&body)));
        }
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("unreadable checkout: {e}"))?;
        Ok(Some(View {
            status: json["status"].as_str().unwrap_or("?").to_owned(),
            reason: json["reason"].as_str().map(str::to_owned),
        }))
    }

    /// Whether the instance says it is ready (its database and broker).
    pub async fn ready(&self, instance: usize) -> bool {
        let answer = self
            .client
            .get(format!("{}/readyz", self.base(instance)))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        matches!(answer, Ok(response) if response.status() == StatusCode::OK)
    }
}

fn checkout_id(body: &str) -> Option<Uuid> {
    let json: Value = serde_json::from_str(body).ok()?;
    json["checkout_id"].as_str()?.parse().ok()
}

fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// reqwest's display hides the cause (refused, reset, timed out).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    if error.is_connect() {
        return "connection refused".to_owned();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Pauses between retries: short at first (a killed instance's twin is
/// usually fine), growing to a second while a server restarts.
fn pauses() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
}
