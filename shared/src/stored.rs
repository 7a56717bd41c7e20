//! Domain values read back from our own tables. The services store only
//! values that were valid when written, so one that fails validation on the
//! way back is a row this build cannot read: `sqlx::Error::Decode`, which a
//! worker treats as permanent (the command is dead-lettered, not retried).
//! The one place every store turns a column into a typed value.

use saga_protocol::values::{Currency, CustomerId, Quantity, Sku, ValueError};

fn decode(column: &str, error: ValueError) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {column}: {error}").into())
}

pub fn sku(text: String) -> Result<Sku, sqlx::Error> {
    Sku::parse(text).map_err(|e| decode("sku", e))
}

pub fn currency(text: String) -> Result<Currency, sqlx::Error> {
    Currency::parse(text).map_err(|e| decode("currency", e))
}

pub fn customer_id(text: String) -> Result<CustomerId, sqlx::Error> {
    CustomerId::parse(text).map_err(|e| decode("customer_id", e))
}

/// Quantities are stored as `integer` (`int4`), positive by a CHECK.
pub fn quantity(units: i32) -> Result<Quantity, sqlx::Error> {
    let units = u32::try_from(units)
        .map_err(|_| sqlx::Error::Decode(format!("stored quantity: {units} is negative").into()))?;
    Quantity::new(units).map_err(|e| decode("quantity", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_column_is_its_value() {
        assert_eq!(sku("MUG".into()).unwrap().as_str(), "MUG");
        assert_eq!(currency("USD".into()).unwrap().as_str(), "USD");
        assert_eq!(customer_id("c".into()).unwrap().as_str(), "c");
        assert_eq!(quantity(3).unwrap().get(), 3);
    }

    #[test]
    fn an_invalid_column_is_a_decode_error_naming_it() {
        for (error, named) in [
            (
                sku(String::new()).unwrap_err(),
                "stored sku: sku must not be blank",
            ),
            (currency("usd".into()).unwrap_err(), "stored currency"),
            (customer_id(" ".into()).unwrap_err(), "stored customer_id"),
            (
                quantity(0).unwrap_err(),
                "stored quantity: quantity must be at least 1",
            ),
            (quantity(-2).unwrap_err(), "stored quantity: -2 is negative"),
        ] {
            assert!(matches!(error, sqlx::Error::Decode(_)), "{error:?}");
            assert!(error.to_string().contains(named), "{error}");
        }
    }
}
