//! The HTTP client: one per process, its key held as a secret, each call
//! bounded by a timeout, each answer read by [`crate::intent`] and each
//! failure sorted by [`crate::error`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{classify, StripeError};
use crate::intent::{PaymentIntent, Refund};

/// Stripe's own API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// A connection that takes longer than this to open is a provider that is
/// away, whatever the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What stops a client from being built: each names its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("STRIPE_API_BASE: {0}")]
    ApiBase(String),
    #[error("STRIPE_SECRET_KEY: {0}")]
    SecretKey(String),
    #[error("the HTTP client cannot be built: {0}")]
    Build(String),
}

/// One page of a list, oldest or newest first as the server lists.
#[derive(Debug, Clone, Deserialize)]
struct ListPage<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Checks `api_base`: an absolute http(s) URL, plain http only to this
/// machine (the key travels in every request).
fn api_base(api_base: &str) -> Result<String, ClientError> {
    let base = api_base.trim().trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        rest
    } else if let Some(rest) = base.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(ClientError::ApiBase(format!(
                "`{base}`: plain http is allowed only to this machine (127.0.0.1, localhost, [::1]); the secret key travels in every request"
            )));
        }
        rest
    } else {
        return Err(ClientError::ApiBase(format!(
            "`{base}` is not an http(s) URL (default {DEFAULT_API_BASE})"
        )));
    };
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(ClientError::ApiBase(format!(
            "`{base}` must be a bare base URL such as {DEFAULT_API_BASE}"
        )));
    }
    Ok(base.to_owned())
}

/// Stripe's ids are letters, digits and underscores; anything else never
/// goes into a path.
fn checked_id(id: &str) -> Result<&str, StripeError> {
    if !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(id)
    } else {
        Err(StripeError::Refused {
            status: 400,
            message: "not a Stripe id".to_owned(),
        })
    }
}

/// A PaymentIntent to create, unconfirmed.
#[derive(Debug, Clone, Copy)]
pub struct NewIntent<'a> {
    pub amount: i64,
    /// Lowercase ISO 4217.
    pub currency: &'a str,
    pub payment_method: &'a str,
    pub metadata: &'a [(&'a str, &'a str)],
}

impl Client {
    /// A client of `api_base` (see [`DEFAULT_API_BASE`]) with `secret_key`
    /// (`sk_...` or a restricted `rk_...`), each call bounded by `timeout`.
    pub fn new(
        api_base_url: &str,
        secret_key: SecretString,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let base = api_base(api_base_url)?;
        let key = secret_key.expose_secret();
        if !(key.starts_with("sk_") || key.starts_with("rk_"))
            || key.len() < 8
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            // The value itself is never repeated.
            return Err(ClientError::SecretKey(
                "must be a Stripe secret key (sk_... or rk_...); a publishable key (pk_...) cannot charge".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Client {
            http,
            base,
            key: secret_key,
        })
    }

    /// Creates a PaymentIntent with `confirm=false`: no money moves.
    #[tracing::instrument(skip_all, fields(idempotency_key))]
    pub async fn create_intent(
        &self,
        intent: &NewIntent<'_>,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let fields = vec![
            ("amount".to_owned(), intent.amount.to_string()),
            ("currency".to_owned(), intent.currency.to_owned()),
            (
                "payment_method".to_owned(),
                intent.payment_method.to_owned(),
            ),
            ("confirm".to_owned(), "false".to_owned()),
        ];
        self.post_keyed(
            "/v1/payment_intents",
            idempotency_key,
            fields,
            intent.metadata,
        )
        .await
    }

    /// Confirms the PaymentIntent `id`: the money moves now, or the card
    /// is declined (402).
    pub async fn confirm(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{}/confirm", checked_id(id)?);
        self.send(self.post(&path)).await
    }

    /// The PaymentIntent `id`, its latest charge expanded (what was
    /// refunded of it).
    pub async fn retrieve(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{}", checked_id(id)?);
        let request = self.get(&path).query(&[("expand[]", "latest_charge")]);
        self.send(request).await
    }

    /// Cancels the PaymentIntent `id`, which must not have succeeded.
    pub async fn cancel(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{}/cancel", checked_id(id)?);
        self.send(self.post(&path)).await
    }

    /// Refunds `amount` of the PaymentIntent `intent_id`'s charge.
    pub async fn refund(
        &self,
        intent_id: &str,
        amount: i64,
        idempotency_key: &str,
        metadata: &[(&str, &str)],
    ) -> Result<Refund, StripeError> {
        let fields = vec![
            (
                "payment_intent".to_owned(),
                checked_id(intent_id)?.to_owned(),
            ),
            ("amount".to_owned(), amount.to_string()),
        ];
        self.post_keyed("/v1/refunds", idempotency_key, fields, metadata)
            .await
    }

    /// A POST that may move money: `fields` and `metadata[...]` as a form,
    /// under `idempotency_key`.
    async fn post_keyed<T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: &str,
        mut fields: Vec<(String, String)>,
        metadata: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        for (key, value) in metadata {
            fields.push((format!("metadata[{key}]"), (*value).to_owned()));
        }
        let request = self
            .post(path)
            .header("Idempotency-Key", idempotency_key)
            .form(&fields);
        self.send(request).await
    }

    /// Every PaymentIntent of the account, page by page (100 a page, by
    /// `starting_after`).
    pub async fn all_intents(&self) -> Result<Vec<PaymentIntent>, StripeError> {
        self.all("/v1/payment_intents", |intent: &PaymentIntent| &intent.id)
            .await
    }

    /// Every refund of the account, as [`Client::all_intents`].
    pub async fn all_refunds(&self) -> Result<Vec<Refund>, StripeError> {
        self.all("/v1/refunds", |refund: &Refund| &refund.id).await
    }

    async fn all<T: DeserializeOwned>(
        &self,
        path: &str,
        id: impl Fn(&T) -> &String,
    ) -> Result<Vec<T>, StripeError> {
        let mut all: Vec<T> = Vec::new();
        loop {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(last) = all.last() {
                query.push(("starting_after", checked_id(id(last))?.to_owned()));
            }
            let page: ListPage<T> = self.send(self.get(path).query(&query)).await?;
            let more = page.has_more && !page.data.is_empty();
            all.extend(page.data);
            if !more {
                return Ok(all);
            }
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose_secret())
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose_secret())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        let response = request
            .send()
            .await
            .map_err(|e| StripeError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| StripeError::Unavailable(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            return Err(classify(status, &body));
        }
        serde_json::from_str(&body).map_err(|e| {
            StripeError::Unavailable(format!("an answer that is not Stripe's ({status}): {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let ok = |base: &str| {
            Client::new(base, key("sk_test_abcdef"), Duration::from_secs(1)).map(|c| c.base)
        };
        assert_eq!(
            ok("https://api.stripe.com/").unwrap(),
            "https://api.stripe.com"
        );
        assert_eq!(
            ok("http://127.0.0.1:8420").unwrap(),
            "http://127.0.0.1:8420"
        );
        assert!(ok("http://localhost:1/").is_ok());
        for bad in [
            "http://stripe.example.com",
            "ftp://x",
            "api.stripe.com",
            "https://",
            "https://x?y=1",
        ] {
            let error = ok(bad).unwrap_err().to_string();
            assert!(error.starts_with("STRIPE_API_BASE"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_wrong_key_is_refused_without_being_repeated() {
        for bad in ["pk_test_abcdef", "", "sk_", "sk_test abc"] {
            let error = Client::new(DEFAULT_API_BASE, key(bad), Duration::from_secs(1))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("STRIPE_SECRET_KEY"), "{error}");
            if bad.len() > 5 {
                assert!(!error.contains(bad), "{error}");
            }
        }
        let client = Client::new(
            DEFAULT_API_BASE,
            key("sk_live_secret123"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("secret123"));
    }

    #[test]
    fn ids_with_anything_but_letters_digits_and_underscores_stay_out_of_paths() {
        assert!(checked_id("pi_3AbC").is_ok());
        for bad in ["", "pi/../x", "pi?x=1", "pi 1"] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }
}
