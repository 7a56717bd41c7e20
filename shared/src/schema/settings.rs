//! How a service treats its schema when it starts, and the bounds of a
//! migration's session (`MIGRATE_ON_START`, `MIGRATE_LOCK_TIMEOUT`,
//! `MIGRATE_STATEMENT_TIMEOUT`).

use std::time::Duration;

use crate::config::{self, ConfigError, Source};

pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The bounds of a migration's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateSettings {
    /// `MIGRATE_LOCK_TIMEOUT`: how long one statement of a migration may
    /// wait for a table lock. While a migration waits for a lock, every
    /// query of the services on that table queues behind it: a short bound
    /// turns a stalled service into a migration to re-run.
    pub lock_timeout: Duration,
    /// `MIGRATE_STATEMENT_TIMEOUT`: how long one statement may run (and how
    /// long a `migrate` waits for another one to finish).
    pub statement_timeout: Duration,
}

impl Default for MigrateSettings {
    fn default() -> Self {
        MigrateSettings {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl MigrateSettings {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(MigrateSettings {
            lock_timeout: timeout(source, "MIGRATE_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)?,
            statement_timeout: timeout(
                source,
                "MIGRATE_STATEMENT_TIMEOUT",
                DEFAULT_STATEMENT_TIMEOUT,
            )?,
        })
    }
}

/// What a service does with its schema when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStart {
    /// Apply this build's pending migrations, as `migrate` does (the
    /// default: development and tests rely on it).
    Migrate(MigrateSettings),
    /// `MIGRATE_ON_START=false`: only check that this build can run on the
    /// schema; migrating is the deploy's `migrate` step (production).
    Check,
}

impl OnStart {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        // Read whatever MIGRATE_ON_START says: a malformed timeout is an
        // error even where it is not used yet.
        let settings = MigrateSettings::from_source(source)?;
        Ok(match config::parsed_or(source, "MIGRATE_ON_START", true)? {
            true => OnStart::Migrate(settings),
            false => OnStart::Check,
        })
    }
}

fn timeout(
    source: &dyn Source,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match source.get(name) {
        None => Ok(default),
        Some(value) if value.trim().is_empty() => Ok(default),
        Some(value) => parse_timeout(value.trim()).map_err(|reason| ConfigError::Invalid {
            name,
            reason: format!("`{value}`: {reason}"),
        }),
    }
}

/// `250ms`, `5s`, `15min`, `2h`: PostgreSQL's own units for these settings.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    const FORMAT: &str = "expected a whole number and a unit, ms, s, min or h (e.g. 5s)";
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| FORMAT.to_owned())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(FORMAT.to_owned()),
    };
    // PostgreSQL takes these settings in milliseconds, as a 32-bit integer.
    match number.checked_mul(unit_ms) {
        Some(0) => Err("must be more than 0: 0 would wait for ever".to_owned()),
        Some(ms) if ms <= i32::MAX as u64 => Ok(Duration::from_millis(ms)),
        _ => Err("at most 596h, PostgreSQL's largest timeout".to_owned()),
    }
}

/// A timeout as an operator wrote it (`5s`, `15min`).
pub(super) fn show(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variables as environment;

    #[test]
    fn timeouts_take_postgres_units_and_name_the_variable_when_malformed() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_timeout("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["5", "s", "5 sec", "-5s", "0s", "1.5s", "600h"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        let on_start = OnStart::from_source(&environment(&[])).unwrap();
        assert_eq!(on_start, OnStart::Migrate(MigrateSettings::default()));
        let on_start = OnStart::from_source(&environment(&[
            ("MIGRATE_LOCK_TIMEOUT", "2s"),
            ("MIGRATE_STATEMENT_TIMEOUT", "1h"),
        ]))
        .unwrap();
        assert_eq!(
            on_start,
            OnStart::Migrate(MigrateSettings {
                lock_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(3600),
            })
        );
        assert_eq!(
            OnStart::from_source(&environment(&[("MIGRATE_ON_START", "false")])).unwrap(),
            OnStart::Check
        );
        for (name, value) in [
            ("MIGRATE_ON_START", "no"),
            ("MIGRATE_LOCK_TIMEOUT", "5"),
            ("MIGRATE_STATEMENT_TIMEOUT", "0min"),
        ] {
            let error = OnStart::from_source(&environment(&[
                ("MIGRATE_ON_START", "false"),
                (name, value),
            ]))
            .unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn a_timeout_is_shown_as_an_operator_writes_it() {
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_secs(900)), "15min");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
