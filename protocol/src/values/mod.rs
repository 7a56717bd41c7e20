//! The checkout's domain values, each validated once where it enters (an
//! HTTP body, a CSV row, a message, a database row) so that code holding
//! one never checks it again. On the wire each is exactly its bare JSON
//! string or integer, and its JSON Schema is the bare type's: a typed value
//! changes what a reader accepts, never what the contract says.

mod cents;
mod currency;
mod customer_id;
mod quantity;
mod sku;

pub use cents::Cents;
pub use currency::Currency;
pub use customer_id::CustomerId;
pub use quantity::Quantity;
pub use sku::Sku;

/// Why a text or a number is not a valid domain value. Each message names
/// the value (`sku`, `quantity`...), because a message decoded from the
/// wire reports it without saying which field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{what} must not be blank")]
    Blank { what: &'static str },
    #[error("{what} must be at most {max} characters, got {chars}")]
    TooLong {
        what: &'static str,
        max: usize,
        chars: usize,
    },
    #[error("{what} must not contain control characters")]
    ControlCharacter { what: &'static str },
    #[error("quantity must be at least 1, got 0")]
    ZeroQuantity,
    #[error("currency must be three upper-case ASCII letters (ISO 4217, e.g. USD), got {0:?}")]
    Currency(String),
}

/// The rule every free text of a checkout follows (a SKU, a customer id, a
/// payment method): not blank, at most `max` characters, no control
/// characters, checked in that order so the first problem is the one told.
/// Public so that a text that is not (yet) a value type is held to the same
/// rule with the same messages.
pub fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), ValueError> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        Err(ValueError::Blank { what })
    } else if chars > max {
        Err(ValueError::TooLong { what, max, chars })
    } else if text.chars().any(char::is_control) {
        Err(ValueError::ControlCharacter { what })
    } else {
        Ok(())
    }
}

/// What a text value needs besides its own rule: Display, `as_str`, the
/// conversions serde uses (`try_from = "String"`, `into = "String"`, so the
/// JSON is the bare string and is validated on the way in), comparison with
/// plain text, and a JSON Schema that is `String`'s, delegated by hand
/// because a derived one would be a named object schema, not the bare type.
macro_rules! text_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::convert::TryFrom<String> for $name {
            type Error = $crate::values::ValueError;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(text)
            }
        }

        impl ::std::convert::TryFrom<&str> for $name {
            type Error = $crate::values::ValueError;

            fn try_from(text: &str) -> Result<Self, Self::Error> {
                Self::parse(text)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::values::ValueError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        $crate::values::bare_schema!($name => String);
    };
}

/// A free-text value held to [`check_text`]: its `MAX_CHARS` and its
/// `parse`, named `what` in messages, and all that [`text_value!`] gives.
macro_rules! checked_text {
    ($name:ident, $what:literal, $max_chars:literal) => {
        impl $name {
            pub const MAX_CHARS: usize = $max_chars;

            pub fn parse(text: impl Into<String>) -> Result<$name, $crate::values::ValueError> {
                let text = text.into();
                $crate::values::check_text($what, &text, Self::MAX_CHARS)?;
                Ok($name(text))
            }
        }

        $crate::values::text_value!($name);
    };
}

/// What an integer value needs besides its own rule: the conversion back to
/// its bare integer, comparison with a plain one, Display, and the bare
/// integer's JSON Schema.
macro_rules! integer_value {
    ($name:ident => $inner:ty) => {
        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }

        impl PartialEq<$inner> for $name {
            fn eq(&self, other: &$inner) -> bool {
                self.0 == *other
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        $crate::values::bare_schema!($name => $inner);
    };
}

/// A JSON Schema identical to `$inner`'s, so that schemas generated from
/// the wire types do not change when a field becomes a value type.
macro_rules! bare_schema {
    ($name:ident => $inner:ty) => {
        impl ::schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                <$inner as ::schemars::JsonSchema>::inline_schema()
            }

            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                <$inner as ::schemars::JsonSchema>::schema_name()
            }

            fn schema_id() -> ::std::borrow::Cow<'static, str> {
                <$inner as ::schemars::JsonSchema>::schema_id()
            }

            fn json_schema(generator: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                <$inner as ::schemars::JsonSchema>::json_schema(generator)
            }
        }
    };
}

pub(crate) use bare_schema;
pub(crate) use checked_text;
pub(crate) use integer_value;
pub(crate) use text_value;

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`checked_text!`] promises of a value named `what` of at most
    /// `max` characters, shown with `sample`, one of its valid texts.
    fn holds_to_check_text<T>(what: &'static str, max: usize, sample: &str)
    where
        T: TryFrom<String, Error = ValueError>
            + AsRef<str>
            + std::fmt::Debug
            + PartialEq
            + serde::Serialize
            + serde::de::DeserializeOwned
            + schemars::JsonSchema,
    {
        let parse = |text: &str| T::try_from(text.to_owned());
        let value = parse(sample).unwrap();
        assert_eq!(value.as_ref(), sample);
        assert!(parse(&"x".repeat(max)).is_ok());
        assert_eq!(
            parse(&"x".repeat(max + 1)),
            Err(ValueError::TooLong {
                what,
                max,
                chars: max + 1
            })
        );
        for blank in ["", " ", "  "] {
            assert_eq!(parse(blank), Err(ValueError::Blank { what }), "{blank:?}");
        }
        for control in ["a\nb", "A\u{7}"] {
            assert_eq!(
                parse(control),
                Err(ValueError::ControlCharacter { what }),
                "{control:?}"
            );
        }

        // The bare string on the wire, checked on the way in.
        assert_eq!(
            serde_json::to_value(&value).unwrap(),
            serde_json::json!(sample)
        );
        assert_eq!(
            serde_json::from_value::<T>(serde_json::json!(sample)).unwrap(),
            value
        );
        let error = serde_json::from_str::<T>(r#""""#).unwrap_err();
        let blank = format!("{what} must not be blank");
        assert!(error.to_string().contains(&blank), "{error}");
        let error = serde_json::from_str::<T>(r#""\u0000""#).unwrap_err();
        assert!(error.to_string().contains(what), "{error}");
        assert!(serde_json::from_str::<T>("1").is_err());
        assert_eq!(schemars::schema_for!(T), schemars::schema_for!(String));
    }

    #[test]
    fn each_checked_text_holds_to_its_rule_and_is_a_bare_string() {
        holds_to_check_text::<Sku>("sku", 64, "SKU-TSHIRT");
        holds_to_check_text::<CustomerId>("customer_id", 128, "cust-1");
    }

    #[test]
    fn text_problems_are_told_in_order() {
        assert_eq!(
            check_text("sku", " \t", 3),
            Err(ValueError::Blank { what: "sku" })
        );
        assert_eq!(
            check_text("sku", "abcd\n", 3),
            Err(ValueError::TooLong {
                what: "sku",
                max: 3,
                chars: 5
            })
        );
        assert_eq!(
            check_text("sku", "a\0", 3),
            Err(ValueError::ControlCharacter { what: "sku" })
        );
        assert_eq!(check_text("sku", "é€x", 3), Ok(()));
    }

    #[test]
    fn messages_name_the_value() {
        let message = check_text("customer_id", "", 3).unwrap_err().to_string();
        assert_eq!(message, "customer_id must not be blank");
        assert!(ValueError::ZeroQuantity.to_string().starts_with("quantity"));
    }
}
