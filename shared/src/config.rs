//! Configuration read once at start from the environment. A missing or
//! malformed variable is one error that names it.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use crate::tls::{self, CaFile};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {name} is missing: {hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where values come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

pub fn required(
    source: &dyn Source,
    name: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    match source.get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::Missing { name, hint }),
    }
}

pub fn parsed_or<T>(source: &dyn Source, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Ok(parsed(source, name)?.unwrap_or(default))
}

/// `name` parsed, or `None` when it is unset or empty.
pub fn parsed<T>(source: &dyn Source, name: &'static str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match source.get(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: format!("`{v}`: {e}"),
            }),
    }
}

pub(crate) fn url(
    source: &dyn Source,
    name: &'static str,
    schemes: &[&str],
    hint: &'static str,
) -> Result<SecretString, ConfigError> {
    let value = required(source, name, hint)?;
    if !schemes
        .iter()
        .any(|s| value.starts_with(&format!("{s}://")))
    {
        // The value may hold a password: say what is wrong, not what it is.
        return Err(ConfigError::Invalid {
            name,
            reason: format!("must start with {}", schemes.join(":// or ") + "://"),
        });
    }
    Ok(SecretString::from(value))
}

/// `DATABASE_URL`: a PostgreSQL URL whose TLS parameters make sense. All a
/// one-shot command (`migrate`, `inventory import`) needs.
pub fn database_url(source: &dyn Source) -> Result<SecretString, ConfigError> {
    let database_url = url(
        source,
        "DATABASE_URL",
        &["postgres", "postgresql"],
        "set it to this service's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/inventory",
    )?;
    tls::check_database_url(database_url.expose_secret())?;
    Ok(database_url)
}

/// `AMQP_URL` (one node's URL, or several separated by commas), with
/// `AMQP_USER` and `AMQP_PASSWORD`, when set, in place of every node's
/// credentials: a deployment can keep each service's password in a secret
/// of its own, apart from the broker's address (docker-compose.yml does).
pub(crate) fn amqp_url(source: &dyn Source) -> Result<SecretString, ConfigError> {
    let amqp_url = url(
        source,
        "AMQP_URL",
        &["amqp", "amqps"],
        "set it to the RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
    )?;
    let set = |name| source.get(name).filter(|value| !value.trim().is_empty());
    match (set("AMQP_USER"), set("AMQP_PASSWORD")) {
        (None, None) => Ok(amqp_url),
        (Some(user), Some(password)) => {
            let nodes = amqp_url.expose_secret().split(',');
            if nodes
                .clone()
                .any(|node| reqwest::Url::parse(node.trim()).is_err())
            {
                return Err(ConfigError::Invalid {
                    name: "AMQP_URL",
                    reason: "a node is not a URL, so AMQP_USER cannot be set in it".into(),
                });
            }
            Ok(SecretString::from(crate::broker_users::url_as(
                amqp_url.expose_secret(),
                &user,
                &password,
            )))
        }
        (Some(_), None) => Err(ConfigError::Missing {
            name: "AMQP_PASSWORD",
            hint: "AMQP_USER is set: set AMQP_PASSWORD to that user's password too",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            name: "AMQP_USER",
            hint: "AMQP_PASSWORD is set: set AMQP_USER to the user it belongs to",
        }),
    }
}

/// Prefix of every exchange and queue name: letters, digits, `.`, `-`, `_`.
pub(crate) fn prefix(source: &dyn Source) -> Result<String, ConfigError> {
    let value = source.get("AMQP_PREFIX").unwrap_or_default();
    if value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ConfigError::Invalid {
            name: "AMQP_PREFIX",
            reason: format!("`{value}`: use at most 64 letters, digits, `.`, `-` or `_`"),
        });
    }
    Ok(value)
}

/// `RABBITMQ_MANAGEMENT_URL`, if set.
pub(crate) fn management_url(source: &dyn Source) -> Result<Option<SecretString>, ConfigError> {
    match source.get("RABBITMQ_MANAGEMENT_URL") {
        Some(value) if !value.trim().is_empty() => Ok(Some(url(
            source,
            "RABBITMQ_MANAGEMENT_URL",
            &["http", "https"],
            "set it to RabbitMQ's management API, e.g. http://admin:secret@127.0.0.1:15672, or leave it unset",
        )?)),
        _ => Ok(None),
    }
}

/// What every service needs: its database, the broker and its prefix.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub database_url: SecretString,
    pub amqp_url: SecretString,
    pub amqp_prefix: String,
    /// The CA that verifies an `amqps://` broker (`AMQP_CA_FILE`, or the
    /// URL's `cacertfile`); `None`: the system's CA store.
    pub amqp_ca: Option<CaFile>,
    /// Unacked deliveries a consumer holds, and so messages handled at once.
    pub prefetch: u16,
    /// `DATABASE_POOL_SIZE`: connections in the service's PostgreSQL pool,
    /// when the operator sets it; unset, each service sizes its pool to its
    /// own concurrency (see `database::pool_for_concurrency`).
    pub database_pool_size: Option<u32>,
    /// After SIGTERM, how long in-flight work may take before the process
    /// exits anyway (what is still unacked is redelivered elsewhere).
    pub shutdown_grace: std::time::Duration,
    /// `RABBITMQ_MANAGEMENT_URL`: where the queue policies are kept; unset,
    /// the first AMQP node's host on port 15672 with its credentials.
    pub rabbitmq_management_url: Option<SecretString>,
    /// `MIGRATE_ON_START` and the migration timeouts: migrate at start
    /// (the default) or only check the schema.
    pub schema: crate::schema::OnStart,
}

impl ServiceConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let prefetch = parsed_or(source, "PREFETCH", 32u16)?;
        if prefetch == 0 {
            return Err(ConfigError::Invalid {
                name: "PREFETCH",
                reason: "must be at least 1".into(),
            });
        }
        let database_pool_size = parsed::<u32>(source, "DATABASE_POOL_SIZE")?;
        if database_pool_size == Some(0) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_POOL_SIZE",
                reason: "must be at least 1".into(),
            });
        }
        let grace_seconds = parsed_or(source, "SHUTDOWN_GRACE_SECONDS", 30u64)?;
        let database_url = database_url(source)?;
        let amqp_url = amqp_url(source)?;
        let amqp_ca = tls::amqp_ca(source, amqp_url.expose_secret())?;
        let rabbitmq_management_url = management_url(source)?;
        Ok(ServiceConfig {
            database_url,
            amqp_url,
            amqp_prefix: prefix(source)?,
            amqp_ca,
            prefetch,
            database_pool_size,
            shutdown_grace: std::time::Duration::from_secs(grace_seconds),
            rabbitmq_management_url,
            schema: crate::schema::OnStart::from_source(source)?,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn amqp_url(&self) -> &str {
        self.amqp_url.expose_secret()
    }

    /// The management API that keeps the queue policies.
    pub fn management(
        &self,
    ) -> Result<crate::queue_policies::Management, crate::queue_policies::PolicyError> {
        crate::queue_policies::Management::new(
            self.amqp_url(),
            self.rabbitmq_management_url
                .as_ref()
                .map(|url| url.expose_secret()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_the_missing_variable() {
        let err = ServiceConfig::from_source(&env(&[("AMQP_URL", "amqp://x")])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL is missing"), "{err}");
    }

    #[test]
    fn names_the_malformed_variable_without_echoing_secrets() {
        let err = ServiceConfig::from_source(&env(&[
            ("DATABASE_URL", "mysql://u:hunter2@x/y"),
            ("AMQP_URL", "amqp://x"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is invalid"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let err = ServiceConfig::from_source(&env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("AMQP_URL", "amqp://x"),
            ("PREFETCH", "lots"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("PREFETCH is invalid"), "{err}");
    }

    #[test]
    fn the_pool_size_is_an_override_only_when_set() {
        let base = [("DATABASE_URL", "postgres://x/y"), ("AMQP_URL", "amqp://x")];
        let config = ServiceConfig::from_source(&env(&base)).unwrap();
        assert_eq!(config.database_pool_size, None);
        let config =
            ServiceConfig::from_source(&env(&[base[0], base[1], ("DATABASE_POOL_SIZE", "5")]))
                .unwrap();
        assert_eq!(config.database_pool_size, Some(5));
        for bad in ["0", "many", "-1"] {
            let err =
                ServiceConfig::from_source(&env(&[base[0], base[1], ("DATABASE_POOL_SIZE", bad)]))
                    .unwrap_err();
            assert!(
                err.to_string().contains("DATABASE_POOL_SIZE is invalid"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_broker_user_can_be_kept_apart_from_the_url() {
        let base = [
            ("DATABASE_URL", "postgres://x/y"),
            (
                "AMQP_URL",
                "amqp://127.0.0.1:5681/%2f,amqp://127.0.0.1:5682/%2f",
            ),
        ];
        let config = ServiceConfig::from_source(&env(&[
            base[0],
            base[1],
            ("AMQP_USER", "checkout-tax"),
            ("AMQP_PASSWORD", "p@ss/word"),
        ]))
        .unwrap();
        assert_eq!(
            config.amqp_url(),
            "amqp://checkout-tax:p%40ss%2Fword@127.0.0.1:5681/%2f,\
             amqp://checkout-tax:p%40ss%2Fword@127.0.0.1:5682/%2f"
        );
        assert_eq!(
            ServiceConfig::from_source(&env(&base)).unwrap().amqp_url(),
            base[1].1
        );

        let err =
            ServiceConfig::from_source(&env(&[base[0], base[1], ("AMQP_USER", "checkout-tax")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("AMQP_PASSWORD is missing"),
            "{err}"
        );
        let err =
            ServiceConfig::from_source(&env(&[base[0], base[1], ("AMQP_PASSWORD", "hunter4")]))
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AMQP_USER is missing"), "{text}");
        assert!(!text.contains("hunter4"), "{text}");
    }

    #[test]
    fn debug_output_hides_urls() {
        let config = ServiceConfig::from_source(&env(&[
            ("DATABASE_URL", "postgres://u:hunter2@x/y"),
            ("AMQP_URL", "amqp://u:hunter3@x"),
        ]))
        .unwrap();
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
}
