use super::*;
use saga_protocol::envelope::Envelope;
use saga_protocol::messages::{
    Command, LineRequest, LineTax, Outcome, PricedLine, ShipTo, StepResult,
};
use saga_protocol::values::{Cents, Quantity};
use uuid::Uuid;

/// Enough of JSON Schema for the keywords these schemas use: whether
/// `value` is valid against `schema`, `root` holding the definitions.
fn valid(root: &Value, schema: &Value, value: &Value) -> bool {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/definitions/");
        return valid(root, &root["definitions"][name], value);
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let fits = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("type {other} not expected in these schemas"),
        };
        if !fits {
            return false;
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            return false;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            return false;
        }
    }
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        if value.as_f64().is_some_and(|v| v < minimum) {
            return false;
        }
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        if branches.iter().filter(|b| valid(root, b, value)).count() != 1 {
            return false;
        }
    }
    if let Some(items) = schema.get("items") {
        let all = value.as_array().into_iter().flatten();
        if !all.clone().all(|item| valid(root, items, item)) {
            return false;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        let required = schema.get("required").and_then(Value::as_array);
        if !required
            .into_iter()
            .flatten()
            .all(|name| object.contains_key(name.as_str().unwrap()))
        {
            return false;
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) if !valid(root, property, field) => return false,
                Some(_) => {}
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return false
                }
                None => {}
            }
        }
    }
    true
}

fn priced(sku: &str) -> PricedLine {
    PricedLine {
        sku: sku.parse().unwrap(),
        quantity: Quantity::new(2).unwrap(),
        unit_price_cents: Cents::new(1250),
        tax_category: "standard".into(),
    }
}

fn commands() -> Vec<Command> {
    vec![
        Command::Reserve(ReserveStock {
            lines: vec![LineRequest::parse("BOOK", 2).unwrap()],
        }),
        Command::CalculateTax(CalculateTax {
            ship_to: ShipTo {
                country: "US".into(),
                region: "CA".into(),
            },
            currency: "USD".parse().unwrap(),
            lines: vec![priced("BOOK")],
        }),
        Command::Charge(ChargePayment {
            amount_cents: Cents::new(2700),
            currency: "USD".parse().unwrap(),
            payment_method: "sim_approve".into(),
            customer_id: "c-1".parse().unwrap(),
        }),
        Command::Release(ReleaseStock {}),
        Command::Refund(RefundPayment {}),
    ]
}

fn result(step: Step) -> StepResult {
    match step {
        Step::Reserve => StepResult::Reserved(Reserved {
            currency: "USD".parse().unwrap(),
            lines: vec![priced("BOOK")],
        }),
        Step::CalculateTax => StepResult::TaxCalculated(TaxCalculated {
            lines: vec![LineTax {
                sku: "BOOK".parse().unwrap(),
                rate_bp: 800,
                tax_cents: Cents::new(200),
            }],
            tax_cents: Cents::new(200),
        }),
        Step::Charge => StepResult::Charged(Charged {
            payment_id: Uuid::new_v4(),
            amount_cents: Cents::new(2700),
            currency: Some("USD".parse().unwrap()),
        }),
        Step::Release => StepResult::Released(Released { released: true }),
        Step::Refund => StepResult::Refunded(Refunded {
            refunded_cents: Cents::new(2700),
        }),
    }
}

#[test]
fn every_message_sent_fits_its_published_schemas() {
    let schemas = schemas();
    let envelope = &schemas["envelope"];
    for command in commands() {
        let step = command.step();
        let sent = Envelope::command(Uuid::new_v4(), 1, command);
        let body: Value = serde_json::from_slice(&sent.encode()).unwrap();
        assert!(valid(envelope, envelope, &body), "{body}");
        let schema = &schemas[step.routing_key()];
        assert!(valid(schema, schema, &body["payload"]), "{body}");

        let reply_schema = &schemas[&step.reply_type()];
        for outcome in [
            Outcome::Ok(result(step)),
            Outcome::rejected("out_of_stock", "BOOK: 1 left"),
            Outcome::Transient {
                error: "database unreachable".into(),
            },
        ] {
            let reply: Value = serde_json::from_slice(&sent.reply(outcome).encode()).unwrap();
            assert!(valid(envelope, envelope, &reply), "{reply}");
            assert!(
                valid(reply_schema, reply_schema, &reply["payload"]),
                "{reply}"
            );
        }
    }
}

#[test]
fn a_reply_schema_takes_only_its_own_steps_result() {
    let schemas = schemas();
    let release = &schemas[&Step::Release.reply_type()];
    let charged = Outcome::Ok(result(Step::Charge)).to_payload();
    assert!(!valid(
        release,
        release,
        &serde_json::to_value(charged).unwrap()
    ));
}

#[test]
fn the_asyncapi_document_names_the_whole_topology() {
    let document = asyncapi();
    let text = document.to_string();
    let topology = Topology::new(PREFIX);
    for name in topology.queues().into_iter().chain(topology.exchanges()) {
        assert!(text.contains(&format!("\"{name}\"")), "{name} missing");
    }
    let addresses: Vec<&Value> = document["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| &c["address"])
        .collect();
    for step in Step::ALL {
        assert!(addresses.contains(&&Value::from(step.routing_key())));
    }
    assert!(addresses.contains(&&Value::from(REPLY_ROUTING_KEY)));
}

#[test]
fn files_are_sorted_and_end_with_a_newline() {
    for (name, text) in files() {
        assert!(text.ends_with("}\n"), "{name}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(to_text(&parsed), text, "{name} is not in its stable form");
    }
}
