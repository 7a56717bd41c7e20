//! A stock keeping unit: the text that names a product.

use serde::{Deserialize, Serialize};

use super::checked_text;

/// 1 to 64 characters, not blank, no control characters: what the HTTP API
/// and the catalogue import have always let in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

checked_text!(Sku, "sku", 64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::ValueError;

    #[test]
    fn takes_what_a_catalogue_holds() {
        assert_eq!(Sku::parse("SKU-TSHIRT").unwrap().as_str(), "SKU-TSHIRT");
        assert!(Sku::parse("x".repeat(64)).is_ok());
        assert!(
            Sku::parse(" padded ").is_ok(),
            "blank is not the same as padded"
        );
        assert_eq!(
            Sku::parse("é".repeat(64)).unwrap().to_string(),
            "é".repeat(64)
        );
    }

    #[test]
    fn refuses_blank_long_and_control_text() {
        assert_eq!(Sku::parse(""), Err(ValueError::Blank { what: "sku" }));
        assert_eq!(Sku::parse("  "), Err(ValueError::Blank { what: "sku" }));
        assert!(matches!(
            Sku::parse("x".repeat(65)),
            Err(ValueError::TooLong {
                max: 64,
                chars: 65,
                ..
            })
        ));
        assert_eq!(
            Sku::parse("A\u{7}"),
            Err(ValueError::ControlCharacter { what: "sku" })
        );
    }

    #[test]
    fn is_the_bare_string_on_the_wire_and_checked_on_the_way_in() {
        let sku = Sku::parse("BOOK").unwrap();
        assert_eq!(serde_json::to_string(&sku).unwrap(), r#""BOOK""#);
        assert_eq!(serde_json::from_str::<Sku>(r#""BOOK""#).unwrap(), sku);
        let error = serde_json::from_str::<Sku>(r#""""#).unwrap_err();
        assert!(
            error.to_string().contains("sku must not be blank"),
            "{error}"
        );
        assert!(serde_json::from_str::<Sku>("1").is_err());
    }

    #[test]
    fn its_schema_is_a_string() {
        assert_eq!(schemars::schema_for!(Sku), schemars::schema_for!(String));
    }
}
