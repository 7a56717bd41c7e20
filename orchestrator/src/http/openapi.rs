//! The API contract as OpenAPI 3.1, generated from the handlers and types
//! themselves (so it cannot drift from them), served at `/openapi.json`.
//!
//! utoipa's derives describe shapes; what the validators enforce beyond
//! shapes (lengths, patterns, bounds, enums, which fields go together) and
//! the problem answers every route shares are added by [`contract`], from
//! the validators' own constants. A constraint aimed at a property or an
//! operation that no longer exists panics, so a renamed field fails the
//! tests instead of silently loosening the contract.

use axum::Json;
use saga_protocol::Step;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::admin::reason::MAX_REASON_CHARS;
use super::admin::saga_search::{MAX_CLIENT_CHARS, MAX_CUSTOMER_ID_CHARS, MAX_QUERY_CHARS};
use super::admin::{
    bulk_retry, clients, dead_letters, failures, outbox, park_extension, saga_actions, saga_detail,
    saga_list, stats,
};
use super::checkouts;
use super::checkouts::MAX_WAIT_SECONDS;
use super::validation::{
    MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_LEN, MAX_ID_LEN, MAX_ITEMS, MAX_METHOD_LEN, MAX_QUANTITY,
    MAX_REGION_LEN, MAX_SKU_LEN,
};
use crate::saga::SagaStatus;
use crate::store::{MAX_BULK, MAX_PAGE};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Checkout saga",
        description = "Checkouts driven as sagas over inventory, tax and payment; \
                       support tools for the ones that fail. Money is integer minor units (cents).",
    ),
    paths(
        checkouts::create,
        checkouts::get,
        saga_list::list,
        saga_detail::detail,
        saga_actions::retry,
        saga_actions::cancel,
        park_extension::extend_park,
        bulk_retry::bulk_retry,
        failures::failures,
        dead_letters::dead_letters,
        outbox::outbox,
        stats::statuses,
        stats::minutes,
        clients::list,
        clients::add,
        clients::set_limits,
        clients::revoke,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "checkouts", description = "For checkout clients: a client key (`sagactl clients add`, or CHECKOUT_CLIENT_KEYS) as a bearer token"),
        (name = "support", description = "For support staff: a bearer token from ADMIN_TOKENS"),
        (name = "clients", description = "For support staff: the checkout clients, their keys and limits"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // Two schemes, both bearer tokens, never interchangeable: a
        // support token opens only the support API, a client key only
        // the checkout API.
        let mut support = Http::new(HttpAuthScheme::Bearer);
        support.description = Some("A support token from ADMIN_TOKENS".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(support));
        let mut client = Http::new(HttpAuthScheme::Bearer);
        client.description = Some(
            "A checkout client's key (`sagactl clients add`, or CHECKOUT_CLIENT_KEYS)".to_owned(),
        );
        components.add_security_scheme("client_key", SecurityScheme::Http(client));
    }
}

pub async fn document() -> Json<Value> {
    Json(contract())
}

/// Characters that [`char::is_control`] refuses (Unicode `Cc`), as an
/// ECMA-262 character class body.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";
/// Characters that [`str::trim`] removes (Unicode `White_Space`), with the
/// control characters.
const BLANK_OR_CONTROL: &str =
    r"\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// A text the validator takes: no control character, not only white space.
fn text_pattern() -> String {
    format!("^[^{CONTROL}]*[^{BLANK_OR_CONTROL}][^{CONTROL}]*$")
}

/// Any text without a control character, empty included.
fn no_control_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": text_pattern()})
}

fn step_names() -> Vec<&'static str> {
    Step::ALL.iter().map(|s| s.routing_key()).collect()
}

fn status_names() -> Vec<&'static str> {
    SagaStatus::ALL.iter().map(|s| s.as_str()).collect()
}

fn page_limit() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50})
}

/// The cursor of a list paged by a row number (`next_cursor` as text).
fn numeric_cursor() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX})
}

/// The published document: utoipa's, with every constraint the validators
/// enforce and every problem answer the routes share.
pub fn contract() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    constrain_checkout_body(&mut doc);
    constrain_support_bodies(&mut doc);
    constrain_parameters(&mut doc);
    document_shared_answers(&mut doc);
    link_checkouts_to_their_sagas(&mut doc);
    doc
}

fn constrain_checkout_body(doc: &mut Value) {
    let schemas = "/components/schemas";
    merge(
        doc,
        &format!("{schemas}/NewCheckout/properties/customer_id"),
        text(MAX_ID_LEN),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckout/properties/payment_method"),
        text(MAX_METHOD_LEN),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckout/properties/items"),
        json!({
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            // JSON Schema cannot say "unique by one property".
            "description": "One line per SKU: a SKU on two lines is refused (422); put the total quantity on one line.",
        }),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckoutItem/properties/sku"),
        text(MAX_SKU_LEN),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckoutItem/properties/quantity"),
        json!({"minimum": 1, "maximum": MAX_QUANTITY}),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckoutShipTo/properties/country"),
        json!({
            "pattern": "^[A-Za-z]{2}$",
            "description": "ISO 3166-1 alpha-2 code, either case",
        }),
    );
    merge(
        doc,
        &format!("{schemas}/NewCheckoutShipTo/properties/region"),
        json!({
            "maxLength": MAX_REGION_LEN,
            "pattern": "^[A-Za-z0-9-]*$",
            "default": "",
            "description": "Subdivision code (`CA`); empty or absent for the country default",
        }),
    );
    for name in ["NewCheckout", "NewCheckoutItem", "NewCheckoutShipTo"] {
        merge(
            doc,
            &format!("{schemas}/{name}"),
            json!({"additionalProperties": false}),
        );
    }
}

fn constrain_support_bodies(doc: &mut Value) {
    let schemas = "/components/schemas";
    merge(
        doc,
        &format!("{schemas}/ActionBody"),
        json!({"additionalProperties": false, "required": ["reason"]}),
    );
    replace(
        doc,
        &format!("{schemas}/ActionBody/properties/reason"),
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REASON_CHARS,
            "pattern": text_pattern(),
            "description": "Why, for the timeline",
        }),
    );

    let bulk = format!("{schemas}/BulkRetryBody");
    // `null` is the same as absent for every optional field here.
    let mut steps: Vec<Value> = step_names().into_iter().map(Value::from).collect();
    steps.push(Value::Null);
    replace(
        doc,
        &format!("{bulk}/properties/step"),
        json!({"type": ["string", "null"], "enum": steps}),
    );
    replace(
        doc,
        &format!("{bulk}/properties/phase"),
        json!({"type": ["string", "null"], "enum": ["forward", "compensating", null]}),
    );
    merge(
        doc,
        &format!("{bulk}/properties/error"),
        json!({"pattern": no_control_pattern()}),
    );
    merge(
        doc,
        &format!("{bulk}/properties/saga_ids"),
        json!({"minItems": 1, "maxItems": MAX_BULK}),
    );
    let mut reason = text(MAX_REASON_CHARS);
    // The string keywords leave `null` alone.
    reason["type"] = json!(["string", "null"]);
    replace(doc, &format!("{bulk}/properties/reason"), reason);
    merge(
        doc,
        &bulk,
        json!({
            "additionalProperties": false,
            // JSON Schema could say this with `oneOf`, but contract testers
            // (schemathesis) then take valid bodies for invalid ones.
            "description": "Select either `saga_ids` or one failure group: `step`, `phase` and `error` all three, \
                            exactly as `GET /v1/admin/failures` shows them. Not both; `null` is the same as absent. \
                            `reason` is required unless `dry_run` is true.",
            // A reason, unless this is a dry run.
            "if": {"required": ["dry_run"], "properties": {"dry_run": {"const": true}}},
            "else": {"required": ["reason"], "properties": {"reason": {"type": "string"}}},
        }),
    );
}

fn constrain_parameters(doc: &mut Value) {
    parameter(
        doc,
        "/v1/checkouts",
        "post",
        "Idempotency-Key",
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_LEN,
            // Visible ASCII; HTTP drops white space around a header value.
            "pattern": r"^[!-~]([ -~\t]*[!-~])?$",
        }),
    );
    parameter(
        doc,
        "/v1/checkouts/{id}",
        "get",
        "id",
        json!({"type": "string", "format": "uuid"}),
    );
    parameter(
        doc,
        "/v1/checkouts/{id}",
        "get",
        "wait",
        json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0}),
    );
    for (path, method) in [
        ("/v1/admin/sagas/{id}", "get"),
        ("/v1/admin/sagas/{id}/retry", "post"),
        ("/v1/admin/sagas/{id}/cancel", "post"),
    ] {
        parameter(
            doc,
            path,
            method,
            "id",
            json!({"type": "string", "format": "uuid"}),
        );
    }
    let sagas = "/v1/admin/sagas";
    parameter(
        doc,
        sagas,
        "get",
        "status",
        json!({"type": "string", "enum": status_names()}),
    );
    parameter(
        doc,
        sagas,
        "get",
        "step",
        json!({"type": "string", "enum": step_names()}),
    );
    parameter(
        doc,
        sagas,
        "get",
        "phase",
        json!({"type": "string", "enum": ["forward", "compensating"]}),
    );
    parameter(
        doc,
        sagas,
        "get",
        "error",
        json!({"type": "string", "pattern": no_control_pattern(),
               "description": "Case-insensitive substring of `last_error`"}),
    );
    for bound in ["created_after", "created_before"] {
        parameter(
            doc,
            sagas,
            "get",
            bound,
            json!({"type": "string", "format": "date-time"}),
        );
    }
    for (name, max) in [
        ("q", MAX_QUERY_CHARS),
        ("customer_id", MAX_CUSTOMER_ID_CHARS),
        ("idempotency_key", MAX_IDEMPOTENCY_KEY_LEN),
        ("client", MAX_CLIENT_CHARS),
    ] {
        parameter(
            doc,
            sagas,
            "get",
            name,
            json!({"type": "string", "maxLength": max, "pattern": no_control_pattern(),
                   "description": "Matched exactly, spaces around it trimmed"}),
        );
    }
    parameter(doc, sagas, "get", "limit", page_limit());
    parameter(
        doc,
        sagas,
        "get",
        "cursor",
        json!({"type": "string", "format": "uuid",
               "description": "`next_cursor` of the previous page"}),
    );
    let dead_letters = "/v1/admin/dead-letters";
    parameter(
        doc,
        dead_letters,
        "get",
        "saga_id",
        json!({"type": "string", "format": "uuid"}),
    );
    for path in [dead_letters, "/v1/admin/outbox"] {
        parameter(doc, path, "get", "limit", page_limit());
        parameter(doc, path, "get", "cursor", numeric_cursor());
    }
}

/// Answers that come from the route's kind rather than its handler: every
/// route can be out of database connections or time, every route behind a
/// token refuses a request without a valid one, every route on one saga or
/// client answers 404 for one that does not exist, every route that reads
/// a JSON body refuses one that is not JSON, too large or declared
/// otherwise, every route with a query string refuses a parameter it
/// cannot read (`CheckedQuery`).
fn document_shared_answers(doc: &mut Value) {
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        })
    };
    let unavailable = {
        let mut answer = problem("The database is unavailable (`unavailable`), no database connection came free in time (`overloaded`, with `Retry-After`), or the request timed out (`timeout`)");
        answer["headers"] = json!({"Retry-After": {
            "description": "With `overloaded` or `too-many-waiters`: seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }});
        answer
    };
    // Each security scheme's refusal of a request without a valid token.
    let unauthenticated = [
        ("bearer", problem("No valid bearer token")),
        ("client_key", problem("No client key, or not a valid one")),
    ];
    // The routes on one saga or one client, and their answer for an id or
    // a name that names none (the saga's from `SagaId`).
    let not_found = [
        ("/v1/admin/sagas/{id}", problem("No such saga")),
        ("/v1/admin/clients/{name}", problem("No such client")),
    ];
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let unknown = not_found
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, answer)| answer);
        for operation in item.values_mut() {
            let secured_by = |scheme: &str| {
                operation
                    .get("security")
                    .and_then(Value::as_array)
                    .is_some_and(|schemes| schemes.iter().any(|s| s.get(scheme).is_some()))
            };
            let refused = unauthenticated
                .iter()
                .find(|(scheme, _)| secured_by(scheme))
                .map(|(_, answer)| answer.clone());
            let reads_query = operation
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "query"));
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if let Some(answer) = refused {
                add_answer(responses, "401", answer);
            }
            if let Some(answer) = unknown {
                add_answer(responses, "404", answer.clone());
            }
            if reads_query {
                add_answer(responses, "422", problem("A parameter is invalid"));
            }
            add_answer(responses, "503", unavailable.clone());
            if operation.get("requestBody").is_none() {
                continue;
            }
            let responses = operation["responses"].as_object_mut().expect("checked");
            add_answer(
                responses,
                "400",
                problem("The body is not JSON (`malformed-json`)"),
            );
            add_answer(
                responses,
                "413",
                problem(&format!(
                    "The body is over its limit (`payload-too-large`; {} KiB for most routes)",
                    MAX_BODY_BYTES / 1024
                )),
            );
            add_answer(
                responses,
                "415",
                problem("Content-Type is not application/json (`unsupported-media-type`)"),
            );
        }
    }
}

/// A route's own description of an answer wins over the shared one.
fn add_answer(responses: &mut Map<String, Value>, status: &str, answer: Value) {
    responses.entry(status).or_insert(answer);
}

/// A checkout id is its saga's id: a client (or a contract tester) can
/// follow a new checkout to its status and to the support routes.
fn link_checkouts_to_their_sagas(doc: &mut Value) {
    let id = json!({"id": "$response.body#/checkout_id"});
    let mut links = Map::new();
    for (name, operation) in [
        ("GetCheckout", "get"),
        ("GetSaga", "detail"),
        ("RetrySaga", "retry"),
        ("CancelSaga", "cancel"),
    ] {
        links.insert(
            name.to_owned(),
            json!({"operationId": operation, "parameters": id}),
        );
    }
    for status in ["200", "202"] {
        merge(
            doc,
            &format!("/paths/~1v1~1checkouts/post/responses/{status}"),
            json!({"links": links}),
        );
    }
}

/// Sets the schema of one parameter of one operation.
fn parameter(doc: &mut Value, path: &str, method: &str, name: &str, schema: Value) {
    let pointer = format!("/paths/{}/{method}/parameters", path.replace('/', "~1"));
    let parameters = doc
        .pointer_mut(&pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"));
    let parameter = parameters
        .iter_mut()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter `{name}`"));
    parameter["schema"] = schema;
}

/// Adds `extra`'s members to the object at `pointer`.
fn merge(doc: &mut Value, pointer: &str, extra: Value) {
    let target = doc
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("the OpenAPI document has no object at {pointer}"));
    let Value::Object(extra) = extra else {
        panic!("merge takes an object")
    };
    for (key, value) in extra {
        if let (Some(Value::Array(existing)), Value::Array(more)) = (target.get_mut(&key), &value) {
            for item in more {
                if !existing.contains(item) {
                    existing.push(item.clone());
                }
            }
            continue;
        }
        target.insert(key, value);
    }
}

/// Puts `schema` in place of the object at `pointer`.
fn replace(doc: &mut Value, pointer: &str, schema: Value) {
    let target = doc
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the OpenAPI document has nothing at {pointer}"));
    *target = schema;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`contract`] panics on a constraint whose field or parameter is gone.
    #[test]
    fn every_constraint_finds_its_target() {
        let doc = contract();
        let country = &doc["components"]["schemas"]["NewCheckoutShipTo"]["properties"]["country"];
        assert_eq!(country["pattern"], "^[A-Za-z]{2}$");
    }
}
