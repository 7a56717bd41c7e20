//! The auditor's configuration: three database URLs and a grace period, from
//! flags or the environment, checked once at start into [`Config`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

const ABOUT: &str = "Checks the checkout invariants across the orchestrator, inventory and \
payment databases, read-only, and prints one line per violation.";

const LONG_ABOUT: &str = "\
Checks the checkout invariants across the orchestrator, inventory and payment
databases and prints one line per violation, then a summary:

  VIOLATION <invariant> saga=<id or -> sku=<sku or -> <the facts that disagree>

Invariants checked:
  completed-reserved    a completed saga holds exactly one active reservation
                        whose quantities per SKU equal its request's
  completed-charged     a completed saga has a charged payment, nothing refunded,
                        of exactly subtotal + tax in its currency
  undone-holds-nothing  a compensated or cancelled saga holds no active
                        reservation and no net charge
  stock-conserved       per SKU: on_hand = available + held by active reservations
  not-stuck             a running or compensating saga has a deadline in the
                        future (or within the grace) or a pending outbox command;
                        suspended sagas are only counted
  idempotency-unique    no idempotency key belongs to two sagas
  ledger-charged        the payment provider's ledger shows exactly one charge
                        of subtotal + tax, and no refund, for a completed saga
  ledger-net-zero       the provider's ledger nets to zero (charged = refunded)
                        for a compensated or cancelled saga
  orphan-reservation,   no reservation or payment (tombstones aside), and no
  orphan-payment,       money moved at the provider, for a saga the
  orphan-ledger         orchestrator does not know
  saga-readable         every saga's status and stored state can be read

It only reads: every database is read in one READ ONLY, REPEATABLE READ
transaction, the orchestrator's first, so that a live system yields no false
alarms.";

const EXIT_CODES: &str = "\
Exit codes:
  0  no violation
  1  violations found
  2  configuration error
  3  a database could not be read";

/// The command line; every value may come from its environment variable
/// instead. Values stay raw strings here so that [`Config::from_args`] can
/// report a problem in one line naming the variable, without echoing it;
/// for the same reason `--help` never shows a variable's value (a URL holds
/// a password).
#[derive(Debug, clap::Parser)]
#[command(name = "auditor", about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_CODES)]
#[command(mut_args(|arg| arg.hide_env_values(true)))]
pub struct Args {
    /// The orchestrator's database (its DATABASE_URL).
    #[arg(long, env = "ORCHESTRATOR_DATABASE_URL", value_name = "URL")]
    pub orchestrator_database_url: Option<String>,
    /// The inventory worker's database (its DATABASE_URL).
    #[arg(long, env = "INVENTORY_DATABASE_URL", value_name = "URL")]
    pub inventory_database_url: Option<String>,
    /// The payment worker's database (its DATABASE_URL).
    #[arg(long, env = "PAYMENT_DATABASE_URL", value_name = "URL")]
    pub payment_database_url: Option<String>,
    /// How long past its deadline a saga may be before it counts as stuck
    /// (the deadline timer fires within a second or so) [default: 30].
    #[arg(long, env = "AUDIT_DEADLINE_GRACE_SECONDS", value_name = "SECONDS")]
    pub deadline_grace_seconds: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} (or --{flag}) is missing: set it to {hint}")]
    Missing {
        name: &'static str,
        flag: &'static str,
        hint: &'static str,
    },
    #[error("{name} (or --{flag}) is invalid: {reason}")]
    Invalid {
        name: &'static str,
        flag: &'static str,
        reason: String,
    },
}

/// A validated database URL; `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn connect_options(&self) -> PgConnectOptions {
        self.0
            .expose_secret()
            .parse()
            .expect("validated when the configuration was read")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub orchestrator: DatabaseUrl,
    pub inventory: DatabaseUrl,
    pub payment: DatabaseUrl,
    pub deadline_grace: Duration,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        Ok(Config {
            orchestrator: database_url(
                args.orchestrator_database_url,
                "ORCHESTRATOR_DATABASE_URL",
                "orchestrator-database-url",
                "the orchestrator's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/orchestrator",
            )?,
            inventory: database_url(
                args.inventory_database_url,
                "INVENTORY_DATABASE_URL",
                "inventory-database-url",
                "the inventory worker's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/inventory",
            )?,
            payment: database_url(
                args.payment_database_url,
                "PAYMENT_DATABASE_URL",
                "payment-database-url",
                "the payment worker's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/payment",
            )?,
            deadline_grace: grace(args.deadline_grace_seconds)?,
        })
    }
}

fn database_url(
    value: Option<String>,
    name: &'static str,
    flag: &'static str,
    hint: &'static str,
) -> Result<DatabaseUrl, ConfigError> {
    let value = match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => return Err(ConfigError::Missing { name, flag, hint }),
    };
    // The value may hold a password: say what is wrong, never what it is,
    // and do not pass on the parser's message, which may quote it.
    let invalid = |reason: &str| ConfigError::Invalid {
        name,
        flag,
        reason: reason.to_owned(),
    };
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err(invalid("must start with postgres:// or postgresql://"));
    }
    if value.parse::<PgConnectOptions>().is_err() {
        return Err(invalid("is not a valid PostgreSQL URL"));
    }
    Ok(DatabaseUrl(SecretString::from(value)))
}

fn grace(value: Option<String>) -> Result<Duration, ConfigError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(Duration::from_secs(30));
    };
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| ConfigError::Invalid {
            name: "AUDIT_DEADLINE_GRACE_SECONDS",
            flag: "deadline-grace-seconds",
            reason: format!("`{value}`: {e} (a whole number of seconds)"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(orchestrator: Option<&str>, grace: Option<&str>) -> Args {
        Args {
            orchestrator_database_url: orchestrator.map(str::to_owned),
            inventory_database_url: Some("postgres://localhost/inventory".into()),
            payment_database_url: Some("postgres://localhost/payment".into()),
            deadline_grace_seconds: grace.map(str::to_owned),
        }
    }

    #[test]
    fn defaults_the_grace_to_thirty_seconds() {
        let config = Config::from_args(args(Some("postgres://localhost/o"), None)).unwrap();
        assert_eq!(config.deadline_grace, Duration::from_secs(30));
    }

    #[test]
    fn names_a_missing_url() {
        let err = Config::from_args(args(Some("  "), None)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "ORCHESTRATOR_DATABASE_URL (or --orchestrator-database-url) is missing"
            ),
            "{err}"
        );
    }

    #[test]
    fn never_echoes_a_malformed_url() {
        for url in ["mysql://u:hunter2@x/y", "postgres://u:hunter2@x:notaport/y"] {
            let err = Config::from_args(args(Some(url), None)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ORCHESTRATOR_DATABASE_URL"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let config = Config::from_args(args(Some("postgres://u:hunter2@x/y"), None)).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn help_never_shows_a_variables_value() {
        use clap::CommandFactory;
        let command = Args::command();
        let with_env: Vec<_> = command
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .collect();
        assert_eq!(with_env.len(), 4);
        for arg in with_env {
            assert!(arg.is_hide_env_values_set(), "{}", arg.get_id());
        }
    }

    #[test]
    fn names_a_malformed_grace() {
        let err = Config::from_args(args(Some("postgres://x/o"), Some("soon"))).unwrap_err();
        assert!(
            err.to_string().starts_with("AUDIT_DEADLINE_GRACE_SECONDS"),
            "{err}"
        );
    }
}
