//! Replies come only from the worker that owns the step: each service
//! connects as a RabbitMQ user of its own with the least permissions, every
//! message carries the AMQP `user_id` RabbitMQ checked, and the orchestrator
//! dead-letters a reply from any other user as "unexpected sender".

use std::time::Duration;

use saga_protocol::messages::{ChargePayment, Charged, Command, Outcome, StepResult};
use saga_protocol::values::Cents;
use saga_protocol::{Envelope, WorkerKind};
use saga_shared::broker::{BrokerError, Outgoing};
use saga_shared::broker_users::Role;
use saga_shared::topology::{Topology, REPLY_ROUTING_KEY};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{order, System};

/// A well-formed `payment.charge` reply saying `amount_cents` was charged.
fn forged_charge(topology: &Topology, saga_id: Uuid, amount_cents: i64) -> Outgoing {
    let reply = Envelope::command(
        saga_id,
        1,
        Command::Charge(ChargePayment {
            amount_cents: Cents::new(amount_cents),
            currency: "EUR".parse().unwrap(),
            payment_method: "sim_approve".into(),
            customer_id: "c".parse().unwrap(),
        }),
    )
    .reply(Outcome::Ok(StepResult::Charged(Charged {
        payment_id: Uuid::new_v4(),
        amount_cents: Cents::new(amount_cents),
        currency: Some("EUR".parse().unwrap()),
    })));
    Outgoing {
        exchange: topology.reply_exchange(),
        routing_key: REPLY_ROUTING_KEY.to_owned(),
        body: reply.encode(),
        message_id: Uuid::new_v4(),
        saga_id,
        message_type: "payment.charge.reply".to_owned(),
        traceparent: saga_shared::traceparent::for_saga(saga_id),
    }
}

#[tokio::test]
async fn a_reply_from_another_user_than_the_steps_worker_is_dead_lettered_never_applied() {
    let system = System::start_with_broker_users().await;
    // Every service on its own least-privilege user still serves.
    let done = system.checkout(&order(&[("BOOK", 1)], "sim_approve")).await;
    assert_eq!(done["status"], "completed", "{done}");

    // The charge is still at the provider when the forged reply comes.
    let id = system.place(&order(&[("BOOK", 1)], "sim_slow_4000")).await;
    let saga: Uuid = id.parse().unwrap();
    let stop = CancellationToken::new();
    let inventory = system
        .connect_broker_as(Role::Worker(WorkerKind::Inventory), "forger", &stop)
        .await;
    inventory
        .publish(&forged_charge(inventory.topology(), saga, 1))
        .await
        .expect("the inventory user may write replies");

    let dead = system
        .dead_letters_for(saga, Duration::from_secs(20))
        .await
        .remove(0);
    let reason = dead["reason"].as_str().unwrap();
    let inventory_user = system
        .broker_users()
        .unwrap()
        .user(Role::Worker(WorkerKind::Inventory));
    assert!(reason.contains("unexpected sender"), "{dead:#}");
    assert!(reason.contains(&inventory_user), "{dead:#}");

    // The real charge completes it, for the real total.
    let view = system.wait_final(&id).await;
    assert_eq!(view["status"], "completed", "{view}");
    let payments = system.payments().await;
    assert!(
        payments.iter().all(|(_, amount, _)| *amount > 1),
        "{payments:?}"
    );
    stop.cancel();
    inventory.close().await;
    system.stop().await;
}

#[tokio::test]
async fn rabbitmq_refuses_a_forged_sender_and_a_worker_publishing_commands() {
    let system = System::start_with_broker_users().await;
    let stop = CancellationToken::new();
    let inventory = system
        .connect_broker_as(Role::Worker(WorkerKind::Inventory), "forger", &stop)
        .await;
    let topology = inventory.topology().clone();
    let payment_user = system
        .broker_users()
        .unwrap()
        .user(Role::Worker(WorkerKind::Payment));

    // Posing as the payment worker: RabbitMQ checks user_id against the
    // connection's user and closes the channel.
    let channel = inventory.channel().await.unwrap();
    let forged = forged_charge(&topology, Uuid::new_v4(), 1);
    let published = channel
        .basic_publish(
            topology.reply_exchange().as_str().into(),
            REPLY_ROUTING_KEY.into(),
            Default::default(),
            &forged.body,
            lapin::BasicProperties::default().with_user_id(payment_user.as_str().into()),
        )
        .await;
    // The refusal comes back asynchronously: the channel is closed by it.
    let refused = match published {
        Err(error) => Some(error.to_string()),
        Ok(_) => {
            saga_testkit::eventually(
                "the channel closed by the broker",
                Duration::from_secs(10),
                || async { (!channel.status().connected()).then_some(()) },
            )
            .await;
            None
        }
    };
    if let Some(error) = refused {
        assert!(
            error.contains("PRECONDITION_FAILED") || error.contains("user_id"),
            "{error}"
        );
    }

    // A worker may not publish a command.
    let command = Outgoing {
        exchange: topology.command_exchange(),
        routing_key: "payment.charge".to_owned(),
        ..forged_charge(&topology, Uuid::new_v4(), 1)
    };
    let error = inventory
        .publish(&command)
        .await
        .expect_err("a worker's user may not write commands");
    assert!(
        matches!(&error, BrokerError::Amqp(e) if e.to_string().contains("ACCESS_REFUSED")),
        "{error}"
    );
    stop.cancel();
    inventory.close().await;
    system.stop().await;
}
