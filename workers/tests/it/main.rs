//! The workers against the real PostgreSQL and RabbitMQ: every test gets its
//! own database (and, over the broker, its own prefix), so tests run in
//! parallel and leave nothing behind. `TEST_LOG=1` shows the logs.

mod binaries;
mod catalogue;
mod inventory;
mod payment;
mod payment_binary;
mod retention;
mod round_trips;
mod runtime;
mod schema;
mod stripe;
mod tax;
mod topology;

use saga_protocol::messages::{
    ChargePayment, Command, LineRequest, Outcome, PricedLine, ReserveStock, Reserved, StepResult,
};
use saga_protocol::values::{Cents, Quantity};
use saga_protocol::Envelope;
use saga_testkit::{self as testing, TestDatabase, TopologyGuard};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use uuid::Uuid;
use workers::payment::{Payment, PaymentProvider};
use workers::runtime::{handle_command, Decision, ExternalCall, Handler, Settlement};

/// A fresh database with `migrator`'s tables.
pub async fn migrated(label: &str, migrator: &'static Migrator) -> TestDatabase {
    testing::init_tracing();
    let db = TestDatabase::create(label).await;
    migrator
        .run(&db.pool)
        .await
        .expect("migrate the test database");
    db
}

/// Runs `command` for `saga_id` through `handler` in its own committed
/// transaction, as the runtime does (a new message each time, as a retry is).
pub async fn handle<H: Handler>(
    handler: &H,
    pool: &PgPool,
    saga_id: Uuid,
    command: Command,
) -> Outcome {
    let envelope = Envelope::command(saga_id, 1, command);
    let mut tx = pool.begin().await.expect("begin");
    let outcome = handler
        .handle(&mut tx, &envelope)
        .await
        .expect("the handler reaches its database");
    tx.commit().await.expect("commit");
    outcome
}

/// Runs `command` as the runtime does (inbox, one statement or both
/// phases), and the outcome of the reply it recorded.
pub async fn answered<H: Handler>(
    handler: &H,
    pool: &PgPool,
    command: &Envelope<Command>,
) -> Outcome {
    let body = handle_command(handler, pool, command)
        .await
        .expect("the handler reaches its database");
    Envelope::<Outcome>::decode(&serde_json::to_vec(&body).unwrap())
        .expect("a recorded reply decodes")
        .payload
}

/// The worker binary at `path` set to serve `db` over `guard`'s private
/// topology, its output discarded unless the test takes it, and killed
/// when dropped.
pub fn worker_binary(
    path: &str,
    db: &TestDatabase,
    guard: &TopologyGuard,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(path);
    command
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", testing::amqp_url())
        .env("AMQP_PREFIX", guard.topology.prefix())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// A reserve of `lines`: (SKU, quantity).
pub fn reserve_of(lines: &[(&str, u32)]) -> Command {
    Command::Reserve(ReserveStock {
        lines: lines
            .iter()
            .map(|(sku, quantity)| LineRequest::parse(sku, *quantity).unwrap())
            .collect(),
    })
}

/// A charge of `amount_cents` USD by `method`, for customer-1.
pub fn charge_of(amount_cents: i64, method: &str) -> Command {
    Command::Charge(ChargePayment {
        amount_cents: Cents::new(amount_cents),
        currency: "USD".parse().unwrap(),
        payment_method: method.into(),
        customer_id: "customer-1".parse().unwrap(),
    })
}

/// A reserved line as the inventory worker prices it.
pub fn priced_line(sku: &str, quantity: u32, unit_price_cents: i64, category: &str) -> PricedLine {
    PricedLine {
        sku: sku.parse().unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
        unit_price_cents: Cents::new(unit_price_cents),
        tax_category: category.into(),
    }
}

/// The result of an `ok` outcome; panics with the outcome otherwise.
pub fn ok(outcome: Outcome) -> StepResult {
    match outcome {
        Outcome::Ok(result) => result,
        other => panic!("expected ok, got {other:?}"),
    }
}

/// The reservation of an `ok` outcome; panics with the outcome otherwise.
pub fn reserved(outcome: Outcome) -> Reserved {
    match ok(outcome) {
        StepResult::Reserved(reserved) => reserved,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// The reason and detail of a `rejected` outcome; panics otherwise.
pub fn rejected(outcome: Outcome) -> (String, String) {
    match outcome {
        Outcome::Rejected { reason, detail } => (reason, detail),
        other => panic!("expected rejected, got {other:?}"),
    }
}

/// A charge's first phase as the runtime commits it: the intent recorded,
/// the provider's call (returned) not made yet.
pub async fn on_its_way<P: PaymentProvider>(
    payment: &Payment<P>,
    pool: &PgPool,
    command: &Envelope<Command>,
) -> ExternalCall {
    let mut tx = pool.begin().await.unwrap();
    let Decision::Call(call) = payment.decide(&mut tx, command).await.unwrap() else {
        panic!("a first charge calls the provider");
    };
    tx.commit().await.unwrap();
    call
}

/// A provider's answer recorded as the runtime's second phase does, in a
/// transaction of its own; the reply's outcome.
pub async fn settled(settlement: Settlement, pool: &PgPool) -> Outcome {
    let mut tx = pool.begin().await.unwrap();
    let outcome = settlement.settle(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    outcome
}
