//! A client's limits: a rate (with a burst) and a maximum of checkouts in
//! flight. The environment sets the defaults; a client may override each.

use saga_shared::config::{parsed_or, ConfigError, Source};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClientLimits {
    /// Checkouts per second, across every orchestrator instance.
    pub rate_per_second: f64,
    /// Checkouts a client may send at once above its rate.
    pub rate_burst: u32,
    /// Checkouts not yet final (running, compensating or suspended).
    pub max_in_flight: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        // A busy storefront's peak with room to spare; a deployment sized
        // for more raises it for that client.
        ClientLimits {
            rate_per_second: 100.0,
            rate_burst: 200,
            max_in_flight: 1_000,
        }
    }
}

impl ClientLimits {
    /// `CLIENT_RATE_PER_SECOND`, `CLIENT_RATE_BURST`, `CLIENT_MAX_IN_FLIGHT`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let defaults = ClientLimits::default();
        let limits = ClientLimits {
            rate_per_second: parsed_or(source, "CLIENT_RATE_PER_SECOND", defaults.rate_per_second)?,
            rate_burst: parsed_or(source, "CLIENT_RATE_BURST", defaults.rate_burst)?,
            max_in_flight: parsed_or(source, "CLIENT_MAX_IN_FLIGHT", defaults.max_in_flight)?,
        };
        LimitOverrides::from(limits)
            .check()
            .map_err(|(name, reason)| ConfigError::Invalid {
                name: match name {
                    "rate_per_second" => "CLIENT_RATE_PER_SECOND",
                    "rate_burst" => "CLIENT_RATE_BURST",
                    _ => "CLIENT_MAX_IN_FLIGHT",
                },
                reason: reason.into(),
            })?;
        Ok(limits)
    }
}

/// One client's own limits; what is unset follows the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    // The bounds `check` enforces, stated in the OpenAPI document too.
    #[schema(exclusive_minimum = 0.0)]
    pub rate_per_second: Option<f64>,
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(default, deserialize_with = "whole_count")]
    pub rate_burst: Option<u32>,
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(default, deserialize_with = "whole_count")]
    pub max_in_flight: Option<u32>,
}

impl From<ClientLimits> for LimitOverrides {
    fn from(limits: ClientLimits) -> Self {
        LimitOverrides {
            rate_per_second: Some(limits.rate_per_second),
            rate_burst: Some(limits.rate_burst),
            max_in_flight: Some(limits.max_in_flight),
        }
    }
}

impl LimitOverrides {
    pub fn over(&self, defaults: &ClientLimits) -> ClientLimits {
        ClientLimits {
            rate_per_second: self.rate_per_second.unwrap_or(defaults.rate_per_second),
            rate_burst: self.rate_burst.unwrap_or(defaults.rate_burst),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
        }
    }

    /// The field out of range, and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if let Some(rate) = self.rate_per_second {
            if !rate.is_finite() || rate <= 0.0 {
                return Err(("rate_per_second", "must be a number above 0"));
            }
        }
        if self.rate_burst == Some(0) {
            return Err(("rate_burst", "must be at least 1"));
        }
        if self.max_in_flight == Some(0) {
            return Err(("max_in_flight", "must be at least 1"));
        }
        if self.max_in_flight.is_some_and(|n| n > i32::MAX as u32) {
            return Err(("max_in_flight", "must be at most 2147483647"));
        }
        if self.rate_burst.is_some_and(|n| n > i32::MAX as u32) {
            return Err(("rate_burst", "must be at most 2147483647"));
        }
        Ok(())
    }
}

/// A count given as any whole JSON number (`3`, `3.0`, `3e0`), as the
/// checkout API takes a quantity: JSON does not tell 3 from 3.0.
pub fn whole_count<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
            .map(|f| f as u64)
    });
    match whole.and_then(|n| u32::try_from(n).ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(serde::de::Error::custom(format!(
            "must be a whole number from 1 to 2147483647, got {number}"
        ))),
    }
}
