//! Poison messages on every queue the system consumes: each is
//! dead-lettered with its reason, listed by the support API, and the
//! queues behind them keep flowing.

use std::sync::Arc;
use std::time::Duration;

use saga_protocol::messages::{ChargePayment, Command, Outcome};
use saga_protocol::values::Cents;
use saga_protocol::Envelope;
use saga_shared::broker::Outgoing;
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_testkit as testing;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{order, System};

/// Each poison body, and what its dead letter's reason must say.
fn poisons() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let command = Envelope::command(
        Uuid::new_v4(),
        1,
        Command::Charge(ChargePayment {
            amount_cents: Cents::new(100),
            currency: "USD".parse().unwrap(),
            payment_method: "sim_approve".into(),
            customer_id: "c".parse().unwrap(),
        }),
    );
    let valid: Value = serde_json::from_slice(&command.encode()).unwrap();
    let with = |field: &str, value: Value| {
        let mut v = valid.clone();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let mut missing = valid.clone();
    missing["payload"]
        .as_object_mut()
        .unwrap()
        .remove("amount_cents");
    let garbage: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    vec![
        ("not json", b"{not json".to_vec(), "not a JSON envelope"),
        ("not utf-8", vec![0xff, 0xfe, 0x00, 0x41], "not UTF-8"),
        (
            "unknown type",
            with("type", "payment.teleport".into()),
            "unknown message type",
        ),
        (
            "unknown version",
            with("version", 99.into()),
            "unsupported envelope version 99",
        ),
        (
            "missing field",
            serde_json::to_vec(&missing).unwrap(),
            "amount_cents",
        ),
        ("1 MiB of garbage", garbage, "not"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_any_queue_is_dead_lettered_listed_and_the_queues_flow() {
    let system = System::start().await;
    let stop = CancellationToken::new();
    let broker = Arc::new(system.connect_broker("poisoner", &stop).await);
    let topology = broker.topology().clone();
    let poison_saga = Uuid::new_v4();
    let publish = |exchange: String, routing_key: &str, body: Vec<u8>| Outgoing {
        exchange,
        routing_key: routing_key.to_owned(),
        body,
        message_id: Uuid::new_v4(),
        saga_id: poison_saga,
        message_type: "poison".into(),
        traceparent: saga_shared::traceparent::for_saga(poison_saga),
    };
    let mut expected = Vec::new();
    for (what, body, reason) in poisons() {
        // To a worker's command queue, and to the orchestrator's replies.
        broker
            .publish(&publish(
                topology.command_exchange(),
                "payment.charge",
                body.clone(),
            ))
            .await
            .unwrap();
        broker
            .publish(&publish(topology.reply_exchange(), REPLY_ROUTING_KEY, body))
            .await
            .unwrap();
        expected.push((what, reason));
        expected.push((what, reason));
    }
    // A well-formed reply for a saga that does not exist.
    let stray = Envelope::command(
        poison_saga,
        1,
        Command::Refund(saga_protocol::messages::RefundPayment {}),
    )
    .reply(Outcome::Transient { error: "x".into() })
    .encode();
    broker
        .publish(&publish(
            topology.reply_exchange(),
            REPLY_ROUTING_KEY,
            stray,
        ))
        .await
        .unwrap();
    expected.push(("unknown saga", "unknown saga"));

    // The queues go on: a checkout placed behind the poison completes.
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed", "{done}");

    let listed: Vec<Value> = testing::eventually(
        "every poison message listed as a dead letter",
        Duration::from_secs(30),
        || async {
            let rows = system.dead_letters(&poison_saga.to_string()).await;
            (rows.len() == expected.len()).then_some(rows)
        },
    )
    .await;
    for (what, reason) in &expected {
        let matching = listed
            .iter()
            .filter(|d| d["reason"].as_str().unwrap().contains(reason))
            .count();
        assert!(
            matching >= 1,
            "no dead letter for {what} saying `{reason}`: {listed:#?}"
        );
    }
    let big = listed
        .iter()
        .find(|d| d["body_bytes"] == 1 << 20)
        .expect("the 1 MiB message is listed");
    assert!(big["body_preview"].as_str().unwrap().len() <= 8 * 1024);
    assert!(listed
        .iter()
        .all(|d| d["saga_id"] == poison_saga.to_string()));
    broker.close().await;
    system.stop().await;
}

/// Data the database can never accept is either made storable (the texts of
/// a reply or a dead letter: control characters replaced) or dead-lettered
/// with its reason (a stored saga this build cannot read), and never held
/// and retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_the_database_never_accepts_is_stored_printable_or_dead_lettered() {
    let system = System::start().await;
    let stop = CancellationToken::new();
    let broker = system.connect_broker("poisoner", &stop).await;
    let topology = broker.topology().clone();
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    let done_id: Uuid = done["checkout_id"].as_str().unwrap().parse().unwrap();

    // A late reply whose error holds a NUL: recorded in the timeline, NUL replaced.
    let late = Envelope::command(
        done_id,
        1,
        Command::Refund(saga_protocol::messages::RefundPayment {}),
    )
    .reply(Outcome::Transient {
        error: "provider said \u{0} no".into(),
    });
    let reply = |saga_id: Uuid, body: Vec<u8>, message_type: &str| Outgoing {
        exchange: topology.reply_exchange(),
        routing_key: REPLY_ROUTING_KEY.to_owned(),
        body,
        message_id: Uuid::new_v4(),
        saga_id,
        message_type: message_type.to_owned(),
        traceparent: saga_shared::traceparent::for_saga(saga_id),
    };
    broker
        .publish(&reply(done_id, late.encode(), "payment.refund.reply"))
        .await
        .unwrap();
    testing::eventually(
        "the late reply in the timeline, its NUL replaced",
        Duration::from_secs(20),
        || async {
            system
                .timeline(&done_id.to_string())
                .await
                .iter()
                .any(|e| {
                    e["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("provider said \u{FFFD} no"))
                })
                .then_some(())
        },
    )
    .await;

    // A saga whose stored state this build cannot read: its replies are
    // dead-lettered with the reason, and the reply queue keeps flowing.
    let corrupt = system.place(&order(&[("BOOK", 1)], "sim_slow_60000")).await;
    let corrupt_id: Uuid = corrupt.parse().unwrap();
    // As every writer of a saga does, it moves the version on.
    sqlx::query(
        "UPDATE sagas SET state = '{\"written\": \"by a future build\"}', version = version + 1
         WHERE id = $1",
    )
    .bind(corrupt_id)
    .execute(&system.orchestrator_db.pool)
    .await
    .unwrap();
    let stray = Envelope::command(
        corrupt_id,
        1,
        Command::Refund(saga_protocol::messages::RefundPayment {}),
    )
    .reply(Outcome::Transient { error: "x".into() });
    broker
        .publish(&reply(corrupt_id, stray.encode(), "payment.refund.reply"))
        .await
        .unwrap();

    // A dead letter whose type and reason hold control characters.
    let odd_saga = Uuid::new_v4();
    let mut odd = reply(odd_saga, b"{}".to_vec(), "odd\u{0}type");
    odd.exchange = topology.dead_letter_exchange();
    broker.publish(&odd).await.unwrap();

    // A reply whose type holds a NUL: refused as an unknown type, and that
    // reason, quoting the type, is stored too.
    let typed_saga = Uuid::new_v4();
    let mut typed: Value = serde_json::from_slice(&stray.encode()).unwrap();
    typed["type"] = "payment.\u{0}refund.reply".into();
    typed["saga_id"] = typed_saga.to_string().into();
    broker
        .publish(&reply(
            typed_saga,
            serde_json::to_vec(&typed).unwrap(),
            "payment.refund.reply",
        ))
        .await
        .unwrap();

    let after = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(after["status"], "completed", "{after}");

    for (saga, says) in [
        (corrupt_id, "does not parse"),
        (odd_saga, "unknown"),
        (typed_saga, "unknown message type"),
    ] {
        let listed: Value = system
            .dead_letters_for(saga, Duration::from_secs(20))
            .await
            .remove(0);
        assert!(
            listed["reason"].as_str().unwrap().contains(says),
            "{listed:#}"
        );
        if saga == odd_saga {
            assert_eq!(listed["message_type"], "odd\u{FFFD}type", "{listed:#}");
        }
    }
    broker.close().await;
    system.stop_without_audit().await;
}
