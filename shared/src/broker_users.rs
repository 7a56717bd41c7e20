//! Each service's own RabbitMQ user, with the least it needs:
//!
//! - the orchestrator declares the topology, writes commands (and dead
//!   letters), and reads replies and dead letters;
//! - a worker declares nothing, reads only its own command queue, and
//!   writes only replies (and dead letters).
//!
//! So no worker can publish a command, and a reply's `user_id` (which
//! RabbitMQ checks against the connection's user) says which worker sent
//! it. `orchestrator broker-users` creates the users through the
//! management API; the permissions are this file's, for one `AMQP_PREFIX`.

use std::collections::HashMap;

use rand::distr::{Alphanumeric, SampleString};
use reqwest::StatusCode;
use serde_json::json;

use crate::queue_policies::{Management, PolicyError};
use crate::topology::{exactly_one_of, Topology};
use saga_protocol::messages::WorkerKind;

/// A service, as RabbitMQ sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Orchestrator,
    Worker(WorkerKind),
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Orchestrator,
        Role::Worker(WorkerKind::Inventory),
        Role::Worker(WorkerKind::Tax),
        Role::Worker(WorkerKind::Payment),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Worker(kind) => kind.as_str(),
        }
    }

    /// The variable `broker-users` takes this role's password from, when
    /// the operator chooses it (as docker-compose.yml does) rather than
    /// having one generated.
    pub fn password_variable(self) -> &'static str {
        match self {
            Role::Orchestrator => "ORCHESTRATOR_AMQP_PASSWORD",
            Role::Worker(WorkerKind::Inventory) => "INVENTORY_AMQP_PASSWORD",
            Role::Worker(WorkerKind::Tax) => "TAX_AMQP_PASSWORD",
            Role::Worker(WorkerKind::Payment) => "PAYMENT_AMQP_PASSWORD",
        }
    }

    /// The management tags: the orchestrator keeps the queue policies
    /// (`policymaker`); a worker has no management access at all.
    fn tags(self) -> &'static str {
        match self {
            Role::Orchestrator => "policymaker",
            Role::Worker(_) => "",
        }
    }
}

/// RabbitMQ's three permission patterns (regular expressions over the
/// names of exchanges and queues in the virtual host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// Matches nothing: RabbitMQ's own idiom for "no permission".
const NOTHING: &str = "^$";

impl Topology {
    /// What `role` may do on this prefix's exchanges and queues, and on
    /// nothing else.
    pub fn permissions(&self, role: Role) -> Permissions {
        let exchanges = self.exchanges();
        let queues = self.queues();
        match role {
            Role::Orchestrator => {
                let everything: Vec<String> = exchanges.iter().chain(&queues).cloned().collect();
                Permissions {
                    // It declares every exchange and queue.
                    configure: exactly_one_of(&everything),
                    // Commands and dead letters; a binding needs write on
                    // its queue.
                    write: exactly_one_of(
                        &[self.command_exchange(), self.dead_letter_exchange()]
                            .into_iter()
                            .chain(queues.iter().cloned())
                            .collect::<Vec<_>>(),
                    ),
                    // Replies and dead letters; a binding needs read on
                    // its exchange.
                    read: exactly_one_of(
                        &[self.reply_queue(), self.dead_letter_queue()]
                            .into_iter()
                            .chain(exchanges.iter().cloned())
                            .collect::<Vec<_>>(),
                    ),
                }
            }
            Role::Worker(kind) => Permissions {
                configure: NOTHING.to_owned(),
                write: exactly_one_of(&[self.reply_exchange(), self.dead_letter_exchange()]),
                read: exactly_one_of(&[self.command_queue(kind)]),
            },
        }
    }
}

/// A user `broker-users` created, with the password it was given (shown
/// once, never stored here).
pub struct CreatedUser {
    pub role: Role,
    pub name: String,
    /// A new generated password; `None` when it kept its own or got the
    /// operator's.
    pub password: Option<secrecy::SecretString>,
    /// Its password is the operator's, from [`Role::password_variable`].
    pub given: bool,
}

/// The passwords the operator chose, by role: `<SERVICE>_AMQP_PASSWORD`,
/// each at least 16 characters when set.
pub fn given_passwords(
    source: &dyn crate::config::Source,
) -> Result<HashMap<Role, secrecy::SecretString>, crate::config::ConfigError> {
    let mut given = HashMap::new();
    for role in Role::ALL {
        let name = role.password_variable();
        let Some(value) = source.get(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        if value.chars().count() < MIN_GIVEN_PASSWORD {
            return Err(crate::config::ConfigError::Invalid {
                name,
                reason: format!(
                    "shorter than {MIN_GIVEN_PASSWORD} characters; generate one, e.g. with `openssl rand -hex 24`"
                ),
            });
        }
        given.insert(role, secrecy::SecretString::from(value));
    }
    Ok(given)
}

const MIN_GIVEN_PASSWORD: usize = 16;

impl std::fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedUser")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The user name of `role` under `base` (`checkout` gives
/// `checkout-orchestrator`, `checkout-payment`, ...).
pub fn user_name(base: &str, role: Role) -> String {
    format!("{base}-{}", role.as_str())
}

/// The orchestrator's `WORKER_USERS` for the users under `base`: each
/// worker kind's user, as [`user_name`] names it.
pub fn worker_users(base: &str) -> String {
    Role::ALL
        .into_iter()
        .filter_map(|role| match role {
            Role::Worker(kind) => Some(format!("{}={}", kind.as_str(), user_name(base, role))),
            Role::Orchestrator => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Management {
    /// Creates each role's user if it is missing (with a new random
    /// password, returned once), and sets every user's permissions and
    /// tags to this build's. An existing user keeps its password, unless
    /// `rotate`: then it gets a new one too. A role in `given` gets that
    /// password, every time.
    pub async fn ensure_users(
        &self,
        topology: &Topology,
        base: &str,
        rotate: bool,
        given: &HashMap<Role, secrecy::SecretString>,
    ) -> Result<Vec<CreatedUser>, PolicyError> {
        use secrecy::ExposeSecret;
        let mut users = Vec::new();
        for role in Role::ALL {
            let name = user_name(base, role);
            let exists = self.get(&["users", &name]).await?.is_some();
            let password = if let Some(password) = given.get(&role) {
                self.put(
                    &["users", &name],
                    json!({ "password": password.expose_secret(), "tags": role.tags() }),
                )
                .await?;
                None
            } else if exists && !rotate {
                // Tags only: a PUT without a password would remove it.
                let current = self.get(&["users", &name]).await?.unwrap_or_default();
                let mut body = json!({ "tags": role.tags() });
                if let Some(hash) = current.get("password_hash") {
                    body["password_hash"] = hash.clone();
                    body["hashing_algorithm"] = current
                        .get("hashing_algorithm")
                        .cloned()
                        .unwrap_or_else(|| json!("rabbit_password_hashing_sha256"));
                }
                self.put(&["users", &name], body).await?;
                None
            } else {
                let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
                self.put(
                    &["users", &name],
                    json!({ "password": password, "tags": role.tags() }),
                )
                .await?;
                Some(secrecy::SecretString::from(password))
            };
            let permissions = topology.permissions(role);
            self.put(
                &["permissions", self.vhost(), &name],
                json!({
                    "configure": permissions.configure,
                    "write": permissions.write,
                    "read": permissions.read,
                }),
            )
            .await?;
            users.push(CreatedUser {
                role,
                name,
                password,
                given: given.contains_key(&role),
            });
        }
        Ok(users)
    }

    /// Removes each role's user (tests clean up with it).
    pub async fn remove_users(&self, base: &str) -> Result<(), PolicyError> {
        for role in Role::ALL {
            self.delete(&["users", &user_name(base, role)]).await?;
        }
        Ok(())
    }

    async fn get(&self, path: &[&str]) -> Result<Option<serde_json::Value>, PolicyError> {
        let response = self.request(reqwest::Method::GET, path).send().await;
        let response = response.map_err(|e| self.unreachable(e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(response.json().await.unwrap_or_default())),
            _ => Err(self.refused(&path.join("/"), response).await),
        }
    }

    async fn put(&self, path: &[&str], body: serde_json::Value) -> Result<(), PolicyError> {
        let response = self.request(reqwest::Method::PUT, path).json(&body).send();
        let response = response.await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(self.refused(&path.join("/"), response).await);
        }
        Ok(())
    }

    async fn delete(&self, path: &[&str]) -> Result<(), PolicyError> {
        let response = self.request(reqwest::Method::DELETE, path).send();
        let response = response.await.map_err(|e| self.unreachable(e))?;
        if !(response.status().is_success() || response.status() == StatusCode::NOT_FOUND) {
            return Err(self.refused(&path.join("/"), response).await);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::url_as;
    use regex_lite::Regex;

    fn allows(pattern: &str, name: &str) -> bool {
        Regex::new(pattern).unwrap().is_match(name)
    }

    #[test]
    fn a_url_as_another_user_keeps_every_node() {
        let url = url_as(
            "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f",
            "checkout-tax",
            "s3cret",
        );
        assert_eq!(
            url,
            "amqp://checkout-tax:s3cret@127.0.0.1:5681/%2f,amqp://checkout-tax:s3cret@127.0.0.1:5682/%2f"
        );
    }

    #[test]
    fn a_worker_reads_its_own_queue_and_writes_replies_only() {
        let topology = Topology::new("shop.");
        let payment = topology.permissions(Role::Worker(WorkerKind::Payment));
        assert!(allows(
            &payment.read,
            &topology.command_queue(WorkerKind::Payment)
        ));
        assert!(!allows(
            &payment.read,
            &topology.command_queue(WorkerKind::Inventory)
        ));
        assert!(!allows(&payment.read, &topology.reply_queue()));
        assert!(allows(&payment.write, &topology.reply_exchange()));
        assert!(!allows(&payment.write, &topology.command_exchange()));
        for name in topology.exchanges().iter().chain(&topology.queues()) {
            assert!(!allows(&payment.configure, name), "{name}");
        }
    }

    #[test]
    fn only_the_orchestrator_writes_commands_and_nobody_else_s_prefix() {
        let topology = Topology::new("shop.");
        let orchestrator = topology.permissions(Role::Orchestrator);
        assert!(allows(&orchestrator.write, &topology.command_exchange()));
        assert!(!allows(&orchestrator.write, &topology.reply_exchange()));
        assert!(allows(&orchestrator.read, &topology.reply_queue()));
        let other = Topology::new("other.");
        for name in other.exchanges().iter().chain(&other.queues()) {
            assert!(!allows(&orchestrator.configure, name), "{name}");
            assert!(!allows(&orchestrator.write, name), "{name}");
            assert!(!allows(&orchestrator.read, name), "{name}");
        }
    }
}
