//! The payment worker's own settings, read once at start.

use saga_shared::config::{parsed_or, ConfigError, Source};

/// The default largest charge: one million in a currency's major unit.
pub const DEFAULT_MAX_AMOUNT_CENTS: i64 = 100_000_000;

/// Where the worker process aborts on purpose, for crash tests only: right
/// after the provider approved, before the outcome is recorded.
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Stripe: after the PaymentIntent is created, before its id is recorded.
    AfterProviderCreate,
    AfterProviderCharge,
    AfterProviderRefund,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentConfig {
    /// Charges above this are refused `invalid_amount`.
    pub max_amount_cents: i64,
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<Failpoint>,
    /// Which provider charges (`PAYMENT_PROVIDER`).
    pub provider: ProviderKind,
}

/// `PAYMENT_PROVIDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// Unset: the simulator's ledger backs the worker, but its `sim_*`
    /// methods are refused `invalid_payment_method`: it is a test double,
    /// and a client that may choose `sim_down` or `sim_slow_60000` chooses
    /// how long stock stays held and payment slots stay busy.
    #[default]
    Unset,
    /// `simulator`: the `sim_*` payment methods work.
    Simulator,
    /// `stripe`: Stripe's API (`STRIPE_*`), methods are `pm_...` ids.
    Stripe,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            max_amount_cents: DEFAULT_MAX_AMOUNT_CENTS,
            #[cfg(feature = "failpoints")]
            failpoint: None,
            provider: ProviderKind::Unset,
        }
    }
}

impl PaymentConfig {
    /// Whether the `sim_*` payment methods work.
    pub fn simulator(&self) -> bool {
        self.provider == ProviderKind::Simulator
    }

    /// The defaults with the simulator on, as tests and rehearsals run.
    pub fn simulated() -> Self {
        PaymentConfig {
            provider: ProviderKind::Simulator,
            ..PaymentConfig::default()
        }
    }

    /// `PAYMENT_MAX_AMOUNT_CENTS` (default 100,000,000), `PAYMENT_FAILPOINT`
    /// and `PAYMENT_PROVIDER` (unset, or `simulator`).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let max_amount_cents =
            parsed_or(source, "PAYMENT_MAX_AMOUNT_CENTS", DEFAULT_MAX_AMOUNT_CENTS)?;
        if max_amount_cents < 1 {
            return Err(ConfigError::Invalid {
                name: "PAYMENT_MAX_AMOUNT_CENTS",
                reason: format!("must be at least 1 cent, not {max_amount_cents}"),
            });
        }
        #[cfg(feature = "failpoints")]
        let failpoint = match source.get("PAYMENT_FAILPOINT").as_deref().map(str::trim) {
            None | Some("") => None,
            Some("after_provider_create") => Some(Failpoint::AfterProviderCreate),
            Some("after_provider_charge") => Some(Failpoint::AfterProviderCharge),
            Some("after_provider_refund") => Some(Failpoint::AfterProviderRefund),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PAYMENT_FAILPOINT",
                    reason: format!(
                        "`{other}`: must be after_provider_create, after_provider_charge or after_provider_refund (tests only)"
                    ),
                })
            }
        };
        // Silently running without the crash a test asked for would pass
        // that test for the wrong reason, or hang it.
        #[cfg(not(feature = "failpoints"))]
        if let Some(asked) = source
            .get("PAYMENT_FAILPOINT")
            .filter(|v| !v.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                name: "PAYMENT_FAILPOINT",
                reason: format!(
                    "`{}`: this build has no failpoints (the crash tests' builds have them, with the workers crate's `failpoints` feature)",
                    asked.trim()
                ),
            });
        }
        let provider = match source.get("PAYMENT_PROVIDER").as_deref().map(str::trim) {
            None | Some("") => ProviderKind::Unset,
            Some("simulator") => ProviderKind::Simulator,
            Some("stripe") => ProviderKind::Stripe,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PAYMENT_PROVIDER",
                    reason: format!(
                        "`{other}`: must be `stripe` (STRIPE_SECRET_KEY, docs/payments.md) or `simulator` (a test double); unset refuses the sim_* methods"
                    ),
                })
            }
        };
        Ok(PaymentConfig {
            max_amount_cents,
            #[cfg(feature = "failpoints")]
            failpoint,
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<PaymentConfig, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PaymentConfig::from_source(&env)
    }

    #[test]
    fn defaults_to_a_million_and_no_failpoint() {
        assert_eq!(config(&[]).unwrap(), PaymentConfig::default());
        assert_eq!(config(&[]).unwrap().max_amount_cents, 100_000_000);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for bad in ["0", "-5", "lots", "9223372036854775808"] {
            let error = config(&[("PAYMENT_MAX_AMOUNT_CENTS", bad)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("PAYMENT_MAX_AMOUNT_CENTS"), "{error}");
        }
        let error = config(&[("PAYMENT_FAILPOINT", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("PAYMENT_FAILPOINT"), "{error}");
    }

    #[test]
    fn the_simulator_is_on_only_when_asked_for() {
        assert!(!config(&[]).unwrap().simulator());
        assert!(!config(&[("PAYMENT_PROVIDER", "")]).unwrap().simulator());
        assert!(config(&[("PAYMENT_PROVIDER", "simulator")])
            .unwrap()
            .simulator());
        assert_eq!(
            config(&[("PAYMENT_PROVIDER", "stripe")]).unwrap().provider,
            ProviderKind::Stripe
        );
        let error = config(&[("PAYMENT_PROVIDER", "paypal")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("PAYMENT_PROVIDER"), "{error}");
    }

    #[test]
    #[cfg(feature = "failpoints")]
    fn reads_both() {
        let read = config(&[
            ("PAYMENT_MAX_AMOUNT_CENTS", "5000"),
            ("PAYMENT_FAILPOINT", "after_provider_refund"),
        ])
        .unwrap();
        assert_eq!(read.max_amount_cents, 5_000);
        assert_eq!(read.failpoint, Some(Failpoint::AfterProviderRefund));
    }

    #[test]
    #[cfg(not(feature = "failpoints"))]
    fn a_build_without_failpoints_refuses_one_and_says_so() {
        for asked in ["after_provider_charge", "after_provider_refund"] {
            let error = config(&[("PAYMENT_FAILPOINT", asked)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("PAYMENT_FAILPOINT"), "{error}");
            assert!(error.contains("this build has no failpoints"), "{error}");
        }
        assert_eq!(
            config(&[("PAYMENT_FAILPOINT", " ")]).unwrap(),
            PaymentConfig::default(),
            "empty is unset"
        );
    }
}
