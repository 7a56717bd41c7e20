//! Turns request bodies into typed values (a checkout into a
//! [`CheckoutRequest`] of `saga_protocol::values`), or into the list of
//! fields that are wrong and why. The values' own rules decide what is
//! valid; this module words the answer as this API always has.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use saga_protocol::messages::{LineRequest, ShipTo};
use saga_protocol::values::{check_text, CustomerId, Quantity, Sku, ValueError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::error::Category;

use super::problem::{ApiError, FieldError};
use crate::saga::CheckoutRequest;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
pub(crate) const MAX_ID_LEN: usize = CustomerId::MAX_CHARS;
pub(crate) const MAX_SKU_LEN: usize = Sku::MAX_CHARS;
pub(crate) const MAX_METHOD_LEN: usize = 64;
pub(crate) const MAX_REGION_LEN: usize = 16;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCheckout)]
pub(crate) struct Body {
    customer_id: String,
    items: Vec<Item>,
    ship_to: Address,
    payment_method: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCheckoutItem)]
pub(crate) struct Item {
    sku: String,
    // Any JSON number on purpose: a negative, huge or fractional quantity
    // is a validation error naming the field, not a type error; and `2.0`
    // is the integer 2, as JSON Schema's `integer` has it.
    #[schema(value_type = i64)]
    quantity: serde_json::Number,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCheckoutShipTo)]
pub(crate) struct Address {
    country: String,
    #[serde(default)]
    region: String,
}

pub fn parse_checkout(body: &[u8]) -> Result<CheckoutRequest, ApiError> {
    validate(parse_json(body)?)
}

/// A JSON request body as `T`, or the field that does not fit and why.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body this API takes is an object; serde would also read a
    // struct from an array of its fields in order (`[null, null]`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::MalformedJson(
            "the body must be a JSON object, not an array".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(without_position(e.to_string())))?;
    Ok(parsed)
}

/// The body of a request that must be JSON: within the size limit and
/// declared as `application/json`.
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(body)
}

/// A query string as `T`, or the parameter that does not fit: the
/// parameters are texts, so what fails here is one given twice (or bytes
/// that are not UTF-8), a client mistake to answer like any other.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(params)| params).map_err(|rejection| {
        let text = rejection.body_text();
        let message = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        let field = message
            .strip_prefix("duplicate field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or("query");
        let message = match field {
            "query" => message.to_owned(),
            _ => "must be given at most once".to_owned(),
        };
        ApiError::Invalid(vec![FieldError::new(field, message)])
    })
}

/// A serde error as the field it is about and a message without the
/// parser's line and column.
fn shape_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.inner();
    let message = without_position(inner.to_string());
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::MalformedJson(message),
        Category::Data => {
            // A missing field's path is its parent's; an unknown field's
            // path already ends with its name.
            let named = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (named, path.as_str()) {
                (Some(name), ".") => name.to_owned(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, ".") => "body".to_owned(),
                (None, p) => p.to_owned(),
            };
            ApiError::Invalid(vec![FieldError::new(field, message)])
        }
    }
}

fn without_position(message: String) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    }
}

fn validate(body: Body) -> Result<CheckoutRequest, ApiError> {
    let mut errors = Vec::new();
    let customer_id = valid(
        &mut errors,
        "customer_id",
        CustomerId::parse(body.customer_id.as_str()),
    );
    valid(
        &mut errors,
        "payment_method",
        check_text("payment_method", &body.payment_method, MAX_METHOD_LEN),
    );
    if body.items.is_empty() {
        errors.push(FieldError::new("items", "must contain at least one item"));
    }
    if body.items.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "items",
            format!("at most {MAX_ITEMS} items"),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut lines = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.iter().enumerate() {
        let sku_field = format!("items[{i}].sku");
        let sku = valid(&mut errors, &sku_field, Sku::parse(item.sku.as_str()));
        if let Some(first) = seen.insert(item.sku.as_str(), i) {
            errors.push(FieldError::new(
                sku_field,
                format!("duplicate SKU `{}` (also in items[{first}]); put the total quantity on one line", item.sku),
            ));
        }
        // The upper bound is this API's; `Quantity` itself only refuses 0.
        let quantity = whole_number(&item.quantity)
            .filter(|q| (1..=MAX_QUANTITY).contains(q))
            .and_then(|q| Quantity::new(q as u32).ok());
        if quantity.is_none() {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!(
                    "must be a whole number from 1 to {MAX_QUANTITY}, got {}",
                    item.quantity
                ),
            ));
        }
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            lines.push(LineRequest { sku, quantity });
        }
    }
    let country = &body.ship_to.country;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        errors.push(FieldError::new(
            "ship_to.country",
            "must be a two-letter ISO 3166-1 country code",
        ));
    }
    let region = &body.ship_to.region;
    if region.len() > MAX_REGION_LEN
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        errors.push(FieldError::new(
            "ship_to.region",
            format!("must be at most {MAX_REGION_LEN} letters, digits or `-`"),
        ));
    }
    // An invalid customer_id (None) is among the errors.
    let Some(customer_id) = customer_id.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    Ok(CheckoutRequest {
        customer_id,
        items: lines,
        ship_to: ShipTo {
            country: country.to_ascii_uppercase(),
            region: region.to_ascii_uppercase(),
        },
        payment_method: body.payment_method,
    })
}

/// The integer a JSON number stands for, if it stands for one (`3`, `3.0`,
/// `3e0`) within the range where a float is exact.
fn whole_number(number: &serde_json::Number) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
            .map(|f| f as i64)
    })
}

/// The value, or None with the field's error added, worded as this API
/// words it (the values' own messages name the value, not the field).
fn valid<T>(errors: &mut Vec<FieldError>, field: &str, value: Result<T, ValueError>) -> Option<T> {
    let error = match value {
        Ok(value) => return Some(value),
        Err(error) => error,
    };
    let message = match error {
        ValueError::Blank { .. } => "must not be empty".to_owned(),
        ValueError::TooLong { max, .. } => format!("must be at most {max} characters"),
        ValueError::ControlCharacter { .. } => "must not contain control characters".to_owned(),
        other => other.to_string(),
    };
    errors.push(FieldError::new(field, message));
    None
}

/// A valid `Idempotency-Key` header value, if any.
pub fn idempotency_key(
    value: Option<&axum::http::HeaderValue>,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let invalid = |m: &str| ApiError::Invalid(vec![FieldError::new("Idempotency-Key", m)]);
    let text = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid("must be 1 to 255 characters"));
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<String> {
        match parse_checkout(body.as_bytes()) {
            Err(ApiError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => vec![format!("other: {other}")],
            Ok(_) => vec![],
        }
    }

    const OK: &str = r#"{"customer_id":"c","items":[{"sku":"A","quantity":1}],"ship_to":{"country":"us"},"payment_method":"sim_approve"}"#;

    #[test]
    fn accepts_a_good_body_and_normalises_country() {
        let r = parse_checkout(OK.as_bytes()).unwrap();
        assert_eq!(r.ship_to.country, "US");
        assert_eq!(r.ship_to.region, "");
    }

    #[test]
    fn a_body_is_an_object_never_an_array_of_its_fields() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Limits {
            rate: Option<u32>,
            burst: Option<u32>,
        }
        assert!(parse_json::<Limits>(br#"{"rate": 1}"#).is_ok());
        for body in [&b"[null, null]"[..], b"  [1, 2]"] {
            let error = parse_json::<Limits>(body).unwrap_err();
            assert!(matches!(error, ApiError::MalformedJson(_)), "{error:?}");
        }
        let order = br#"[{"sku": "BOOK", "quantity": 1}]"#;
        assert!(parse_checkout(order).is_err());
    }

    #[test]
    fn a_quantity_is_any_json_number_that_is_whole() {
        let with = |q: &str| OK.replace(r#""quantity":1"#, &format!(r#""quantity":{q}"#));
        for (whole, expected) in [("2", 2), ("2.0", 2), ("2e0", 2), ("10000", 10_000)] {
            let r = parse_checkout(with(whole).as_bytes()).unwrap();
            assert_eq!(r.items[0].quantity, expected, "{whole}");
        }
        for bad in ["2.5", "0", "10001", "-1", "1e300", "18446744073709551615"] {
            assert_eq!(fields(&with(bad)), ["items[0].quantity"], "{bad}");
        }
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(
            fields(&OK.replace(r#""quantity":1"#, r#""quantity":0"#)),
            ["items[0].quantity"]
        );
        assert_eq!(
            fields(&OK.replace(r#""quantity":1"#, r#""quantity":"x""#)),
            ["items[0].quantity"]
        );
        assert_eq!(fields(&OK.replace(r#""sku":"A","#, "")), ["items[0].sku"]);
        assert_eq!(
            fields(&OK.replace(r#""customer_id":"c","#, r#""customer_id":"c","color":1,"#)),
            ["color"]
        );
        assert_eq!(
            fields(&OK.replace(
                r#""payment_method":"sim_approve""#,
                r#""payment_method":"sim_approve","extra":{}"#
            )),
            ["extra"]
        );
        assert_eq!(
            fields(&OK.replace(r#"{"sku":"A","quantity":1}"#, "")),
            ["items"]
        );
        assert_eq!(
            fields(&OK.replace(r#""country":"us""#, r#""country":"usa""#)),
            ["ship_to.country"]
        );
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert!(matches!(
            parse_checkout(b"{\"customer_id\":"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_checkout(format!("{OK} x").as_bytes()),
            Err(ApiError::MalformedJson(_))
        ));
    }
}
