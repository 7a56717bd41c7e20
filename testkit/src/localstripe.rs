//! localstripe, a Stripe server nobody here wrote, started for one test:
//! its own port and its own state file (kept across [`LocalStripe::stop`]
//! and [`LocalStripe::start_again`]), killed with the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{eventually, free_port, service_log, ServiceCommand};

/// localstripe takes any key that starts with `sk_`.
pub const SECRET_KEY: &str = "sk_test_localstripe";

/// Test cards, as localstripe treats them.
pub mod cards {
    pub const APPROVES: &str = "4242424242424242";
    /// Attaches, then declines the charge (402 card_declined).
    pub const DECLINES: &str = "4000000000000341";
    /// The charge requires 3-D Secure (`requires_action`).
    pub const REQUIRES_ACTION: &str = "4000002760003184";
}

pub struct LocalStripe {
    pub port: u16,
    state: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

impl LocalStripe {
    /// Installs localstripe once (scripts/localstripe) and starts it.
    pub async fn start() -> LocalStripe {
        let state =
            std::env::temp_dir().join(format!("localstripe-{}.pickle", crate::random_suffix()));
        let mut server = LocalStripe {
            port: free_port(),
            state,
            child: None,
            http: reqwest::Client::new(),
        };
        server.start_again().await;
        server
    }

    /// `STRIPE_API_BASE` for a service.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables a payment worker charges through this server with.
    pub fn payment_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAYMENT_PROVIDER", "stripe".to_owned()),
            ("STRIPE_SECRET_KEY", SECRET_KEY.to_owned()),
            ("STRIPE_API_BASE", self.url()),
            ("STRIPE_TIMEOUT_MS", "5000".to_owned()),
        ]
    }

    /// Starts the server (again, after [`LocalStripe::stop`]: same port,
    /// same state) and waits until it answers.
    pub async fn start_again(&mut self) {
        let script = repository_root().join("scripts/localstripe");
        let child = Command::new(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--state")
            .arg(&self.state)
            .spawn_service(service_log())
            .expect("scripts/localstripe starts");
        self.child = Some(child);
        let (http, url) = (
            self.http.clone(),
            format!("{}/v1/payment_intents?limit=1", self.url()),
        );
        eventually("localstripe answers", Duration::from_secs(120), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let answer = http
                    .get(&url)
                    .basic_auth(SECRET_KEY, Some(""))
                    .send()
                    .await
                    .ok()?;
                answer.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// Stops the server as an outage would (SIGTERM: its state is saved
    /// for [`LocalStripe::start_again`]).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Value {
        let answer = request
            .basic_auth(SECRET_KEY, Some(""))
            .send()
            .await
            .expect("localstripe answers");
        let status = answer.status();
        let body: Value = answer.json().await.expect("localstripe answers JSON");
        assert!(status.is_success(), "localstripe answered {status}: {body}");
        body
    }

    /// A PaymentMethod of the test card `number` (see [`cards`]), as the
    /// storefront's Stripe.js would make it: its id.
    pub async fn payment_method(&self, number: &str) -> String {
        let form = [
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
            ("card[cvc]", "123"),
        ];
        let method = self
            .call(
                self.http
                    .post(format!("{}/v1/payment_methods", self.url()))
                    .form(&form),
            )
            .await;
        method["id"]
            .as_str()
            .expect("a PaymentMethod id")
            .to_owned()
    }

    async fn list(&self, path: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(after) = &after {
                query.push(("starting_after", after.clone()));
            }
            let page = self
                .call(self.http.get(format!("{}{path}", self.url())).query(&query))
                .await;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data
                .last()
                .and_then(|last| last["id"].as_str())
                .map(str::to_owned);
            all.extend(data);
            if !page["has_more"].as_bool().unwrap_or(false) || after.is_none() {
                return all;
            }
        }
    }

    /// Every PaymentIntent the server holds.
    pub async fn intents(&self) -> Vec<Value> {
        self.list("/v1/payment_intents").await
    }

    /// Every refund the server holds.
    pub async fn refunds(&self) -> Vec<Value> {
        self.list("/v1/refunds").await
    }

    /// The PaymentIntent `id`, its charge expanded.
    pub async fn intent(&self, id: &str) -> Value {
        self.call(
            self.http
                .get(format!("{}/v1/payment_intents/{id}", self.url())),
        )
        .await
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.state);
    }
}
