//! The HTTP side: one request to the support API, its answer or why not.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use crate::args::Global;
use crate::failure::Failure;

pub struct Request {
    method: Method,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Request {
    pub fn get(path: &[&str]) -> Self {
        Request {
            method: Method::GET,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn post(path: &[&str], body: Value) -> Self {
        Request {
            method: Method::POST,
            body: Some(body),
            ..Request::get(path)
        }
    }

    /// With the query parameters given; an absent one is left out.
    pub fn with_query(
        mut self,
        parameters: impl IntoIterator<Item = (&'static str, Option<String>)>,
    ) -> Self {
        self.query = parameters
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        self
    }

    pub fn patch(path: &[&str], body: Value) -> Self {
        Request {
            method: Method::PATCH,
            body: Some(body),
            ..Request::get(path)
        }
    }
}

pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
    timeout: u64,
}

impl Api {
    pub fn new(global: &Global) -> Result<Self, Failure> {
        let token = global.token.as_deref().map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(Failure::new(
                5,
                "Unauthorized",
                "no token: set SAGACTL_TOKEN or pass --token",
            ));
        }
        // Checked here so the HTTP library never gets to word an error
        // about the header that holds the secret.
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Failure::new(
                5,
                "Unauthorized",
                "the token holds characters a bearer token cannot have",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(global.timeout.clamp(1, 10)))
            .timeout(Duration::from_secs(global.timeout.max(1)))
            .user_agent(concat!("sagactl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new(1, "Client setup failed", e.to_string()))?;
        Ok(Api {
            http,
            base: global.url.clone(),
            token: token.to_owned(),
            timeout: global.timeout.max(1),
        })
    }

    /// The route's URL under the base, each segment escaped, so the base
    /// may carry a path prefix (behind a proxy) and an id cannot reshape
    /// the path.
    fn url(&self, path: &[String]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("base_url admits only URLs with a path")
            .pop_if_empty()
            .extend(path);
        url
    }

    /// The raw body of a 2xx answer, checked to be JSON.
    pub async fn send(&self, request: Request) -> Result<(String, Value), Failure> {
        let url = self.url(&request.path);
        let mut builder = self
            .http
            .request(request.method, url.clone())
            .bearer_auth(&self.token)
            .query(&request.query);
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| Failure::unreachable(&url, &e, self.timeout))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Failure::unreachable(&url, &e, self.timeout))?;
        if !status.is_success() {
            return Err(Failure::from_answer(status, &body));
        }
        let value = serde_json::from_str(&body).map_err(|_| {
            Failure::new(
                1,
                "Unexpected answer",
                format!("{url} answered {status} without JSON; is --url the orchestrator?"),
            )
        })?;
        Ok((body, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::base_url;

    #[test]
    fn urls_keep_a_base_path_and_escape_segments() {
        let global = Global {
            url: base_url("http://host:1/support/").unwrap(),
            token: Some("t".into()),
            json: false,
            timeout: 1,
        };
        let api = Api::new(&global).unwrap();
        let path = ["v1".to_owned(), "a/b?c".to_owned()];
        assert_eq!(
            api.url(&path).as_str(),
            "http://host:1/support/v1/a%2Fb%3Fc"
        );
    }
}
