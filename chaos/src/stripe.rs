//! `--provider stripe`: the payment workers charge through a local
//! Stripe server (localstripe, which `scripts/chaos --provider stripe`
//! starts), the checkouts pay with PaymentMethods made on it, and the
//! auditor reconciles with it.

use anyhow::{bail, Context};
use serde_json::Value;

/// localstripe takes any key that starts with `sk_`; a run never talks to
/// Stripe itself (the API base must be this machine).
const SECRET_KEY: &str = "sk_test_chaos";

/// Test cards, as localstripe treats them.
const APPROVES: &str = "4242424242424242";
const DECLINES: &str = "4000000000000341";

/// The Stripe server of a run and the two PaymentMethods its checkouts use.
#[derive(Debug, Clone)]
pub struct StripeRun {
    pub api_base: String,
    pub approve: String,
    pub decline: String,
}

impl StripeRun {
    /// Makes the PaymentMethods on `api_base`, as a storefront's Stripe.js
    /// would.
    pub async fn prepare(api_base: &str) -> anyhow::Result<StripeRun> {
        let http = reqwest::Client::new();
        let method = |number: &'static str| {
            let request = http
                .post(format!("{api_base}/v1/payment_methods"))
                .basic_auth(SECRET_KEY, Some(""))
                .form(&[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ]);
            async move {
                let answer = request
                    .send()
                    .await
                    .with_context(|| format!("the Stripe server at {api_base} does not answer"))?;
                let status = answer.status();
                let body: Value = answer
                    .json()
                    .await
                    .context("the Stripe server answered no JSON")?;
                match body["id"].as_str() {
                    Some(id) if status.is_success() => Ok(id.to_owned()),
                    _ => bail!("the Stripe server refused a PaymentMethod ({status}): {body}"),
                }
            }
        };
        Ok(StripeRun {
            api_base: api_base.trim_end_matches('/').to_owned(),
            approve: method(APPROVES).await?,
            decline: method(DECLINES).await?,
        })
    }

    /// What a payment worker charges through this server with.
    pub fn payment_env(&self) -> Vec<(String, String)> {
        vec![
            ("PAYMENT_PROVIDER".to_owned(), "stripe".to_owned()),
            ("STRIPE_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
            ("STRIPE_API_BASE".to_owned(), self.api_base.clone()),
        ]
    }

    /// What the auditor reconciles with this server through.
    pub fn auditor_env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_PROVIDER".to_owned(), "stripe".to_owned()),
            ("STRIPE_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
            ("STRIPE_API_BASE".to_owned(), self.api_base.clone()),
        ]
    }
}
