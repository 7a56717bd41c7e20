//! Payments: charged at most once per saga, refunded at most once, and a
//! refund that comes first leaves nothing for a late charge to take.

use saga_shared::messages::{
    reason, ChargePayment, Charged, Command, Outcome, RefundPayment, Refunded, StepResult,
};
use saga_shared::testing::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;
use workers::payment::{outage, Payment, Simulator, MIGRATOR};

use crate::{handle, migrated, ok, rejected};

fn simulated() -> Payment {
    Payment::new(Simulator)
}

async fn payments() -> TestDatabase {
    migrated("payment", &MIGRATOR).await
}

fn charge(amount_cents: i64, method: &str) -> Command {
    Command::Charge(ChargePayment {
        amount_cents,
        currency: "USD".into(),
        payment_method: method.into(),
        customer_id: "customer-1".into(),
    })
}

fn refund() -> Command {
    Command::Refund(RefundPayment {})
}

fn charged(outcome: Outcome) -> Charged {
    match ok(outcome) {
        StepResult::Charged(charged) => charged,
        other => panic!("expected a charge, got {other:?}"),
    }
}

fn refunded(outcome: Outcome) -> i64 {
    match ok(outcome) {
        StepResult::Refunded(Refunded { refunded_cents }) => refunded_cents,
        other => panic!("expected a refund, got {other:?}"),
    }
}

fn transient(outcome: Outcome) -> String {
    match outcome {
        Outcome::Transient { error } => error,
        other => panic!("expected transient, got {other:?}"),
    }
}

/// (status, amount_cents, refunded_cents, transient_failures) of a saga's payment.
async fn payment_row(pool: &PgPool, saga: Uuid) -> (String, i64, i64, i32) {
    sqlx::query_as(
        "SELECT status, amount_cents, refunded_cents, transient_failures
         FROM payments WHERE saga_id = $1",
    )
    .bind(saga)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn sim_approve_charges_once_and_a_retry_replies_the_same_charge() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();

    let first = charged(handle(&payment, &db.pool, saga, charge(2_499, "sim_approve")).await);
    let again = charged(handle(&payment, &db.pool, saga, charge(2_499, "sim_approve")).await);

    assert_eq!(first.amount_cents, 2_499);
    assert_eq!(again, first, "same payment id and amount");
    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("charged".into(), 2_499, 0, 0)
    );
}

#[tokio::test]
async fn sim_decline_is_refused_and_stays_refused() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();

    let first = rejected(handle(&payment, &db.pool, saga, charge(100, "sim_decline")).await);
    let again = rejected(handle(&payment, &db.pool, saga, charge(100, "sim_decline")).await);

    assert_eq!(first.0, reason::PAYMENT_DECLINED);
    assert_eq!(again, first);
    assert_eq!(payment_row(&db.pool, saga).await.0, "declined");
    assert_eq!(
        refunded(handle(&payment, &db.pool, saga, refund()).await),
        0,
        "nothing to refund"
    );
}

#[tokio::test]
async fn an_unknown_payment_method_is_refused() {
    let db = payments().await;

    let (why, detail) = rejected(
        handle(
            &simulated(),
            &db.pool,
            Uuid::new_v4(),
            charge(100, "bitcoin"),
        )
        .await,
    );

    assert_eq!(why, reason::INVALID_PAYMENT_METHOD);
    assert!(detail.contains("bitcoin"), "{detail}");
}

#[tokio::test]
async fn sim_transient_2_fails_twice_then_charges_once() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();

    transient(handle(&payment, &db.pool, saga, charge(500, "sim_transient_2")).await);
    transient(handle(&payment, &db.pool, saga, charge(500, "sim_transient_2")).await);
    let third = charged(handle(&payment, &db.pool, saga, charge(500, "sim_transient_2")).await);
    let fourth = charged(handle(&payment, &db.pool, saga, charge(500, "sim_transient_2")).await);

    assert_eq!(fourth, third);
    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("charged".into(), 500, 0, 2)
    );
}

#[tokio::test]
async fn sim_slow_answers_after_its_delay() {
    let db = payments().await;
    let started = std::time::Instant::now();

    charged(
        handle(
            &simulated(),
            &db.pool,
            Uuid::new_v4(),
            charge(100, "sim_slow_150"),
        )
        .await,
    );

    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn refund_returns_the_charge_once() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();
    charged(handle(&payment, &db.pool, saga, charge(1_234, "sim_approve")).await);

    assert_eq!(
        refunded(handle(&payment, &db.pool, saga, refund()).await),
        1_234
    );
    // A retried refund reports the refund already made and moves nothing.
    assert_eq!(
        refunded(handle(&payment, &db.pool, saga, refund()).await),
        1_234
    );
    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("refunded".into(), 1_234, 1_234, 0)
    );

    let (why, _) = rejected(handle(&payment, &db.pool, saga, charge(1_234, "sim_approve")).await);
    assert_eq!(
        why,
        reason::ALREADY_COMPENSATED,
        "a refunded payment is never charged again"
    );
}

#[tokio::test]
async fn refund_before_charge_leaves_nothing_for_the_late_charge() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();

    assert_eq!(
        refunded(handle(&payment, &db.pool, saga, refund()).await),
        0
    );
    let (why, _) = rejected(handle(&payment, &db.pool, saga, charge(900, "sim_approve")).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("refunded".into(), 0, 0, 0)
    );
}

#[tokio::test]
async fn refund_after_only_failed_attempts_closes_the_payment() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();
    transient(handle(&payment, &db.pool, saga, charge(700, "sim_transient_1")).await);

    assert_eq!(
        refunded(handle(&payment, &db.pool, saga, refund()).await),
        0
    );
    let (why, _) = rejected(handle(&payment, &db.pool, saga, charge(700, "sim_transient_1")).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_eq!(payment_row(&db.pool, saga).await.1, 0, "nothing charged");
}

#[tokio::test]
async fn the_outage_switch_makes_charges_and_refunds_transient() {
    let db = payments().await;
    let payment = simulated();
    let refunded_saga = Uuid::new_v4();
    charged(
        handle(
            &payment,
            &db.pool,
            refunded_saga,
            charge(300, "sim_approve"),
        )
        .await,
    );
    let mut conn = db.pool.acquire().await.unwrap();

    outage::set(&mut conn, true).await.unwrap();
    assert!(outage::is_on(&mut conn).await.unwrap());
    let saga = Uuid::new_v4();
    let error = transient(handle(&payment, &db.pool, saga, charge(300, "sim_approve")).await);
    assert_eq!(error, "payment provider outage");
    transient(handle(&payment, &db.pool, refunded_saga, refund()).await);
    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("pending".into(), 0, 0, 0)
    );
    assert_eq!(payment_row(&db.pool, refunded_saga).await.0, "charged");

    outage::set(&mut conn, false).await.unwrap();
    charged(handle(&payment, &db.pool, saga, charge(300, "sim_approve")).await);
    assert_eq!(
        refunded(handle(&payment, &db.pool, refunded_saga, refund()).await),
        300
    );
}

#[tokio::test]
async fn sim_down_is_always_transient() {
    let db = payments().await;
    let saga = Uuid::new_v4();
    let payment = simulated();

    for _ in 0..3 {
        transient(handle(&payment, &db.pool, saga, charge(100, "sim_down")).await);
    }

    assert_eq!(
        payment_row(&db.pool, saga).await,
        ("pending".into(), 0, 0, 3)
    );
}
