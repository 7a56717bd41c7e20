//! Configuration read once at start from the environment. A missing or
//! malformed variable is one error that names it.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

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

/// The variables `pairs` as a configuration reader takes them, in place of
/// the process's environment, which every test in a process shares.
pub fn variables(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
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

pub fn url(
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

/// `AMQP_URL` (one node's URL, or several separated by commas), with
/// `AMQP_USER` and `AMQP_PASSWORD`, when set, in place of every node's
/// credentials: a deployment can keep each service's password in a secret
/// of its own, apart from the broker's address (docker-compose.yml does).
pub fn amqp_url(source: &dyn Source) -> Result<SecretString, ConfigError> {
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
            Ok(SecretString::from(url_as(
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
pub fn prefix(source: &dyn Source) -> Result<String, ConfigError> {
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
pub fn management_url(source: &dyn Source) -> Result<Option<SecretString>, ConfigError> {
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

/// `AMQP_URL` (one node's URL or a cluster's, comma-separated) with
/// another user's credentials.
pub fn url_as(amqp_url: &str, user: &str, password: &str) -> String {
    amqp_url
        .split(',')
        .map(str::trim)
        .map(|node| match reqwest::Url::parse(node) {
            Ok(mut url) => {
                let _ = url.set_username(user);
                let _ = url.set_password(Some(password));
                url.to_string()
            }
            Err(_) => node.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
