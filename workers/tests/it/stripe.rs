//! The payment worker against localstripe, a Stripe server nobody here
//! wrote, which ignores idempotency keys: every charge and refund goes
//! through the runtime's two phases, and what moved is read back from the
//! server, never from our own books.

use saga_protocol::messages::{reason, Command, Outcome, RefundPayment, StepResult};
use saga_protocol::Envelope;
use saga_testkit::localstripe::{cards, SECRET_KEY};
use saga_testkit::{LocalStripe, TestDatabase};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use workers::payment::stripe::Stripe;
use workers::payment::{Payment, PaymentConfig, ProviderKind, MIGRATOR};

use crate::{answered, charge_of, migrated, ok, on_its_way, rejected, settled};

const AMOUNT: i64 = 2_145;

struct Setup {
    server: LocalStripe,
    db: TestDatabase,
    payment: Payment<Stripe>,
}

async fn setup() -> Setup {
    let server = LocalStripe::start().await;
    let db = migrated("payment", &MIGRATOR).await;
    let client = saga_stripe::Client::new(
        &server.url(),
        SecretString::from(SECRET_KEY.to_owned()),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let config = PaymentConfig {
        provider: ProviderKind::Stripe,
        ..PaymentConfig::default()
    };
    let payment = Payment::with_config(Stripe::new(client, db.pool.clone(), Vec::new()), config);
    Setup {
        server,
        db,
        payment,
    }
}

/// A setup, a saga of its own, and a PaymentMethod of the test card `card`.
async fn paying_with(card: &str) -> (Setup, Uuid, String) {
    let setup = setup().await;
    let method = setup.server.payment_method(card).await;
    (setup, Uuid::new_v4(), method)
}

async fn handle(setup: &Setup, saga: Uuid, command: Command) -> Outcome {
    answered(
        &setup.payment,
        &setup.db.pool,
        &Envelope::command(saga, 1, command),
    )
    .await
}

async fn charge(setup: &Setup, saga: Uuid, method: &str) -> Outcome {
    handle(setup, saga, charge_of(AMOUNT, method)).await
}

async fn refund(setup: &Setup, saga: Uuid) -> i64 {
    match ok(handle(setup, saga, Command::Refund(RefundPayment {})).await) {
        StepResult::Refunded(refunded) => refunded.refunded_cents.get(),
        other => panic!("expected a refund, got {other:?}"),
    }
}

/// The server's PaymentIntents of `saga` (by their metadata).
async fn intents_of(server: &LocalStripe, saga: Uuid) -> Vec<Value> {
    let saga = saga.to_string();
    server
        .intents()
        .await
        .into_iter()
        .filter(|intent| intent["metadata"]["saga_id"].as_str() == Some(saga.as_str()))
        .collect()
}

fn statuses(intents: &[Value]) -> Vec<&str> {
    intents
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect()
}

async fn recorded_intent(pool: &PgPool, saga: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT provider_intent_id FROM payments WHERE saga_id = $1")
        .bind(saga)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_charge_is_one_succeeded_payment_intent_and_a_repeat_charges_nothing_more() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;

    let first = charge(&setup, saga, &method).await;
    let again = charge(&setup, saga, &method).await;

    let StepResult::Charged(charged) = ok(first) else {
        panic!("a charge")
    };
    assert_eq!(charged.amount_cents.get(), AMOUNT);
    assert_eq!(
        ok(again),
        StepResult::Charged(charged),
        "a repeat answers the first charge"
    );
    let intents = intents_of(&setup.server, saga).await;
    assert_eq!(statuses(&intents), ["succeeded"], "{intents:#?}");
    assert_eq!(intents[0]["amount"], AMOUNT);
    assert_eq!(intents[0]["currency"], "usd");
    assert_eq!(
        recorded_intent(&setup.db.pool, saga).await.as_deref(),
        intents[0]["id"].as_str()
    );
}

#[tokio::test]
async fn a_declined_card_is_rejected_with_stripes_code_and_moves_nothing() {
    let (setup, saga, method) = paying_with(cards::DECLINES).await;

    let (why, detail) = rejected(charge(&setup, saga, &method).await);

    assert_eq!(why, reason::PAYMENT_DECLINED);
    assert!(detail.contains("card_declined"), "{detail}");
    assert_eq!(refund(&setup, saga).await, 0, "nothing to give back");
    let intents = intents_of(&setup.server, saga).await;
    assert_eq!(statuses(&intents), ["requires_payment_method"]);
    assert!(setup.server.refunds().await.is_empty());
}

#[tokio::test]
async fn a_card_that_needs_3d_secure_is_rejected_and_its_intent_let_go() {
    let (setup, saga, method) = paying_with(cards::REQUIRES_ACTION).await;

    let (why, _) = rejected(charge(&setup, saga, &method).await);

    assert_eq!(why, reason::PAYMENT_REQUIRES_ACTION);
    assert_eq!(
        statuses(&intents_of(&setup.server, saga).await),
        ["canceled"]
    );
}

#[tokio::test]
async fn a_method_that_is_no_payment_method_id_is_refused_before_stripe_is_asked() {
    let setup = setup().await;

    for method in ["4242424242424242", "card_123", "pm_nonexistent"] {
        let saga = Uuid::new_v4();
        let (why, detail) = rejected(charge(&setup, saga, method).await);
        assert_eq!(why, reason::INVALID_PAYMENT_METHOD, "{method}: {detail}");
    }
    assert!(
        setup.server.intents().await.is_empty(),
        "no PaymentIntent was made"
    );
}

#[tokio::test]
async fn a_refund_after_a_charge_returns_the_whole_amount_once() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;
    ok(charge(&setup, saga, &method).await);

    assert_eq!(refund(&setup, saga).await, AMOUNT);
    assert_eq!(
        refund(&setup, saga).await,
        AMOUNT,
        "a repeat answers the first"
    );

    let refunds = setup.server.refunds().await;
    assert_eq!(refunds.len(), 1, "{refunds:#?}");
    assert_eq!(refunds[0]["amount"], AMOUNT);
    let intent = &intents_of(&setup.server, saga).await[0];
    assert_eq!(intent["latest_charge"]["amount_refunded"], AMOUNT);
}

#[tokio::test]
async fn a_refund_before_the_charge_leaves_nothing_for_the_late_charge_to_take() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;

    assert_eq!(refund(&setup, saga).await, 0);
    let (why, _) = rejected(charge(&setup, saga, &method).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert!(intents_of(&setup.server, saga).await.is_empty());
}

/// A worker that died after creating and recording its PaymentIntent,
/// before confirming it: the redelivered charge confirms that one, and a
/// PaymentIntent created but never recorded (a worker that died before
/// recording) is never confirmed.
#[tokio::test]
async fn a_resumed_charge_confirms_the_recorded_intent_and_never_an_unrecorded_one() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;
    let http = reqwest::Client::new();
    let create = |metadata: &'static str| {
        let form = [
            ("amount", AMOUNT.to_string()),
            ("currency", "usd".to_owned()),
            ("payment_method", method.clone()),
            ("confirm", "false".to_owned()),
            ("metadata[saga_id]", saga.to_string()),
            ("metadata[made_by]", metadata.to_owned()),
        ];
        let request = http
            .post(format!("{}/v1/payment_intents", setup.server.url()))
            .basic_auth(SECRET_KEY, Some(""))
            .form(&form);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let orphan = create("a worker that died before recording").await;
    let recorded = create("a worker that died before confirming").await;
    // The first phase of that worker, as it committed it.
    sqlx::query(
        "INSERT INTO payments (saga_id, status, amount_cents, currency, payment_method, customer_id, provider_intent_id)
         VALUES ($1, 'charging', $2, 'USD', $3, 'customer-1', $4)",
    )
    .bind(saga)
    .bind(AMOUNT)
    .bind(&method)
    .bind(recorded["id"].as_str())
    .execute(&setup.db.pool)
    .await
    .unwrap();

    ok(charge(&setup, saga, &method).await);

    let confirmed = setup.server.intent(recorded["id"].as_str().unwrap()).await;
    assert_eq!(confirmed["status"], "succeeded");
    let orphan = setup.server.intent(orphan["id"].as_str().unwrap()).await;
    assert_eq!(orphan["status"], "requires_confirmation", "never confirmed");
    assert_eq!(
        intents_of(&setup.server, saga).await.len(),
        2,
        "no third one"
    );
}

#[tokio::test]
async fn stripe_away_is_transient_and_the_charge_goes_through_once_it_is_back() {
    let (mut setup, saga, method) = paying_with(cards::APPROVES).await;
    setup.server.stop().await;

    let error = match charge(&setup, saga, &method).await {
        Outcome::Transient { error } => error,
        other => panic!("expected transient, got {other:?}"),
    };
    assert!(error.contains("Stripe is unavailable"), "{error}");

    setup.server.start_again().await;
    ok(charge(&setup, saga, &method).await);
    assert_eq!(
        statuses(&intents_of(&setup.server, saga).await),
        ["succeeded"]
    );
}

#[tokio::test]
async fn a_refund_that_overtakes_the_charge_leaves_it_nothing_to_confirm() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;
    let command = Envelope::command(saga, 1, charge_of(AMOUNT, &method));
    let in_flight = on_its_way(&setup.payment, &setup.db.pool, &command).await;

    // The compensation comes before the charge reached Stripe.
    assert_eq!(refund(&setup, saga).await, 0);
    let late = settled(in_flight.run().await, &setup.db.pool).await;

    assert_eq!(rejected(late).0, reason::ALREADY_COMPENSATED);
    let intents = intents_of(&setup.server, saga).await;
    // The charge reads the refund's mark before it makes a PaymentIntent:
    // none was made, so none can be confirmed.
    assert!(intents.is_empty(), "nothing made: {intents:#?}");
}

#[tokio::test]
async fn a_refund_after_the_charge_reached_stripe_refunds_it_whole() {
    let (setup, saga, method) = paying_with(cards::APPROVES).await;
    let command = Envelope::command(saga, 1, charge_of(AMOUNT, &method));
    // Confirmed at Stripe; the answer is not recorded yet.
    let settlement = on_its_way(&setup.payment, &setup.db.pool, &command)
        .await
        .run()
        .await;

    assert_eq!(refund(&setup, saga).await, AMOUNT);
    let late = settled(settlement, &setup.db.pool).await;

    assert_eq!(rejected(late).0, reason::ALREADY_COMPENSATED);
    assert_eq!(
        statuses(&intents_of(&setup.server, saga).await),
        ["succeeded"]
    );
    let refunds = setup.server.refunds().await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], AMOUNT);
}

/// The books' PaymentIntent id is written once: the first write wins, so a
/// charge whose PaymentIntent was made while a refund voided the saga (or
/// while another attempt recorded its own) learns it must not confirm.
#[tokio::test]
async fn the_first_record_of_a_payment_intent_wins_and_a_void_stops_a_late_one() {
    use workers::payment::provider_intent::{self, Recorded};
    let setup = setup().await;
    let pool = &setup.db.pool;
    let (voided, recorded) = (Uuid::new_v4(), Uuid::new_v4());
    for saga in [voided, recorded] {
        sqlx::query(
            "INSERT INTO payments (saga_id, status, amount_cents) VALUES ($1, 'charging', 1)",
        )
        .bind(saga)
        .execute(pool)
        .await
        .unwrap();
    }

    assert_eq!(
        provider_intent::void(pool, voided).await.unwrap(),
        Recorded::Void
    );
    assert_eq!(
        provider_intent::record(pool, voided, "pi_late")
            .await
            .unwrap(),
        Recorded::Void,
        "a PaymentIntent made after the void is not recorded"
    );
    let first = Recorded::Intent("pi_first".to_owned());
    assert_eq!(
        provider_intent::record(pool, recorded, "pi_first")
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        provider_intent::record(pool, recorded, "pi_second")
            .await
            .unwrap(),
        first
    );
    assert_eq!(provider_intent::void(pool, recorded).await.unwrap(), first);
    assert_eq!(
        provider_intent::recorded(pool, recorded).await.unwrap(),
        first
    );
}
