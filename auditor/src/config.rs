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
  orphan-intent         (--provider stripe) a confirmed PaymentIntent the payment
                        books do not record: a second charge

By default every saga is audited, a slice at a time (memory stays that of
a slice, whatever the history). With --watermark FILE only what changed
since the last clean run is, so that it can run every minute; stock and
idempotency keys are then left to full audits. A saga archived by
retention is not audited; records the workers keep of it are not orphans.

With --provider stripe, the provider's side is read from Stripe (every
PaymentIntent and refund, page by page; STRIPE_SECRET_KEY, STRIPE_API_BASE)
instead of the simulator's ledger; --cancel-orphans cancels the unconfirmed
PaymentIntents a worker created but never recorded (they moved nothing),
the one write this tool makes, at the provider only.

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
#[derive(Debug, Default, clap::Parser)]
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
    /// Where the provider's books are read: `simulator` (its ledger in the
    /// payment database) or `stripe` [default: simulator].
    #[arg(long, env = "AUDIT_PROVIDER", value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Stripe's API (with --provider stripe) [default: https://api.stripe.com].
    #[arg(long, env = "STRIPE_API_BASE", value_name = "URL")]
    pub stripe_api_base: Option<String>,
    /// The Stripe secret key (with --provider stripe); set it in the
    /// environment rather than on a command line others can read.
    #[arg(long, env = "STRIPE_SECRET_KEY", value_name = "KEY")]
    pub stripe_secret_key: Option<String>,
    /// Cancel unconfirmed orphan PaymentIntents (with --provider stripe).
    #[arg(long)]
    pub cancel_orphans: bool,
    /// Audit incrementally: only what changed since the time in FILE (with
    /// a margin), then write this audit's time there if it found nothing.
    /// Without FILE yet, a full audit that starts it. Stock and idempotency
    /// keys are checked by full audits only.
    #[arg(long, env = "AUDIT_WATERMARK_FILE", value_name = "FILE")]
    pub watermark: Option<std::path::PathBuf>,
    /// Write the result as Prometheus metrics to FILE (a node exporter's
    /// textfile collector reads it): violations by invariant, sagas
    /// audited, when, how long, and whether every database was read.
    #[arg(long, env = "AUDIT_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<std::path::PathBuf>,
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
    /// `None`: the simulator's ledger.
    pub stripe: Option<StripeSettings>,
    /// `--watermark`: incremental audits from this file's time.
    pub watermark: Option<std::path::PathBuf>,
    pub metrics_file: Option<std::path::PathBuf>,
}

/// `--provider stripe`.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_base: String,
    pub secret_key: SecretString,
    pub cancel_orphans: bool,
}

/// Stripe answers a list page in well under this.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(30);

impl StripeSettings {
    pub fn client(&self) -> Result<saga_stripe::Client, ConfigError> {
        saga_stripe::Client::new(&self.api_base, self.secret_key.clone(), STRIPE_TIMEOUT).map_err(
            |error| match error {
                saga_stripe::ClientError::SecretKey(reason) => ConfigError::Invalid {
                    name: "STRIPE_SECRET_KEY",
                    flag: "stripe-secret-key",
                    reason,
                },
                saga_stripe::ClientError::ApiBase(reason)
                | saga_stripe::ClientError::Build(reason) => ConfigError::Invalid {
                    name: "STRIPE_API_BASE",
                    flag: "stripe-api-base",
                    reason,
                },
            },
        )
    }
}

fn stripe(args: &Args) -> Result<Option<StripeSettings>, ConfigError> {
    match args.provider.as_deref().map(str::trim) {
        None | Some("") | Some("simulator") => Ok(None),
        Some("stripe") => {
            let secret_key = match args.stripe_secret_key.as_deref().map(str::trim) {
                Some(key) if !key.is_empty() => SecretString::from(key.to_owned()),
                _ => {
                    return Err(ConfigError::Missing {
                        name: "STRIPE_SECRET_KEY",
                        flag: "stripe-secret-key",
                        hint: "--provider stripe reads Stripe with the account's secret key",
                    })
                }
            };
            let settings = StripeSettings {
                api_base: args
                    .stripe_api_base
                    .clone()
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| saga_stripe::DEFAULT_API_BASE.to_owned()),
                secret_key,
                cancel_orphans: args.cancel_orphans,
            };
            settings.client()?;
            Ok(Some(settings))
        }
        Some(other) => Err(ConfigError::Invalid {
            name: "AUDIT_PROVIDER",
            flag: "provider",
            reason: format!("`{other}`: must be simulator or stripe"),
        }),
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        if args.cancel_orphans && args.provider.as_deref().map(str::trim) != Some("stripe") {
            return Err(ConfigError::Invalid {
                name: "AUDIT_PROVIDER",
                flag: "provider",
                reason: "--cancel-orphans needs --provider stripe".to_owned(),
            });
        }
        let stripe = stripe(&args)?;
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
            deadline_grace: grace(args.deadline_grace_seconds.clone())?,
            stripe,
            watermark: args.watermark,
            metrics_file: args.metrics_file,
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
            ..Args::default()
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
        assert_eq!(with_env.len(), 9);
        for arg in with_env {
            assert!(arg.is_hide_env_values_set(), "{}", arg.get_id());
        }
    }

    #[test]
    fn stripe_needs_its_key_and_never_echoes_it() {
        let mut stripe = args(Some("postgres://x/o"), None);
        stripe.provider = Some("stripe".into());
        let err = Config::from_args(stripe).unwrap_err().to_string();
        assert!(err.starts_with("STRIPE_SECRET_KEY"), "{err}");

        let mut stripe = args(Some("postgres://x/o"), None);
        stripe.provider = Some("stripe".into());
        stripe.stripe_secret_key = Some("pk_live_hunter2".into());
        let err = Config::from_args(stripe).unwrap_err().to_string();
        assert!(
            err.starts_with("STRIPE_SECRET_KEY") && !err.contains("hunter2"),
            "{err}"
        );

        let mut orphans = args(Some("postgres://x/o"), None);
        orphans.cancel_orphans = true;
        let err = Config::from_args(orphans).unwrap_err().to_string();
        assert!(
            err.contains("--cancel-orphans needs --provider stripe"),
            "{err}"
        );

        let mut paypal = args(Some("postgres://x/o"), None);
        paypal.provider = Some("paypal".into());
        assert!(Config::from_args(paypal)
            .unwrap_err()
            .to_string()
            .starts_with("AUDIT_PROVIDER"));
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
