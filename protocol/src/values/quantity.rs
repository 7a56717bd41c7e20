//! How many units of one SKU a line asks for.

use serde::{Deserialize, Serialize};

use super::{integer_value, ValueError};

/// At least 1: a line of zero units is no line. The upper bound is the
/// HTTP API's business (it takes at most 10,000), not the value's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const ONE: Quantity = Quantity(1);

    pub fn new(units: u32) -> Result<Quantity, ValueError> {
        if units == 0 {
            Err(ValueError::ZeroQuantity)
        } else {
            Ok(Quantity(units))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = ValueError;

    fn try_from(units: u32) -> Result<Quantity, ValueError> {
        Quantity::new(units)
    }
}

integer_value!(Quantity => u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_quantity() {
        assert_eq!(Quantity::new(0), Err(ValueError::ZeroQuantity));
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(u32::MAX).unwrap().get(), u32::MAX);
        assert_eq!(Quantity::ONE.to_string(), "1");
    }

    #[test]
    fn is_the_bare_integer_on_the_wire_and_checked_on_the_way_in() {
        let three = Quantity::new(3).unwrap();
        assert_eq!(serde_json::to_string(&three).unwrap(), "3");
        assert_eq!(serde_json::from_str::<Quantity>("3").unwrap(), three);
        let error = serde_json::from_str::<Quantity>("0").unwrap_err();
        assert!(
            error.to_string().contains("quantity must be at least 1"),
            "{error}"
        );
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert_eq!(schemars::schema_for!(Quantity), schemars::schema_for!(u32));
    }
}
