//! Payments: charged at most once per saga, refunded at most once, and a
//! refund that comes first leaves nothing for a late charge to take. Every
//! command goes through the runtime's two phases (intent, provider call with
//! no connection held, outcome), and the simulated provider keeps a ledger
//! that says what really moved.

use saga_protocol::messages::{
    reason, Charged, Command, Outcome, RefundPayment, Refunded, StepResult,
};
use saga_protocol::values::Cents;
use saga_protocol::Envelope;
use saga_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;
use workers::payment::provider::{ChargeRequest, RefundRequest};
use workers::payment::simulator::VOIDED;
use workers::payment::{
    ledger, outage, IdempotencyKey, LedgerLine, Lookup, Payment, PaymentConfig, PaymentProvider,
    ProviderAnswer, Simulator, MIGRATOR,
};
use workers::runtime::handle_command;

use crate::{answered, charge_of, migrated, ok, on_its_way, rejected, settled};

/// The payment worker with the simulator booking into `pool`'s ledger.
fn simulated_on(pool: &PgPool) -> Payment {
    Payment::with_config(Simulator::new(pool.clone()), PaymentConfig::simulated())
}

/// Runs `command` for `saga_id` as the runtime does (inbox, both phases), as
/// a new message each time, as a retry is; the reply's outcome.
async fn handle<P: PaymentProvider>(
    payment: &Payment<P>,
    pool: &PgPool,
    saga_id: Uuid,
    command: Command,
) -> Outcome {
    answered(payment, pool, &Envelope::command(saga_id, 1, command)).await
}

/// The provider's ledger line of `saga`, if it ever booked anything for it.
async fn ledger_of(pool: &PgPool, saga: Uuid) -> Option<LedgerLine> {
    ledger(pool)
        .await
        .unwrap()
        .into_iter()
        .find(|line| line.saga_id == saga)
}

fn line(saga_id: Uuid, charged: i64, refunded: i64) -> Option<LedgerLine> {
    Some(LedgerLine {
        saga_id,
        charges: i64::from(charged > 0),
        charged_cents: charged,
        refunds: i64::from(refunded > 0),
        refunded_cents: refunded,
    })
}

async fn payments() -> TestDatabase {
    migrated("payment", &MIGRATOR).await
}

/// A payments database, a saga of its own, and the payment worker with the
/// simulator booking into that database's ledger.
async fn saga_to_pay() -> (TestDatabase, Uuid, Payment) {
    saga_to_pay_through(|pool| Simulator::new(pool.clone())).await
}

/// [`saga_to_pay`], but the simulator has `twist`.
async fn saga_to_pay_with(twist: Twist) -> (TestDatabase, Uuid, Payment<Twisted>) {
    saga_to_pay_through(|pool| Twisted {
        simulator: Simulator::new(pool.clone()),
        pool: pool.clone(),
        twist,
    })
    .await
}

/// [`saga_to_pay`], but the worker calls the provider `provider` makes on
/// the database.
async fn saga_to_pay_through<P: PaymentProvider>(
    provider: impl FnOnce(&PgPool) -> P,
) -> (TestDatabase, Uuid, Payment<P>) {
    let db = payments().await;
    let payment = Payment::with_config(provider(&db.pool), PaymentConfig::simulated());
    (db, Uuid::new_v4(), payment)
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
        StepResult::Refunded(Refunded { refunded_cents }) => refunded_cents.get(),
        other => panic!("expected a refund, got {other:?}"),
    }
}

/// The cents a refund command for `saga` answers it returned.
async fn refund_cents<P: PaymentProvider>(payment: &Payment<P>, pool: &PgPool, saga: Uuid) -> i64 {
    refunded(handle(payment, pool, saga, refund()).await)
}

fn transient(outcome: Outcome) -> String {
    match outcome {
        Outcome::Transient { error } => error,
        other => panic!("expected transient, got {other:?}"),
    }
}

/// A refund overtook the charge: the payment is closed as refunded with
/// nothing charged, and the provider booked nothing for the saga.
async fn assert_nothing_moved(pool: &PgPool, saga: Uuid) {
    assert_payment_row(pool, saga, ("refunded", 0, 0, 0)).await;
    assert_eq!(
        ledger_of(pool, saga).await,
        line(saga, 0, 0),
        "nothing moved"
    );
}

/// Asserts a saga's payment row: (status, amount_cents, refunded_cents,
/// transient_failures).
async fn assert_payment_row(pool: &PgPool, saga: Uuid, expected: (&str, i64, i64, i32)) {
    let (status, amount, refunded, failures) = payment_row(pool, saga).await;
    assert_eq!((status.as_str(), amount, refunded, failures), expected);
}

/// (status, amount_cents, refunded_cents, transient_failures) of a saga's payment.
async fn payment_row(pool: &PgPool, saga: Uuid) -> (String, i64, i64, i32) {
    find_payment_row(pool, saga)
        .await
        .unwrap_or_else(|| panic!("saga {saga} has a payment row"))
}

async fn find_payment_row(pool: &PgPool, saga: Uuid) -> Option<(String, i64, i64, i32)> {
    sqlx::query_as(
        "SELECT status, amount_cents, refunded_cents, transient_failures
         FROM payments WHERE saga_id = $1",
    )
    .bind(saga)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn sim_approve_charges_once_and_a_retry_replies_the_same_charge() {
    let (db, saga, payment) = saga_to_pay().await;

    let first = charged(handle(&payment, &db.pool, saga, charge_of(2_499, "sim_approve")).await);
    let again = charged(handle(&payment, &db.pool, saga, charge_of(2_499, "sim_approve")).await);

    assert_eq!(first.amount_cents, 2_499);
    assert_eq!(again, first, "same payment id and amount");
    assert_payment_row(&db.pool, saga, ("charged", 2_499, 0, 0)).await;
}

#[tokio::test]
async fn sim_decline_is_refused_and_stays_refused() {
    let (db, saga, payment) = saga_to_pay().await;

    let first = rejected(handle(&payment, &db.pool, saga, charge_of(100, "sim_decline")).await);
    let again = rejected(handle(&payment, &db.pool, saga, charge_of(100, "sim_decline")).await);

    assert_eq!(first.0, reason::PAYMENT_DECLINED);
    assert_eq!(again, first);
    assert_eq!(payment_row(&db.pool, saga).await.0, "declined");
    assert_eq!(
        refund_cents(&payment, &db.pool, saga).await,
        0,
        "nothing to refund"
    );
}

#[tokio::test]
async fn an_unknown_payment_method_is_refused() {
    let (db, saga, payment) = saga_to_pay().await;

    let (why, detail) = rejected(handle(&payment, &db.pool, saga, charge_of(100, "bitcoin")).await);

    assert_eq!(why, reason::INVALID_PAYMENT_METHOD);
    assert!(detail.contains("bitcoin"), "{detail}");
}

#[tokio::test]
async fn sim_transient_2_fails_twice_then_charges_once() {
    let (db, saga, payment) = saga_to_pay().await;

    transient(handle(&payment, &db.pool, saga, charge_of(500, "sim_transient_2")).await);
    transient(handle(&payment, &db.pool, saga, charge_of(500, "sim_transient_2")).await);
    let third = charged(handle(&payment, &db.pool, saga, charge_of(500, "sim_transient_2")).await);
    let fourth = charged(handle(&payment, &db.pool, saga, charge_of(500, "sim_transient_2")).await);

    assert_eq!(fourth, third);
    assert_payment_row(&db.pool, saga, ("charged", 500, 0, 2)).await;
}

#[tokio::test]
async fn sim_slow_answers_after_its_delay() {
    let (db, saga, payment) = saga_to_pay().await;
    let started = std::time::Instant::now();

    charged(handle(&payment, &db.pool, saga, charge_of(100, "sim_slow_150")).await);

    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn refund_returns_the_charge_once() {
    let (db, saga, payment) = saga_to_pay().await;
    charged(handle(&payment, &db.pool, saga, charge_of(1_234, "sim_approve")).await);

    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 1_234);
    // A retried refund reports the refund already made and moves nothing.
    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 1_234);
    assert_payment_row(&db.pool, saga, ("refunded", 1_234, 1_234, 0)).await;

    let (why, _) =
        rejected(handle(&payment, &db.pool, saga, charge_of(1_234, "sim_approve")).await);
    assert_eq!(
        why,
        reason::ALREADY_COMPENSATED,
        "a refunded payment is never charged again"
    );
}

#[tokio::test]
async fn refund_before_charge_leaves_nothing_for_the_late_charge() {
    let (db, saga, payment) = saga_to_pay().await;

    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 0);
    let (why, _) = rejected(handle(&payment, &db.pool, saga, charge_of(900, "sim_approve")).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_payment_row(&db.pool, saga, ("refunded", 0, 0, 0)).await;
}

#[tokio::test]
async fn refund_after_only_failed_attempts_closes_the_payment() {
    let (db, saga, payment) = saga_to_pay().await;
    transient(handle(&payment, &db.pool, saga, charge_of(700, "sim_transient_1")).await);

    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 0);
    let (why, _) =
        rejected(handle(&payment, &db.pool, saga, charge_of(700, "sim_transient_1")).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_eq!(payment_row(&db.pool, saga).await.1, 0, "nothing charged");
}

#[tokio::test]
async fn the_outage_switch_makes_charges_and_refunds_transient() {
    let db = payments().await;
    let payment = simulated_on(&db.pool);
    let refunded_saga = Uuid::new_v4();
    charged(
        handle(
            &payment,
            &db.pool,
            refunded_saga,
            charge_of(300, "sim_approve"),
        )
        .await,
    );
    let mut conn = db.pool.acquire().await.unwrap();

    outage::set(&mut conn, true).await.unwrap();
    assert!(outage::is_on(&mut conn).await.unwrap());
    let saga = Uuid::new_v4();
    let error = transient(handle(&payment, &db.pool, saga, charge_of(300, "sim_approve")).await);
    assert_eq!(error, "payment provider outage");
    transient(handle(&payment, &db.pool, refunded_saga, refund()).await);
    assert_eq!(
        find_payment_row(&db.pool, saga).await,
        None,
        "no intent is written while the provider is out"
    );
    assert_eq!(payment_row(&db.pool, refunded_saga).await.0, "charged");

    outage::set(&mut conn, false).await.unwrap();
    charged(handle(&payment, &db.pool, saga, charge_of(300, "sim_approve")).await);
    assert_eq!(refund_cents(&payment, &db.pool, refunded_saga).await, 300);
}

#[tokio::test]
async fn sim_down_is_always_transient() {
    let (db, saga, payment) = saga_to_pay().await;

    for _ in 0..3 {
        transient(handle(&payment, &db.pool, saga, charge_of(100, "sim_down")).await);
    }

    assert_payment_row(&db.pool, saga, ("charging", 100, 0, 3)).await;
    assert_eq!(ledger_of(&db.pool, saga).await, None, "nothing booked");
}

#[tokio::test]
async fn the_ledger_shows_one_charge_and_one_refund_whatever_the_retries() {
    let (db, saga, payment) = saga_to_pay().await;

    for _ in 0..3 {
        charged(handle(&payment, &db.pool, saga, charge_of(2_145, "sim_approve")).await);
    }
    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 2_145, 0));
    for _ in 0..3 {
        assert_eq!(refund_cents(&payment, &db.pool, saga).await, 2_145);
    }

    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 2_145, 2_145));
}

#[tokio::test]
async fn a_lost_charge_answer_is_looked_up_by_key_not_charged_again() {
    let (db, saga, payment) = saga_to_pay().await;
    let command = Envelope::command(saga, 1, charge_of(2_145, "sim_approve"));

    // The first delivery commits its intent and reaches the provider, then
    // its worker dies before recording the outcome.
    drop(on_its_way(&payment, &db.pool, &command).await.run().await);
    assert_eq!(payment_row(&db.pool, saga).await.0, "charging");

    // The redelivery (and a later attempt) find the intent and ask the
    // provider by key.
    let first = charged(handle(&payment, &db.pool, saga, charge_of(2_145, "sim_approve")).await);
    let again = charged(handle(&payment, &db.pool, saga, charge_of(2_145, "sim_approve")).await);

    assert_eq!(again, first);
    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 2_145, 0));
    let booked: Uuid =
        sqlx::query_scalar("SELECT reference FROM provider_ledger WHERE idempotency_key = $1")
            .bind(IdempotencyKey::charge(saga).as_str())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        first.payment_id, booked,
        "the provider's reference of the one charge"
    );
}

#[tokio::test]
async fn a_refund_while_the_charge_is_at_the_provider_voids_it_there() {
    let (db, saga, payment) = saga_to_pay().await;
    let command = Envelope::command(saga, 1, charge_of(2_145, "sim_approve"));
    let in_flight = on_its_way(&payment, &db.pool, &command).await;

    // The compensation overtakes the charge on its way to the provider.
    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 0);
    let late = settled(in_flight.run().await, &db.pool).await;

    assert_eq!(rejected(late).0, reason::ALREADY_COMPENSATED);
    assert_nothing_moved(&db.pool, saga).await;
}

#[tokio::test]
async fn a_refund_after_the_charge_reached_the_provider_refunds_it() {
    let (db, saga, payment) = saga_to_pay().await;
    let command = Envelope::command(saga, 1, charge_of(2_145, "sim_approve"));
    let in_flight = on_its_way(&payment, &db.pool, &command).await;
    // Approved at the provider; the answer is not recorded yet.
    let settlement = in_flight.run().await;

    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 2_145);
    let late = settled(settlement, &db.pool).await;

    assert_eq!(rejected(late).0, reason::ALREADY_COMPENSATED);
    assert_payment_row(&db.pool, saga, ("refunded", 2_145, 2_145, 0)).await;
    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 2_145, 2_145));
}

#[tokio::test]
async fn invalid_amounts_are_rejected_and_nothing_is_charged() {
    let db = payments().await;
    let payment = simulated_on(&db.pool);

    for amount in [0, -1, i64::MIN, 100_000_001, i64::MAX] {
        let saga = Uuid::new_v4();
        let (why, detail) =
            rejected(handle(&payment, &db.pool, saga, charge_of(amount, "sim_approve")).await);
        assert_eq!(why, reason::INVALID_AMOUNT, "{amount}: {detail}");
        assert!(detail.contains(&amount.to_string()), "{detail}");
        assert_eq!(find_payment_row(&db.pool, saga).await, None, "{amount}");
    }
    assert_eq!(ledger(&db.pool).await.unwrap(), vec![], "nothing booked");

    // The largest allowed charge goes through; the maximum is configurable.
    charged(
        handle(
            &payment,
            &db.pool,
            Uuid::new_v4(),
            charge_of(100_000_000, "sim_approve"),
        )
        .await,
    );
    let strict = Payment::with_config(
        Simulator::new(db.pool.clone()),
        PaymentConfig {
            max_amount_cents: 5_000,
            ..PaymentConfig::simulated()
        },
    );
    let (why, _) = rejected(
        handle(
            &strict,
            &db.pool,
            Uuid::new_v4(),
            charge_of(5_001, "sim_approve"),
        )
        .await,
    );
    assert_eq!(why, reason::INVALID_AMOUNT);
}

/// The simulator's answer to an approvable charge of `amount_cents` for `saga`.
async fn charge_at(provider: &Simulator, saga: Uuid, amount_cents: i64) -> ProviderAnswer {
    let request = ChargeRequest {
        key: IdempotencyKey::charge(saga),
        saga_id: saga,
        amount_cents: Cents::new(amount_cents),
        currency: "USD".parse().unwrap(),
        payment_method: "sim_approve".into(),
        customer_id: "customer-1".parse().unwrap(),
        transient_failures: 0,
    };
    provider.charge(&request).await
}

#[tokio::test]
async fn the_simulator_honours_idempotency_keys() {
    let db = payments().await;
    let provider = Simulator::new(db.pool.clone());
    let saga = Uuid::new_v4();

    let first = charge_at(&provider, saga, 700).await;
    let again = charge_at(&provider, saga, 700).await;
    let other = charge_at(&provider, saga, 701).await;

    assert!(
        matches!(
            first,
            ProviderAnswer::Approved { amount_cents, .. } if amount_cents == 700
        ),
        "{first:?}"
    );
    assert_eq!(again, first, "same key and amount: the original answer");
    match other {
        ProviderAnswer::KeyReused { error } => assert!(error.contains("701"), "{error}"),
        other => panic!("same key, other amount: an error, got {other:?}"),
    }
    assert_eq!(
        provider.lookup(&IdempotencyKey::charge(saga)).await,
        Lookup::Found(first)
    );
    assert_eq!(
        provider.lookup(&IdempotencyKey::refund(saga)).await,
        Lookup::Unknown
    );
    assert_eq!(
        ledger_of(&db.pool, saga).await,
        line(saga, 700, 0),
        "one charge"
    );
}

#[tokio::test]
async fn a_charge_key_voided_by_its_refund_is_declined() {
    let db = payments().await;
    let provider = Simulator::new(db.pool.clone());
    let saga = Uuid::new_v4();
    let refund = RefundRequest {
        key: IdempotencyKey::refund(saga),
        charge_key: IdempotencyKey::charge(saga),
        saga_id: saga,
        payment_method: "sim_approve".into(),
    };

    let cancelled = provider.refund(&refund).await;
    let late = charge_at(&provider, saga, 700).await;

    assert!(
        matches!(
            cancelled,
            ProviderAnswer::Approved {
                amount_cents: Cents::ZERO,
                ..
            }
        ),
        "{cancelled:?}"
    );
    assert_eq!(
        late,
        ProviderAnswer::Declined {
            reason: VOIDED.into()
        }
    );
    assert_eq!(
        provider.refund(&refund).await,
        cancelled,
        "a repeat answers the same"
    );
    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 0, 0));
}

#[tokio::test]
async fn payments_made_before_the_provider_ledger_are_refunded_after_the_upgrade() {
    // A deployment as it was before the ledger was backfilled: payments in
    // our books, none in the provider's.
    let db = TestDatabase::create("payment_upgrade").await;
    let before = sqlx::migrate::Migrator {
        migrations: MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version < 4)
            .cloned()
            .collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before
        .run(&db.pool)
        .await
        .expect("migrate to before the upgrade");
    let (charged_saga, refunded_saga) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO payments
             (saga_id, status, amount_cents, refunded_cents, currency, payment_method,
              customer_id, provider_reference)
         VALUES ($1, 'charged', 1500, 0, 'USD', 'sim_approve', 'c', gen_random_uuid()),
                ($2, 'refunded', 900, 900, 'USD', 'sim_approve', 'c', gen_random_uuid())",
    )
    .bind(charged_saga)
    .bind(refunded_saga)
    .execute(&db.pool)
    .await
    .unwrap();

    MIGRATOR.run(&db.pool).await.expect("upgrade");
    let payment = simulated_on(&db.pool);

    assert_eq!(
        refund_cents(&payment, &db.pool, charged_saga).await,
        1500,
        "the charge made before the upgrade goes back in full"
    );
    assert_eq!(
        ledger_of(&db.pool, charged_saga).await,
        line(charged_saga, 1500, 1500)
    );
    assert_eq!(refund_cents(&payment, &db.pool, refunded_saga).await, 900);
    assert_eq!(
        ledger_of(&db.pool, refunded_saga).await,
        line(refunded_saga, 900, 900)
    );
}

#[tokio::test]
async fn a_provider_that_lost_an_approved_charge_refunds_nothing_and_the_refund_retries() {
    let (db, saga, payment) = saga_to_pay().await;
    charged(handle(&payment, &db.pool, saga, charge_of(1200, "sim_approve")).await);
    // The provider's books no longer hold the charge.
    sqlx::query("DELETE FROM provider_ledger WHERE saga_id = $1")
        .bind(saga)
        .execute(&db.pool)
        .await
        .unwrap();

    let error = transient(handle(&payment, &db.pool, saga, refund()).await);
    assert!(error.contains("refunded nothing"), "{error}");
    let (status, amount, refunded_cents, _) = payment_row(&db.pool, saga).await;
    assert_eq!(
        (status.as_str(), amount, refunded_cents),
        ("refunding", 1200, 0),
        "the payment is not closed as refunded"
    );
}

#[tokio::test]
async fn a_vanished_payment_intent_is_permanent_not_retried() {
    use saga_shared::failure::Classify;
    let (db, saga, payment) = saga_to_pay().await;
    let envelope = Envelope::command(saga, 1, charge_of(700, "sim_approve"));
    let settlement = on_its_way(&payment, &db.pool, &envelope).await.run().await;
    // An operator's hand removes the intent while the call was out.
    sqlx::query("DELETE FROM payments WHERE saga_id = $1")
        .bind(saga)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let error = settlement
        .settle(&mut tx)
        .await
        .expect_err("the intent is gone");
    assert!(error.is_permanent(), "{error}");
    assert!(error.to_string().contains("is gone"), "{error}");
}

fn reply_of(body: &serde_json::Value) -> Outcome {
    Envelope::<Outcome>::decode(&serde_json::to_vec(body).unwrap())
        .expect("a recorded reply decodes")
        .payload
}

#[tokio::test]
async fn a_redelivered_charge_gets_the_reply_its_one_statement_recorded() {
    let (db, saga, payment) = saga_to_pay().await;
    let command = Envelope::command(saga, 1, charge_of(1_999, "sim_approve"));

    let first = handle_command(&payment, &db.pool, &command).await.unwrap();
    let again = handle_command(&payment, &db.pool, &command).await.unwrap();

    assert_eq!(first, again, "the recorded reply, message id included");
    assert_eq!(charged(reply_of(&first)).amount_cents, 1_999);
    assert_eq!(payment_row(&db.pool, saga).await.0, "charged");
    assert_eq!(ledger_of(&db.pool, saga).await, line(saga, 1_999, 0));
    let answered: (i64, i64) =
        sqlx::query_as("SELECT count(*), count(reply) FROM inbox WHERE saga_id = $1")
            .bind(saga)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(answered, (1, 1));
}

/// The simulator with one of its answers changed by `twist`, for what it
/// does not do by itself.
struct Twisted {
    simulator: Simulator,
    pool: PgPool,
    twist: Twist,
}

enum Twist {
    /// A refund of the saga reaches the provider (through the worker) while
    /// the charge is on its way: a compensation overtaking the charge.
    RefundOvertakes,
    /// A refund returns only these cents of what was charged.
    ShortRefund(i64),
}

impl PaymentProvider for Twisted {
    async fn charge(&self, request: &ChargeRequest) -> ProviderAnswer {
        if let Twist::RefundOvertakes = self.twist {
            let refund = Envelope::command(request.saga_id, 1, refund());
            handle_command(&simulated_on(&self.pool), &self.pool, &refund)
                .await
                .unwrap();
        }
        self.simulator.charge(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> ProviderAnswer {
        match self.twist {
            Twist::ShortRefund(refunds_cents) => ProviderAnswer::Approved {
                reference: Uuid::new_v4(),
                amount_cents: Cents::new(refunds_cents),
            },
            Twist::RefundOvertakes => self.simulator.refund(request).await,
        }
    }

    async fn lookup(&self, key: &IdempotencyKey) -> Lookup {
        self.simulator.lookup(key).await
    }
}

#[tokio::test]
async fn a_refund_that_overtakes_the_call_wins_over_the_one_statement_settlement() {
    let (db, saga, payment) = saga_to_pay_with(Twist::RefundOvertakes).await;
    let command = Envelope::command(saga, 1, charge_of(2_145, "sim_approve"));

    let body = handle_command(&payment, &db.pool, &command).await.unwrap();

    assert_eq!(rejected(reply_of(&body)).0, reason::ALREADY_COMPENSATED);
    assert_nothing_moved(&db.pool, saga).await;
    let again = handle_command(&payment, &db.pool, &command).await.unwrap();
    assert_eq!(again, body);
}

#[tokio::test]
async fn sim_methods_are_refused_unless_the_simulator_is_switched_on() {
    let db = payments().await;
    // What the binary runs with PAYMENT_PROVIDER unset.
    let production =
        Payment::with_config(Simulator::new(db.pool.clone()), PaymentConfig::default());
    for method in [
        "sim_approve",
        "sim_down",
        "sim_slow_60000",
        "sim_transient_3",
    ] {
        let saga = Uuid::new_v4();
        let (why, detail) =
            rejected(handle(&production, &db.pool, saga, charge_of(1_000, method)).await);
        assert_eq!(why, reason::INVALID_PAYMENT_METHOD, "{method}");
        assert!(detail.contains("PAYMENT_PROVIDER=simulator"), "{detail}");
        assert_eq!(
            find_payment_row(&db.pool, saga).await,
            None,
            "{method}: nothing written"
        );
        assert_eq!(
            ledger_of(&db.pool, saga).await,
            None,
            "{method}: nothing booked"
        );
    }
    // The switch, as PaymentConfig::from_source reads it.
    let env: std::collections::HashMap<String, String> =
        [("PAYMENT_PROVIDER".to_owned(), "simulator".to_owned())].into();
    let switched = Payment::with_config(
        Simulator::new(db.pool.clone()),
        PaymentConfig::from_source(&env).unwrap(),
    );
    let saga = Uuid::new_v4();
    let charge = charged(handle(&switched, &db.pool, saga, charge_of(1_000, "sim_approve")).await);
    assert_eq!(charge.amount_cents, 1_000);
}

#[tokio::test]
async fn a_refund_keeps_the_charged_amount_and_records_the_refund_beside_it() {
    let (db, saga, payment) = saga_to_pay_with(Twist::ShortRefund(500)).await;
    charged(handle(&payment, &db.pool, saga, charge_of(1_200, "sim_approve")).await);

    assert_eq!(refund_cents(&payment, &db.pool, saga).await, 500);

    // The books say 700 is still out, where overwriting the charge with the
    // refund netted them to zero.
    assert_payment_row(&db.pool, saga, ("refunded", 1_200, 500, 0)).await;
    // A full refund of a recorded charge, and a voided one, as before.
    let full = Uuid::new_v4();
    let simulated = simulated_on(&db.pool);
    charged(handle(&simulated, &db.pool, full, charge_of(1_200, "sim_approve")).await);
    assert_eq!(refund_cents(&simulated, &db.pool, full).await, 1_200);
    assert_payment_row(&db.pool, full, ("refunded", 1_200, 1_200, 0)).await;
}
