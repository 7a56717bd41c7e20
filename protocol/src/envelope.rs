//! The versioned JSON envelope every message travels in.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::{Command, Outcome, ReplyPayload, Step};

pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<P> {
    /// Changes only with a breaking change; a reader dead-letters a version
    /// it does not know.
    #[schemars(extend("const" = ENVELOPE_VERSION))]
    pub version: u32,
    /// Unique per message: a redelivery has the same one, a new attempt a
    /// new one. Also the AMQP `message_id` property.
    pub message_id: Uuid,
    /// The checkout this message belongs to. Also the AMQP `correlation_id`
    /// property.
    pub saga_id: Uuid,
    pub step: Step,
    /// Which try of the step this is, from 1; a reply carries its command's.
    pub attempt: u32,
    /// `inventory.reserve` for a command, `inventory.reserve.reply` for its reply.
    #[serde(rename = "type")]
    pub message_type: String,
    pub sent_at: DateTime<Utc>,
    /// The command or reply, as the schema of its `type` describes it.
    pub payload: P,
}

/// Why a message body is not a message we can act on. Each of these sends
/// the message to the dead-letter queue with this text in `x-error`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("body is not a JSON envelope: {0}")]
    NotJson(String),
    #[error("unsupported envelope version {0} (this build reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("payload of `{message_type}` is invalid: {error}")]
    BadPayload { message_type: String, error: String },
}

/// Only the version, read before anything else so that a future envelope
/// with other fields is reported as a version problem, not a parse error.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

fn decode_raw(body: &[u8]) -> Result<Envelope<serde_json::Value>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotUtf8)?;
    let probe: VersionProbe =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if probe.version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(probe.version));
    }
    serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))
}

impl Envelope<Command> {
    pub fn command(saga_id: Uuid, attempt: u32, command: Command) -> Self {
        let step = command.step();
        Envelope {
            version: ENVELOPE_VERSION,
            message_id: Uuid::now_v7(),
            saga_id,
            step,
            attempt,
            message_type: step.routing_key().to_owned(),
            sent_at: Utc::now(),
            payload: command,
        }
    }

    /// The reply to this command, for the same saga, step and attempt.
    pub fn reply(&self, outcome: Outcome) -> Envelope<Outcome> {
        Envelope {
            version: ENVELOPE_VERSION,
            message_id: Uuid::now_v7(),
            saga_id: self.saga_id,
            step: self.step,
            attempt: self.attempt,
            message_type: self.step.reply_type(),
            sent_at: Utc::now(),
            payload: outcome,
        }
    }
}

/// What an envelope carries: a command or a reply. Its `type` follows
/// from the step, and its JSON is a wire form that is read first and then
/// typed by the step, so that every payload is encoded and decoded (and a
/// body that is no such message refused) the same way.
pub trait Payload: Sized {
    type Wire: Serialize + DeserializeOwned;

    /// The envelope's `type` for a payload of `step`.
    fn message_type(step: Step) -> String;

    fn to_wire(&self) -> Self::Wire;

    fn from_wire(step: Step, wire: Self::Wire) -> serde_json::Result<Self>;
}

impl Payload for Command {
    type Wire = serde_json::Value;

    fn message_type(step: Step) -> String {
        step.routing_key().to_owned()
    }

    fn to_wire(&self) -> serde_json::Value {
        self.to_payload()
    }

    fn from_wire(step: Step, wire: serde_json::Value) -> serde_json::Result<Command> {
        Command::from_payload(step, wire)
    }
}

impl Payload for Outcome {
    type Wire = ReplyPayload;

    fn message_type(step: Step) -> String {
        step.reply_type()
    }

    fn to_wire(&self) -> ReplyPayload {
        self.to_payload()
    }

    fn from_wire(step: Step, wire: ReplyPayload) -> serde_json::Result<Outcome> {
        Outcome::from_payload(step, wire)
    }
}

impl<P: Payload> Envelope<P> {
    pub fn encode(&self) -> Vec<u8> {
        encode_with(self, self.payload.to_wire())
    }

    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let raw = decode_raw(body)?;
        if raw.message_type != P::message_type(raw.step) {
            return Err(DecodeError::UnknownType(raw.message_type));
        }
        let bad = |e: serde_json::Error| DecodeError::BadPayload {
            message_type: raw.message_type.clone(),
            error: e.to_string(),
        };
        let wire: P::Wire = serde_json::from_value(raw.payload.clone()).map_err(bad)?;
        let payload = P::from_wire(raw.step, wire).map_err(bad)?;
        Ok(with_payload(raw, payload))
    }
}

fn with_payload<P>(raw: Envelope<serde_json::Value>, payload: P) -> Envelope<P> {
    Envelope {
        version: raw.version,
        message_id: raw.message_id,
        saga_id: raw.saga_id,
        step: raw.step,
        attempt: raw.attempt,
        message_type: raw.message_type,
        sent_at: raw.sent_at,
        payload,
    }
}

fn encode_with<P, W: Serialize>(envelope: &Envelope<P>, wire: W) -> Vec<u8> {
    let wire = Envelope {
        version: envelope.version,
        message_id: envelope.message_id,
        saga_id: envelope.saga_id,
        step: envelope.step,
        attempt: envelope.attempt,
        message_type: envelope.message_type.clone(),
        sent_at: envelope.sent_at,
        payload: wire,
    };
    serde_json::to_vec(&wire).expect("envelopes always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{
        CalculateTax, ChargePayment, Charged, LineRequest, PricedLine, RefundPayment, Refunded,
        ReleaseStock, Released, ReserveStock, Reserved, ShipTo, StepResult,
    };
    use crate::values::{Cents, Quantity};

    #[test]
    fn command_round_trips() {
        let cmd = Envelope::command(Uuid::new_v4(), 2, Command::Release(ReleaseStock {}));
        let back = Envelope::<Command>::decode(&cmd.encode()).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn reply_round_trips() {
        let cmd = Envelope::command(Uuid::new_v4(), 1, Command::Release(ReleaseStock {}));
        let mut reply = cmd.reply(Outcome::Ok(StepResult::Charged(Charged {
            payment_id: Uuid::new_v4(),
            amount_cents: Cents::new(10),
            currency: None,
        })));
        // A charge result on a release reply is a contract violation.
        assert!(matches!(
            Envelope::<Outcome>::decode(&reply.encode()),
            Err(DecodeError::BadPayload { .. })
        ));
        reply.payload = Outcome::Transient { error: "x".into() };
        assert_eq!(Envelope::<Outcome>::decode(&reply.encode()).unwrap(), reply);
    }

    #[test]
    fn poison_bodies_say_why() {
        assert_eq!(
            Envelope::<Command>::decode(&[0xff, 0xfe]),
            Err(DecodeError::NotUtf8)
        );
        assert!(matches!(
            Envelope::<Command>::decode(b"nope"),
            Err(DecodeError::NotJson(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(
            &Envelope::command(Uuid::new_v4(), 1, Command::Release(ReleaseStock {})).encode(),
        )
        .unwrap();
        v["version"] = 9.into();
        assert_eq!(
            Envelope::<Command>::decode(v.to_string().as_bytes()),
            Err(DecodeError::UnsupportedVersion(9))
        );
        v["version"] = 1.into();
        v["type"] = "inventory.explode".into();
        assert!(matches!(
            Envelope::<Command>::decode(v.to_string().as_bytes()),
            Err(DecodeError::UnknownType(_))
        ));
    }

    #[test]
    fn a_command_holding_an_invalid_value_does_not_decode() {
        let sent = Envelope::command(
            Uuid::new_v4(),
            1,
            Command::Reserve(ReserveStock {
                lines: vec![LineRequest::parse("BOOK", 1).unwrap()],
            }),
        );
        let body: serde_json::Value = serde_json::from_slice(&sent.encode()).unwrap();
        for (field, value, named) in [
            (
                "quantity",
                serde_json::json!(0),
                "quantity must be at least 1",
            ),
            ("sku", serde_json::json!(" "), "sku must not be blank"),
        ] {
            let mut body = body.clone();
            body["payload"]["lines"][0][field] = value;
            match Envelope::<Command>::decode(body.to_string().as_bytes()) {
                Err(DecodeError::BadPayload { error, .. }) => {
                    assert!(error.contains(named), "{field}: {error}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    fn line() -> PricedLine {
        PricedLine {
            sku: "BOOK".parse().unwrap(),
            quantity: Quantity::new(2).unwrap(),
            unit_price_cents: Cents::new(1250),
            tax_category: "standard".into(),
        }
    }

    /// `body` with a field no reader knows added to the object at `path`.
    fn with_unknown_field(body: &[u8], path: &[&str]) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let mut target = &mut value;
        for key in path {
            target = match key.parse::<usize>() {
                Ok(index) => &mut target[index],
                Err(_) => &mut target[*key],
            };
        }
        target
            .as_object_mut()
            .unwrap_or_else(|| panic!("{path:?} is not an object"))
            .insert(
                "added_later".into(),
                serde_json::json!({"any": ["shape", 1]}),
            );
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn commands_with_fields_a_reader_does_not_know_read_the_same() {
        let commands = [
            (
                Command::Reserve(ReserveStock {
                    lines: vec![LineRequest::parse("BOOK", 1).unwrap()],
                }),
                vec!["payload", "lines", "0"],
            ),
            (
                Command::CalculateTax(CalculateTax {
                    ship_to: ShipTo {
                        country: "US".into(),
                        region: "CA".into(),
                    },
                    currency: "USD".parse().unwrap(),
                    lines: vec![line()],
                }),
                vec!["payload", "ship_to"],
            ),
            (
                Command::Charge(ChargePayment {
                    amount_cents: Cents::new(2700),
                    currency: "USD".parse().unwrap(),
                    payment_method: "sim_approve".into(),
                    customer_id: "c".parse().unwrap(),
                }),
                vec!["payload"],
            ),
            (Command::Release(ReleaseStock {}), vec!["payload"]),
            (Command::Refund(RefundPayment {}), vec!["payload"]),
        ];
        for (command, nested) in commands {
            let sent = Envelope::command(Uuid::new_v4(), 3, command);
            for path in [&[][..], &["payload"][..], &nested[..]] {
                let body = with_unknown_field(&sent.encode(), path);
                assert_eq!(
                    Envelope::<Command>::decode(&body),
                    Ok(sent.clone()),
                    "an unknown field at {path:?} of {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    #[test]
    fn replies_with_fields_a_reader_does_not_know_read_the_same() {
        let command = Envelope::command(
            Uuid::new_v4(),
            1,
            Command::Reserve(ReserveStock { lines: vec![] }),
        );
        let reserved = command.reply(Outcome::Ok(StepResult::Reserved(Reserved {
            currency: "USD".parse().unwrap(),
            lines: vec![line()],
        })));
        for path in [
            &[][..],
            &["payload"],
            &["payload", "result"],
            &["payload", "result", "lines", "0"],
        ] {
            let body = with_unknown_field(&reserved.encode(), path);
            assert_eq!(
                Envelope::<Outcome>::decode(&body),
                Ok(reserved.clone()),
                "an unknown field at {path:?}"
            );
        }
        for outcome in [
            Outcome::rejected("out_of_stock", "BOOK: 0 left"),
            Outcome::Transient {
                error: "database unreachable".into(),
            },
        ] {
            let reply = command.reply(outcome);
            let body = with_unknown_field(&reply.encode(), &["payload"]);
            assert_eq!(Envelope::<Outcome>::decode(&body), Ok(reply));
        }
    }

    #[test]
    fn ignoring_unknown_fields_still_tells_results_and_outcomes_apart() {
        let release = Envelope::command(Uuid::new_v4(), 1, Command::Release(ReleaseStock {}));
        let decode = |payload: serde_json::Value| {
            let mut body: serde_json::Value = serde_json::from_slice(
                &release
                    .reply(Outcome::Ok(StepResult::Released(Released {
                        released: true,
                    })))
                    .encode(),
            )
            .unwrap();
            body["payload"] = payload;
            Envelope::<Outcome>::decode(body.to_string().as_bytes())
        };
        // Another step's result lacks this one's fields: still a violation,
        // not a result with defaults.
        let refunded = StepResult::Refunded(Refunded {
            refunded_cents: Cents::new(5),
        });
        assert!(matches!(
            decode(serde_json::json!({"outcome": "ok", "result": refunded.to_value()})),
            Err(DecodeError::BadPayload { .. })
        ));
        assert!(matches!(
            decode(serde_json::json!({"outcome": "ok"})),
            Err(DecodeError::BadPayload { .. })
        ));
        assert!(matches!(
            decode(serde_json::json!({"outcome": "maybe", "error": "x"})),
            Err(DecodeError::BadPayload { .. })
        ));
        // The fields of one outcome do not make another: this is a
        // transient reply with a stray `reason`, not a rejection.
        assert_eq!(
            decode(serde_json::json!({"outcome": "transient", "error": "x", "reason": "y"}))
                .unwrap()
                .payload,
            Outcome::Transient { error: "x".into() }
        );
    }

    #[test]
    fn an_unknown_version_is_refused_whatever_fields_it_has() {
        let sent = Envelope::command(Uuid::new_v4(), 1, Command::Release(ReleaseStock {}));
        let mut body: serde_json::Value =
            serde_json::from_slice(&with_unknown_field(&sent.encode(), &[])).unwrap();
        body["version"] = 2.into();
        assert_eq!(
            Envelope::<Command>::decode(body.to_string().as_bytes()),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let reply = sent.reply(Outcome::Transient { error: "x".into() });
        let mut body: serde_json::Value = serde_json::from_slice(&reply.encode()).unwrap();
        body["version"] = 2.into();
        body.as_object_mut().unwrap().remove("payload");
        assert_eq!(
            Envelope::<Outcome>::decode(body.to_string().as_bytes()),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }
}
