//! `PAYMENT_PROVIDER=stripe`: its settings, read once at start.

use std::time::Duration;

use saga_protocol::values::Currency;
use saga_shared::config::{parsed_or, required, ConfigError, Source};
use secrecy::SecretString;

/// Stripe answers in well under a second; ten leaves room for a slow day
/// without holding a payment slot for long.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// Never printed: `SecretString`'s Debug hides it.
    pub secret_key: SecretString,
    pub api_base: String,
    pub timeout: Duration,
    /// The currencies the Stripe account charges in; empty: any.
    pub currencies: Vec<Currency>,
}

impl StripeConfig {
    /// `STRIPE_SECRET_KEY` (required), `STRIPE_API_BASE` (default
    /// Stripe's), `STRIPE_TIMEOUT_MS` (default 10,000) and
    /// `STRIPE_CURRENCIES` (comma-separated ISO codes; unset: any).
    pub fn from_source(source: &dyn Source) -> Result<StripeConfig, ConfigError> {
        let secret_key = SecretString::from(
            required(
                source,
                "STRIPE_SECRET_KEY",
                "PAYMENT_PROVIDER=stripe needs the account's secret key (sk_... or a restricted rk_...)",
            )?
            .trim()
            .to_owned(),
        );
        let api_base = source
            .get("STRIPE_API_BASE")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| saga_stripe::DEFAULT_API_BASE.to_owned());
        let timeout_ms: u64 = parsed_or(source, "STRIPE_TIMEOUT_MS", DEFAULT_TIMEOUT_MS)?;
        if !(100..=120_000).contains(&timeout_ms) {
            return Err(ConfigError::Invalid {
                name: "STRIPE_TIMEOUT_MS",
                reason: format!("{timeout_ms}: must be from 100 to 120000 milliseconds"),
            });
        }
        let currencies = source
            .get("STRIPE_CURRENCIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|code| !code.is_empty())
            .map(|code| {
                Currency::parse(code.to_ascii_uppercase()).map_err(|_| ConfigError::Invalid {
                    name: "STRIPE_CURRENCIES",
                    reason: format!("`{code}` is not a three-letter ISO 4217 code"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StripeConfig {
            secret_key,
            api_base,
            timeout: Duration::from_millis(timeout_ms),
            currencies,
        })
    }

    /// The API client these settings make; a bad base URL or key names its
    /// variable.
    pub fn client(&self) -> Result<saga_stripe::Client, ConfigError> {
        saga_stripe::Client::new(&self.api_base, self.secret_key.clone(), self.timeout).map_err(
            |error| match error {
                saga_stripe::ClientError::ApiBase(reason) => ConfigError::Invalid {
                    name: "STRIPE_API_BASE",
                    reason,
                },
                saga_stripe::ClientError::SecretKey(reason) => ConfigError::Invalid {
                    name: "STRIPE_SECRET_KEY",
                    reason,
                },
                saga_stripe::ClientError::Build(reason) => ConfigError::Invalid {
                    name: "STRIPE_API_BASE",
                    reason,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_shared::config::variables;

    #[test]
    fn needs_a_key_and_never_repeats_it() {
        let error = StripeConfig::from_source(&variables(&[])).unwrap_err();
        assert!(error.to_string().contains("STRIPE_SECRET_KEY"), "{error}");
        let config =
            StripeConfig::from_source(&variables(&[("STRIPE_SECRET_KEY", "pk_live_oops1234")]))
                .unwrap();
        let error = config.client().unwrap_err().to_string();
        assert!(
            error.contains("STRIPE_SECRET_KEY") && !error.contains("oops1234"),
            "{error}"
        );
        assert!(!format!("{config:?}").contains("oops1234"));
    }

    #[test]
    fn reads_every_setting_and_names_a_bad_one() {
        let config = StripeConfig::from_source(&variables(&[
            ("STRIPE_SECRET_KEY", "sk_test_123456"),
            ("STRIPE_API_BASE", "http://127.0.0.1:8420"),
            ("STRIPE_TIMEOUT_MS", "2500"),
            ("STRIPE_CURRENCIES", "eur, usd"),
        ]))
        .unwrap();
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(
            config.currencies,
            vec![
                Currency::parse("EUR").unwrap(),
                Currency::parse("USD").unwrap()
            ]
        );
        assert!(config.client().is_ok());
        for (name, value) in [
            ("STRIPE_TIMEOUT_MS", "5"),
            ("STRIPE_TIMEOUT_MS", "soon"),
            ("STRIPE_CURRENCIES", "euro"),
        ] {
            let error = StripeConfig::from_source(&variables(&[
                ("STRIPE_SECRET_KEY", "sk_test_123456"),
                (name, value),
            ]))
            .unwrap_err()
            .to_string();
            assert!(error.contains(name), "{error}");
        }
        let remote_http = StripeConfig::from_source(&variables(&[
            ("STRIPE_SECRET_KEY", "sk_test_123456"),
            ("STRIPE_API_BASE", "http://stripe.example.com"),
        ]))
        .unwrap();
        assert!(remote_http
            .client()
            .unwrap_err()
            .to_string()
            .contains("STRIPE_API_BASE"));
    }
}
