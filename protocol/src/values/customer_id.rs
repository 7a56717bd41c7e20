//! Who is checking out, as the shop names its customer.

use serde::{Deserialize, Serialize};

use super::checked_text;

/// 1 to 128 characters, not blank, no control characters. Opaque
/// otherwise: the shop chooses its ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

checked_text!(CustomerId, "customer_id", 128);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::ValueError;

    #[test]
    fn takes_up_to_128_characters() {
        assert_eq!(CustomerId::parse("cust-1").unwrap().as_str(), "cust-1");
        assert!(CustomerId::parse("c".repeat(128)).is_ok());
        assert!(matches!(
            CustomerId::parse("c".repeat(129)),
            Err(ValueError::TooLong {
                max: 128,
                chars: 129,
                ..
            })
        ));
    }

    #[test]
    fn refuses_blank_and_control_text() {
        assert_eq!(
            CustomerId::parse(" "),
            Err(ValueError::Blank {
                what: "customer_id"
            })
        );
        assert_eq!(
            CustomerId::parse("a\nb"),
            Err(ValueError::ControlCharacter {
                what: "customer_id"
            })
        );
    }

    #[test]
    fn is_the_bare_string_on_the_wire_and_checked_on_the_way_in() {
        let id = CustomerId::parse("c-9").unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::json!("c-9"));
        assert_eq!(serde_json::from_str::<CustomerId>(r#""c-9""#).unwrap(), id);
        let error = serde_json::from_str::<CustomerId>(r#""\u0000""#).unwrap_err();
        assert!(error.to_string().contains("customer_id"), "{error}");
        assert_eq!(
            schemars::schema_for!(CustomerId),
            schemars::schema_for!(String)
        );
    }
}
