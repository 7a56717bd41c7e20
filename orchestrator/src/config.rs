//! The orchestrator's configuration, read and checked once at start.

use std::net::SocketAddr;
use std::time::Duration;

use saga_protocol::Step;
use saga_shared::config::{parsed_or, ConfigError, Environment, Source};
use saga_shared::service_config::ServiceConfig;

use crate::admin_tokens::AdminTokens;
use crate::clients::{ClientLimits, SeededKeys};
use crate::reply_senders::ReplySenders;
use crate::retention::RetentionConfig;
use crate::saga::{OnExhausted, RetryPolicy, StepPolicies};

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub http_addr: SocketAddr,
    /// `ADMIN_HTTP_ADDR`: when set, the support API, console and
    /// `/metrics` are served there and only there.
    pub admin_http_addr: Option<SocketAddr>,
    pub policies: StepPolicies,
    pub admin_tokens: AdminTokens,
    pub http: HttpLimits,
    /// `WORKER_USERS`: the RabbitMQ user each worker kind's replies must come from.
    pub reply_senders: ReplySenders,
    /// `CHECKOUT_CLIENT_KEYS`, as digests.
    pub client_keys: SeededKeys,
    /// `CLIENT_RATE_PER_SECOND`, `CLIENT_RATE_BURST`, `CLIENT_MAX_IN_FLIGHT`.
    pub client_limits: ClientLimits,
    /// `PARKED_SAGA_TTL` (default 24h; `0`: never): a saga suspended longer
    /// than this (plus what support added) is cancelled with compensation.
    pub parked_saga_ttl: Option<Duration>,
    /// `RETENTION_DAYS`, `ARCHIVE`: when finished sagas go to the archive.
    pub retention: RetentionConfig,
}

/// A parked saga holds its stock until a person acts: a day is long enough
/// for support to look, short enough that stock comes back.
pub const DEFAULT_PARKED_SAGA_TTL: Duration = Duration::from_secs(24 * 3600);

fn parked_saga_ttl(source: &dyn Source) -> Result<Option<Duration>, ConfigError> {
    let ttl = match source.get("PARKED_SAGA_TTL") {
        None => DEFAULT_PARKED_SAGA_TTL,
        Some(text) if text.trim().is_empty() => DEFAULT_PARKED_SAGA_TTL,
        Some(text) => {
            crate::duration_text::parse(&text).map_err(|reason| ConfigError::Invalid {
                name: "PARKED_SAGA_TTL",
                reason,
            })?
        }
    };
    Ok((!ttl.is_zero()).then_some(ttl))
}

/// The bounds of the HTTP server: how long a request may take, how long a
/// client may take to send its headers, how many connections and how many
/// long-polls it holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_REQUEST_TIMEOUT_SECONDS`: a request still running after this
    /// gets `503`. A long-poll gets this on top of its `wait`.
    pub request_timeout: Duration,
    /// `HTTP_HEADER_READ_TIMEOUT_SECONDS`: a connection that has not sent a
    /// whole request head within this is closed (an idle keep-alive
    /// connection too).
    pub header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections served at once; more wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// `HTTP_MAX_WAITERS`: long-polls (`?wait=`) held at once; more get
    /// `503` with `Retry-After`.
    pub max_waiters: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            // Every ordinary request is a few statements, each bounded by
            // the pool's 5 s acquire timeout; the slowest legitimate one is
            // a bulk retry of 10,000 sagas, a few seconds.
            request_timeout: Duration::from_secs(30),
            // A real client sends its headers in one packet; 10 s forgives
            // a bad mobile link and frees a slot held by a silent client
            // (or an idle keep-alive) soon.
            header_read_timeout: Duration::from_secs(10),
            // Under the common 1024 open-files limit, with room left for the
            // database pool, the broker and the listen socket.
            max_connections: 512,
            // Half the connections: long-polls alone can never take every
            // connection from checkouts and support.
            max_waiters: 256,
        }
    }
}

fn seconds(
    source: &dyn Source,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let seconds = parsed_or(source, name, default.as_secs())?;
    if seconds == 0 {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1 second".into(),
        });
    }
    Ok(Duration::from_secs(seconds))
}

fn at_least_one(
    source: &dyn Source,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match parsed_or(source, name, default)? {
        0 => Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

impl HttpLimits {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            request_timeout: seconds(
                source,
                "HTTP_REQUEST_TIMEOUT_SECONDS",
                defaults.request_timeout,
            )?,
            header_read_timeout: seconds(
                source,
                "HTTP_HEADER_READ_TIMEOUT_SECONDS",
                defaults.header_read_timeout,
            )?,
            max_connections: at_least_one(
                source,
                "HTTP_MAX_CONNECTIONS",
                defaults.max_connections,
            )?,
            max_waiters: at_least_one(source, "HTTP_MAX_WAITERS", defaults.max_waiters)?,
        };
        if limits.max_waiters >= limits.max_connections {
            return Err(ConfigError::Invalid {
                name: "HTTP_MAX_WAITERS",
                reason: format!(
                    "must be less than HTTP_MAX_CONNECTIONS ({}): long-polls must leave connections for other requests",
                    limits.max_connections
                ),
            });
        }
        Ok(limits)
    }
}

/// The variables of one retry policy: the defaults (`STEP_*`), or one
/// step's overrides (`STEP_PAYMENT_CHARGE_*`).
struct PolicyVars {
    max_attempts: &'static str,
    backoff_base_ms: &'static str,
    backoff_max_ms: &'static str,
    deadline_ms: &'static str,
    on_exhausted: &'static str,
}

macro_rules! policy_vars {
    ($prefix:literal) => {
        PolicyVars {
            max_attempts: concat!($prefix, "_MAX_ATTEMPTS"),
            backoff_base_ms: concat!($prefix, "_BACKOFF_BASE_MS"),
            backoff_max_ms: concat!($prefix, "_BACKOFF_MAX_MS"),
            deadline_ms: concat!($prefix, "_DEADLINE_MS"),
            on_exhausted: concat!($prefix, "_ON_EXHAUSTED"),
        }
    };
}

const DEFAULT_VARS: PolicyVars = policy_vars!("STEP");

fn step_vars(step: Step) -> PolicyVars {
    match step {
        Step::Reserve => policy_vars!("STEP_INVENTORY_RESERVE"),
        Step::CalculateTax => policy_vars!("STEP_TAX_CALCULATE"),
        Step::Charge => policy_vars!("STEP_PAYMENT_CHARGE"),
        Step::Release => policy_vars!("STEP_INVENTORY_RELEASE"),
        Step::Refund => policy_vars!("STEP_PAYMENT_REFUND"),
    }
}

fn millis(
    source: &dyn Source,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(parsed_or(
        source,
        name,
        default.as_millis() as u64,
    )?))
}

/// `base` with whatever `vars` set on top.
fn read_policy(
    source: &dyn Source,
    vars: &PolicyVars,
    base: RetryPolicy,
    compensation: bool,
) -> Result<RetryPolicy, ConfigError> {
    let on_exhausted = match source.get(vars.on_exhausted).as_deref().map(str::trim) {
        None | Some("") => base.on_exhausted,
        Some("park") => OnExhausted::Park,
        Some("compensate") if !compensation => OnExhausted::Compensate,
        Some("compensate") => {
            return Err(ConfigError::Invalid {
                name: vars.on_exhausted,
                reason: "a compensation can only park when its attempts run out".into(),
            })
        }
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: vars.on_exhausted,
                reason: format!("`{other}`: expected `park` or `compensate`"),
            })
        }
    };
    let policy = RetryPolicy {
        max_attempts: parsed_or(source, vars.max_attempts, base.max_attempts)?,
        base_delay: millis(source, vars.backoff_base_ms, base.base_delay)?,
        max_delay: millis(source, vars.backoff_max_ms, base.max_delay)?,
        deadline: millis(source, vars.deadline_ms, base.deadline)?,
        on_exhausted,
    };
    if policy.max_attempts == 0 {
        return Err(ConfigError::Invalid {
            name: vars.max_attempts,
            reason: "must be at least 1".into(),
        });
    }
    if policy.deadline.is_zero() {
        return Err(ConfigError::Invalid {
            name: vars.deadline_ms,
            reason: "must be at least 1 ms".into(),
        });
    }
    Ok(policy)
}

/// The default policy (`STEP_*`), then each step's overrides on top.
fn read_policies(source: &dyn Source) -> Result<StepPolicies, ConfigError> {
    let defaults = read_policy(source, &DEFAULT_VARS, RetryPolicy::default(), false)?;
    let mut policies = StepPolicies::uniform(RetryPolicy {
        on_exhausted: OnExhausted::Park,
        ..defaults
    });
    for step in Step::ALL {
        let compensation = matches!(step, Step::Release | Step::Refund);
        let base = if compensation {
            *policies.for_step(step)
        } else {
            defaults
        };
        let policy = read_policy(source, &step_vars(step), base, compensation)?;
        policies = policies.with(step, policy);
    }
    Ok(policies)
}

/// Connections the orchestrator holds beside its reply handling: the
/// LISTEN connection (held for good), the relay and the deadline timer.
const FIXED_CONNECTIONS: u32 = 3;

impl Config {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_source(source)?;
        if service.database_pool_size == Some(1) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_POOL_SIZE",
                reason:
                    "the orchestrator needs at least 2: its LISTEN connection holds one for good"
                        .into(),
            });
        }
        Ok(Config {
            service,
            http_addr: parsed_or(source, "HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            admin_http_addr: saga_shared::config::parsed(source, "ADMIN_HTTP_ADDR")?,
            policies: read_policies(source)?,
            admin_tokens: AdminTokens::from_source(source)?,
            http: HttpLimits::from_source(source)?,
            reply_senders: ReplySenders::from_source(source)?,
            client_keys: SeededKeys::from_source(source)?,
            client_limits: ClientLimits::from_source(source)?,
            parked_saga_ttl: parked_saga_ttl(source)?,
            retention: RetentionConfig::from_source(source)?,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    /// `DATABASE_POOL_SIZE`, or by default the reply consumer's concurrency
    /// (`PREFETCH`, capped like a worker's) plus the LISTEN connection, the
    /// relay and the deadline timer. HTTP requests and the dead-letter
    /// recorder share those: each of their statements is one short round trip.
    pub fn database_pool_size(&self) -> u32 {
        self.service.database_pool_size.unwrap_or_else(|| {
            saga_shared::database::pool_for_concurrency(self.service.prefetch) + FIXED_CONNECTIONS
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://localhost/db"),
            ("AMQP_URL", "amqp://localhost"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        map
    }

    #[test]
    fn step_overrides_sit_on_top_of_the_defaults() {
        let config = Config::from_source(&source(&[
            ("STEP_MAX_ATTEMPTS", "7"),
            ("STEP_DEADLINE_MS", "2000"),
            ("STEP_PAYMENT_CHARGE_DEADLINE_MS", "30000"),
            ("STEP_PAYMENT_CHARGE_ON_EXHAUSTED", "compensate"),
        ]))
        .unwrap();
        let charge = config.policies.for_step(Step::Charge);
        assert_eq!(charge.deadline, Duration::from_secs(30));
        assert_eq!(charge.max_attempts, 7);
        assert_eq!(charge.on_exhausted, OnExhausted::Compensate);
        let reserve = config.policies.for_step(Step::Reserve);
        assert_eq!(reserve.deadline, Duration::from_secs(2));
        assert_eq!(reserve.on_exhausted, OnExhausted::Park);
    }

    #[test]
    fn http_limits_default_and_override() {
        let defaults = Config::from_source(&source(&[])).unwrap().http;
        assert_eq!(defaults, HttpLimits::default());
        let limits = Config::from_source(&source(&[
            ("HTTP_REQUEST_TIMEOUT_SECONDS", "5"),
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "2"),
            ("HTTP_MAX_CONNECTIONS", "10"),
            ("HTTP_MAX_WAITERS", "3"),
        ]))
        .unwrap()
        .http;
        assert_eq!(
            limits,
            HttpLimits {
                request_timeout: Duration::from_secs(5),
                header_read_timeout: Duration::from_secs(2),
                max_connections: 10,
                max_waiters: 3,
            }
        );
    }

    #[test]
    fn the_pool_follows_the_reply_concurrency_unless_set() {
        let pool = |pairs: &[(&str, &str)]| {
            Config::from_source(&source(pairs)).map(|c| c.database_pool_size())
        };
        assert_eq!(pool(&[]).unwrap(), 8 + 3);
        assert_eq!(pool(&[("PREFETCH", "2")]).unwrap(), 2 + 3);
        assert_eq!(pool(&[("DATABASE_POOL_SIZE", "20")]).unwrap(), 20);
        let error = pool(&[("DATABASE_POOL_SIZE", "1")]).unwrap_err();
        assert!(error.to_string().contains("DATABASE_POOL_SIZE"), "{error}");
    }

    #[test]
    fn parked_sagas_expire_after_a_day_unless_told_otherwise() {
        let ttl = |pairs: &[(&str, &str)]| parked_saga_ttl(&source(pairs));
        assert_eq!(ttl(&[]).unwrap(), Some(Duration::from_secs(86_400)));
        assert_eq!(
            ttl(&[("PARKED_SAGA_TTL", "1s")]).unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(ttl(&[("PARKED_SAGA_TTL", "0")]).unwrap(), None);
        let error = ttl(&[("PARKED_SAGA_TTL", "soon")]).unwrap_err().to_string();
        assert!(error.contains("PARKED_SAGA_TTL"), "{error}");
    }

    #[test]
    fn a_bad_policy_variable_is_named() {
        for (name, value) in [
            ("STEP_MAX_ATTEMPTS", "0"),
            ("STEP_TAX_CALCULATE_DEADLINE_MS", "soon"),
            ("STEP_PAYMENT_REFUND_ON_EXHAUSTED", "compensate"),
            ("STEP_ON_EXHAUSTED", "retry"),
            ("HTTP_REQUEST_TIMEOUT_SECONDS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "ten"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_WAITERS", "-1"),
            ("HTTP_MAX_WAITERS", "512"),
            ("CLIENT_RATE_PER_SECOND", "0"),
            ("CLIENT_RATE_BURST", "0"),
            ("CLIENT_MAX_IN_FLIGHT", "many"),
            ("ADMIN_HTTP_ADDR", "localhost"),
            ("CHECKOUT_CLIENT_KEYS", "shop"),
        ] {
            let error = Config::from_source(&source(&[(name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }
}
