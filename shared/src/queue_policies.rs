//! The queue settings that may change between releases (delivery limit,
//! dead-letter exchange), kept as RabbitMQ policies through the management
//! HTTP API: a policy applies to live queues, where a declaration argument
//! is fixed for the queue's life and makes every later, different
//! declaration fail.
//!
//! Two ways in, as with database migrations: at start every service creates
//! the policies that are missing (never overwriting one, so that during a
//! roll an older and a newer build do not take turns rewriting them), and
//! the explicit, idempotent step `orchestrator topology` sets them to what
//! this build wants, which is how a change between releases is applied.

use std::time::Duration;

use reqwest::{Client, StatusCode, Url};
use serde_json::json;

use crate::topology::{Policy, Topology};

/// Where the management API answers when no URL is configured: the AMQP
/// node's host, this port, the same user and virtual host.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the RabbitMQ management API does not answer at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the RabbitMQ management API at {endpoint} refused policy {policy}: {status} {body}")]
    Refused {
        endpoint: String,
        policy: String,
        status: StatusCode,
        body: String,
    },
    #[error("cannot tell the management API's address from {0}")]
    BadUrl(String),
}

/// What applying did to one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created(String),
    Updated(String),
    Unchanged(String),
    /// It exists with another definition, and this call does not overwrite.
    LeftAsItIs(String),
}

/// A management API endpoint, with its credentials (never printed).
#[derive(Clone)]
pub struct Management {
    base: Url,
    user: String,
    password: String,
    vhost: String,
    client: Client,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("endpoint", &self.endpoint())
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

impl Management {
    /// `management_url` (`RABBITMQ_MANAGEMENT_URL`, `http://user:pass@host:port`)
    /// if given, else derived from the first AMQP node: same host, user and
    /// password, port 15672. The virtual host is the AMQP URL's.
    pub fn new(amqp_url: &str, management_url: Option<&str>) -> Result<Management, PolicyError> {
        let first = amqp_url.split(',').next().unwrap_or_default().trim();
        let amqp = Url::parse(first).map_err(|_| PolicyError::BadUrl("AMQP_URL".into()))?;
        let vhost = match amqp.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            path => percent_decode(path),
        };
        let base = match management_url {
            Some(url) => Url::parse(url)
                .map_err(|_| PolicyError::BadUrl("RABBITMQ_MANAGEMENT_URL".into()))?,
            None => {
                let host = amqp
                    .host_str()
                    .ok_or_else(|| PolicyError::BadUrl("AMQP_URL".into()))?;
                // A broker on another port than AMQP's own is not one whose
                // management port can be guessed (several nodes on one
                // host, a tunnel): it must be named.
                if amqp.port().is_some_and(|port| port != 5672) {
                    return Err(PolicyError::BadUrl(
                        "AMQP_URL, whose port is not 5672: set RABBITMQ_MANAGEMENT_URL".into(),
                    ));
                }
                Url::parse(&format!("http://{host}:{DEFAULT_MANAGEMENT_PORT}/"))
                    .map_err(|_| PolicyError::BadUrl("AMQP_URL".into()))?
            }
        };
        let (user, password) = if base.username().is_empty() {
            (
                percent_decode(amqp.username()),
                percent_decode(amqp.password().unwrap_or("")),
            )
        } else {
            (
                percent_decode(base.username()),
                percent_decode(base.password().unwrap_or("")),
            )
        };
        let (user, password) = if user.is_empty() {
            ("guest".to_owned(), "guest".to_owned())
        } else {
            (user, password)
        };
        let mut base = base;
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let client = Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| PolicyError::Unreachable {
                endpoint: base.to_string(),
                reason: error.to_string(),
            })?;
        Ok(Management {
            base,
            user,
            password,
            vhost,
            client,
        })
    }

    /// Host and port, for messages: no credentials.
    pub fn endpoint(&self) -> String {
        format!(
            "{}://{}:{}",
            self.base.scheme(),
            self.base.host_str().unwrap_or("?"),
            self.base.port_or_known_default().unwrap_or(0)
        )
    }

    fn policy_url(&self, name: &str) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .pop_if_empty()
            .extend(["api", "policies", &self.vhost, name]);
        url
    }

    /// Makes each of `topology`'s policies exist; with `overwrite`, also
    /// sets one that differs to this build's definition.
    pub async fn apply(
        &self,
        topology: &Topology,
        overwrite: bool,
    ) -> Result<Vec<Applied>, PolicyError> {
        let mut applied = Vec::new();
        for policy in topology.policies() {
            applied.push(self.apply_one(&policy, overwrite).await?);
        }
        Ok(applied)
    }

    /// Removes `topology`'s policies (tests clean up with it).
    pub async fn remove(&self, topology: &Topology) -> Result<(), PolicyError> {
        for policy in topology.policies() {
            let response = self
                .client
                .delete(self.policy_url(&policy.name))
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            if !(response.status().is_success() || response.status() == StatusCode::NOT_FOUND) {
                return Err(self.refused(&policy.name, response).await);
            }
        }
        Ok(())
    }

    async fn apply_one(&self, policy: &Policy, overwrite: bool) -> Result<Applied, PolicyError> {
        let url = self.policy_url(&policy.name);
        let current = self
            .client
            .get(url.clone())
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let existed = match current.status() {
            StatusCode::NOT_FOUND => false,
            status if status.is_success() => {
                let body: serde_json::Value = current.json().await.unwrap_or_default();
                let same = body.get("pattern").and_then(|p| p.as_str())
                    == Some(policy.pattern.as_str())
                    && body.get("definition") == Some(&policy.definition)
                    && body.get("apply-to").and_then(|a| a.as_str()) == Some("queues");
                if same {
                    return Ok(Applied::Unchanged(policy.name.clone()));
                }
                if !overwrite {
                    return Ok(Applied::LeftAsItIs(policy.name.clone()));
                }
                true
            }
            _ => return Err(self.refused(&policy.name, current).await),
        };
        let response = self
            .client
            .put(url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&json!({
                "pattern": policy.pattern,
                "definition": policy.definition,
                "apply-to": "queues",
                "priority": 0,
            }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.refused(&policy.name, response).await);
        }
        Ok(match existed {
            true => Applied::Updated(policy.name.clone()),
            false => Applied::Created(policy.name.clone()),
        })
    }

    pub(crate) fn vhost(&self) -> &str {
        &self.vhost
    }

    /// A request to `/api/<path>` (each segment escaped), authenticated.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &[&str],
    ) -> reqwest::RequestBuilder {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http URL has path segments")
            .pop_if_empty()
            .push("api")
            .extend(path);
        self.client
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
    }

    pub(crate) fn unreachable(&self, error: reqwest::Error) -> PolicyError {
        PolicyError::Unreachable {
            endpoint: self.endpoint(),
            // reqwest's text may hold the URL, never the credentials: they
            // are not in it.
            reason: error.without_url().to_string(),
        }
    }

    pub(crate) async fn refused(&self, policy: &str, response: reqwest::Response) -> PolicyError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        PolicyError::Refused {
            endpoint: self.endpoint(),
            policy: policy.to_owned(),
            status,
            body: body.chars().take(300).collect(),
        }
    }
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_the_amqp_node_without_its_credentials() {
        let m = Management::new("amqp://svc:s%40cret@10.1.2.3:5672/%2f", None).unwrap();
        assert_eq!(m.endpoint(), "http://10.1.2.3:15672");
        assert_eq!(m.vhost, "/");
        assert_eq!(m.user, "svc");
        assert_eq!(m.password, "s@cret");
        assert!(!format!("{m:?}").contains("cret"));
        assert_eq!(
            m.policy_url("p1").as_str(),
            "http://10.1.2.3:15672/api/policies/%2F/p1"
        );

        assert!(Management::new("amqp://a:b@h1:5681/%2f", None).is_err());
        let m = Management::new(
            "amqp://a:b@h1:5681/shop,amqp://a:b@h2:5682/shop",
            Some("http://admin:x@mgmt:8080/rabbit/"),
        )
        .unwrap();
        assert_eq!(m.endpoint(), "http://mgmt:8080");
        assert_eq!((m.user.as_str(), m.vhost.as_str()), ("admin", "shop"));
        assert_eq!(
            m.policy_url("p").as_str(),
            "http://mgmt:8080/rabbit/api/policies/shop/p"
        );
    }
}
