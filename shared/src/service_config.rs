//! The settings every service reads at start: its database, the broker,
//! its prefix and how it treats its schema, parsed and checked once.

use secrecy::{ExposeSecret, SecretString};

use crate::config::{
    amqp_url, management_url, parsed, parsed_or, prefix, ConfigError, Environment, Source,
};
use crate::tls::{self, CaFile};

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
        let database_url = crate::database::url(source)?;
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
    use crate::config::variables as environment;

    #[test]
    fn names_the_missing_variable() {
        let err =
            ServiceConfig::from_source(&environment(&[("AMQP_URL", "amqp://x")])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL is missing"), "{err}");
    }

    #[test]
    fn names_the_malformed_variable_without_echoing_secrets() {
        let err = ServiceConfig::from_source(&environment(&[
            ("DATABASE_URL", "mysql://u:hunter2@x/y"),
            ("AMQP_URL", "amqp://x"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is invalid"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let err = ServiceConfig::from_source(&environment(&[
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
        let config = ServiceConfig::from_source(&environment(&base)).unwrap();
        assert_eq!(config.database_pool_size, None);
        let config = ServiceConfig::from_source(&environment(&[
            base[0],
            base[1],
            ("DATABASE_POOL_SIZE", "5"),
        ]))
        .unwrap();
        assert_eq!(config.database_pool_size, Some(5));
        for bad in ["0", "many", "-1"] {
            let err = ServiceConfig::from_source(&environment(&[
                base[0],
                base[1],
                ("DATABASE_POOL_SIZE", bad),
            ]))
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
        let config = ServiceConfig::from_source(&environment(&[
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
            ServiceConfig::from_source(&environment(&base))
                .unwrap()
                .amqp_url(),
            base[1].1
        );

        let err = ServiceConfig::from_source(&environment(&[
            base[0],
            base[1],
            ("AMQP_USER", "checkout-tax"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("AMQP_PASSWORD is missing"),
            "{err}"
        );
        let err = ServiceConfig::from_source(&environment(&[
            base[0],
            base[1],
            ("AMQP_PASSWORD", "hunter4"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AMQP_USER is missing"), "{text}");
        assert!(!text.contains("hunter4"), "{text}");
    }

    #[test]
    fn debug_output_hides_urls() {
        let config = ServiceConfig::from_source(&environment(&[
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
