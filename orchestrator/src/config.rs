//! The orchestrator's configuration, read and checked once at start.

use std::net::SocketAddr;

use saga_shared::config::{parsed_or, ConfigError, Environment, ServiceConfig, Source};

use crate::saga::RetryPolicy;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub http_addr: SocketAddr,
    pub retry: RetryPolicy,
}

impl Config {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: parsed_or(source, "STEP_MAX_ATTEMPTS", defaults.max_attempts)?,
            base_delay: std::time::Duration::from_millis(parsed_or(
                source,
                "STEP_BACKOFF_BASE_MS",
                defaults.base_delay.as_millis() as u64,
            )?),
            max_delay: std::time::Duration::from_millis(parsed_or(
                source,
                "STEP_BACKOFF_MAX_MS",
                defaults.max_delay.as_millis() as u64,
            )?),
        };
        if retry.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "STEP_MAX_ATTEMPTS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Config {
            service: ServiceConfig::from_source(source)?,
            http_addr: parsed_or(source, "HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            retry,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }
}
