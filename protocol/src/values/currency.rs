//! The currency a checkout is priced and charged in.

use serde::{Deserialize, Serialize};

use super::{text_value, ValueError};

/// Three ASCII upper-case letters: the shape of an ISO 4217 code, not a
/// check against the list (the catalogue decides which currencies it sells
/// in). Lower case is refused, not upper-cased: the only place a currency
/// enters is the catalogue import, which has always refused `usd` with the
/// line and field, and every currency stored or sent since is upper case.
/// Upper-casing here would make `usd` and `USD` the same on the way in
/// while the products table, compared as text, keeps them apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(text: impl Into<String>) -> Result<Currency, ValueError> {
        let text = text.into();
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(text))
        } else {
            Err(ValueError::Currency(text))
        }
    }
}

text_value!(Currency);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_three_upper_case_letters() {
        for code in ["USD", "EUR", "JPY", "XXX"] {
            assert_eq!(Currency::parse(code).unwrap().as_str(), code);
        }
    }

    #[test]
    fn refuses_anything_else_lower_case_included() {
        for bad in ["", "US", "USDT", "usd", "Usd", "U$D", "ÜSD", " USD"] {
            assert_eq!(
                Currency::parse(bad),
                Err(ValueError::Currency(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(ValueError::Currency("usd".into())
            .to_string()
            .contains("currency"));
    }

    #[test]
    fn is_the_bare_string_on_the_wire_and_checked_on_the_way_in() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(serde_json::to_string(&usd).unwrap(), r#""USD""#);
        assert_eq!(serde_json::from_str::<Currency>(r#""USD""#).unwrap(), usd);
        let error = serde_json::from_str::<Currency>(r#""usd""#).unwrap_err();
        assert!(error.to_string().contains("currency"), "{error}");
        assert_eq!(
            schemars::schema_for!(Currency),
            schemars::schema_for!(String)
        );
    }
}
