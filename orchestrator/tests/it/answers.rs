//! Reading the JSON the orchestrator answers with.

use serde_json::Value;

/// The string `field` of each object in the array `list`, in its order.
pub fn strings<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array: {list}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("a string {field}: {item}"))
        })
        .collect()
}

/// The fields a problem answer (a 422) names, in its order; none if it
/// lists no errors.
pub fn fields(problem: &Value) -> Vec<&str> {
    match &problem["errors"] {
        Value::Null => Vec::new(),
        errors => strings(errors, "field"),
    }
}
