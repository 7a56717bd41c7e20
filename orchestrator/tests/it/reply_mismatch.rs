//! A reply that does not match what its saga expects is never applied: a
//! forged `payment.charge` reply of 1 cent, published on the reply exchange
//! as a payment worker publishes its replies, while the real charge is
//! still at the provider, parks the saga instead of completing it.

use std::sync::Arc;
use std::time::Duration;

use saga_protocol::messages::{ChargePayment, Charged, Command, Outcome, StepResult};
use saga_protocol::values::Cents;
use saga_protocol::{Envelope, Step};
use saga_shared::broker::Outgoing;
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_testkit as testing;
use saga_testkit::metrics::scrape;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{order, System};

const PATIENCE: Duration = Duration::from_secs(20);

/// The mismatch counter of `step` and `field`, there from the start at 0.
async fn mismatches(system: &System, step: &str, field: &str) -> f64 {
    let series = format!(r#"checkout_reply_mismatches_total{{step="{step}",field="{field}"}}"#);
    let metrics = scrape(&system.base_url).await;
    metrics
        .value(&series)
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_charge_reply_of_another_amount_parks_the_saga_and_is_counted() {
    // Every service on its own broker user, replies checked for their
    // sender: the forger holds the payment worker's own credentials.
    let system = System::start_with_broker_users().await;
    let before = mismatches(&system, "payment.charge", "amount_cents").await;
    // 5 x 2,000 + 7.25 % tax; the provider answers after 4 s.
    let id = system
        .place(&order(&[("TSHIRT", 5)], "sim_slow_4000"))
        .await;
    let saga: Uuid = id.parse().unwrap();
    testing::eventually("the charge at the provider", PATIENCE, || async {
        let step: Option<String> =
            sqlx::query_scalar("SELECT current_step FROM sagas WHERE id = $1")
                .bind(saga)
                .fetch_one(&system.orchestrator_db.pool)
                .await
                .unwrap();
        (step.as_deref() == Some("payment.charge")).then_some(())
    })
    .await;

    // As the payment worker's user (a leaked password, a buggy worker): it
    // answers attempt 1 of the charge, with the routing, type and ids a
    // payment worker's reply has.
    let stop = CancellationToken::new();
    let payment = saga_shared::broker_users::Role::Worker(saga_protocol::WorkerKind::Payment);
    let broker = Arc::new(system.connect_broker_as(payment, "forger", &stop).await);
    let command = Envelope::command(
        saga,
        1,
        Command::Charge(ChargePayment {
            amount_cents: Cents::new(10_725),
            currency: "USD".parse().unwrap(),
            payment_method: "sim_slow_4000".into(),
            customer_id: "customer-1".parse().unwrap(),
        }),
    );
    let forged = command.reply(Outcome::Ok(StepResult::Charged(Charged {
        payment_id: Uuid::new_v4(),
        amount_cents: Cents::new(1),
        currency: Some("USD".parse().unwrap()),
    })));
    broker
        .publish(&Outgoing {
            exchange: broker.topology().reply_exchange(),
            routing_key: REPLY_ROUTING_KEY.to_owned(),
            body: forged.encode(),
            message_id: forged.message_id,
            saga_id: saga,
            message_type: Step::Charge.reply_type(),
            traceparent: saga_shared::traceparent::for_saga(saga),
        })
        .await
        .unwrap();

    system
        .wait_status(std::slice::from_ref(&id), "suspended", PATIENCE)
        .await;
    let view = system.saga_view(&id).await;
    assert_eq!(
        view["last_error"], "payment.charge reply: amount_cents expected 10725, got 1",
        "{view}"
    );
    // The client never saw it complete.
    let (_, checkout) = system.get(&format!("/v1/checkouts/{id}")).await;
    assert_eq!(checkout["status"], "pending", "{checkout}");
    assert_eq!(
        mismatches(&system, "payment.charge", "amount_cents").await,
        before + 1.0
    );

    // The real charge's answer comes late and changes nothing; a support
    // retry asks the worker, whose books have the true charge.
    testing::eventually("the real charge recorded", PATIENCE, || async {
        let charged: Option<i64> = sqlx::query_scalar(
            "SELECT amount_cents FROM payments WHERE saga_id = $1 AND status = 'charged'",
        )
        .bind(saga)
        .fetch_optional(&system.payment_db.pool)
        .await
        .unwrap();
        charged.map(|amount| assert_eq!(amount, 10_725))
    })
    .await;
    assert_eq!(system.saga_status(&id).await, "suspended");
    system
        .retry(&id, "forged reply refused; ask the worker")
        .await;
    let done = system.wait_final(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["total_cents"], 10_725);
    stop.cancel();
    system.stop().await;
}
