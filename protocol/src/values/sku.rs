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

    #[test]
    fn takes_what_a_catalogue_holds() {
        assert!(
            Sku::parse(" padded ").is_ok(),
            "blank is not the same as padded"
        );
        assert_eq!(
            Sku::parse("é".repeat(64)).unwrap().to_string(),
            "é".repeat(64)
        );
    }
}
