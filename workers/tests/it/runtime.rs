//! The inventory worker on the runtime, over the real RabbitMQ: duplicates
//! get the recorded reply, poison goes to the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::Consumer;
use saga_protocol::messages::{Command, Outcome, Step, StepResult};
use saga_protocol::{Envelope, WorkerKind};
use saga_shared::broker::{header, Broker, Outgoing, ERROR_HEADER};
use saga_shared::traceparent;
use saga_testkit::{amqp_url, random_prefix, reply_copies, TestDatabase, TopologyGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use workers::inventory::{catalogue, Inventory, MIGRATOR};
use workers::runtime::{run_worker_until_stopped, Handler};
use workers::WorkerError;

use crate::{charge_of, migrated, reserve_of, reserved, worker_binary};

const PATIENCE: Duration = Duration::from_secs(20);

const CATALOGUE: &str =
    "sku,name,on_hand,unit_price_cents,currency,tax_category\nMUG,Mug,5,850,USD,general\n";

async fn next_reply(replies: &mut Consumer) -> Delivery {
    tokio::time::timeout(PATIENCE, replies.next())
        .await
        .expect("a reply in time")
        .expect("reply consumer open")
        .expect("reply delivery")
}

async fn dead_letter_consumer(broker: &Broker) -> Consumer {
    broker
        .consume(
            &broker.topology().dead_letter_queue(),
            "test-dead-letters",
            1,
        )
        .await
        .unwrap()
}

/// The next dead letter, acked.
async fn next_dead_letter(dead_letters: &mut Consumer) -> Delivery {
    let dead = tokio::time::timeout(PATIENCE, dead_letters.next())
        .await
        .expect("a dead letter in time")
        .expect("dead-letter consumer open")
        .expect("dead-letter delivery");
    dead.ack(BasicAckOptions::default()).await.unwrap();
    dead
}

async fn send(broker: &Broker, routing_key: &str, message_id: Uuid, saga_id: Uuid, body: Vec<u8>) {
    broker
        .publish(&Outgoing {
            exchange: broker.topology().command_exchange(),
            routing_key: routing_key.to_owned(),
            body,
            message_id,
            saga_id,
            message_type: routing_key.to_owned(),
            traceparent: traceparent::for_saga(saga_id),
        })
        .await
        .expect("publish confirmed");
}

/// Publishes `command` as the orchestrator does.
async fn send_command(broker: &Broker, command: &Envelope<Command>) {
    let routing_key = command.step.routing_key();
    send(
        broker,
        routing_key,
        command.message_id,
        command.saga_id,
        command.encode(),
    )
    .await;
}

/// A connection to RabbitMQ declaring `guard`'s private topology.
async fn connect(guard: &TopologyGuard, stop: &CancellationToken) -> Broker {
    Broker::connect(&amqp_url(), guard.topology.clone(), "workers-it", stop)
        .await
        .expect("connect to RabbitMQ (is it running?)")
}

/// A database with the inventory's tables and [`CATALOGUE`].
async fn stocked(label: &str) -> TestDatabase {
    let db = migrated(label, &MIGRATOR).await;
    catalogue::import(&db.pool, "catalogue.csv", CATALOGUE.as_bytes())
        .await
        .unwrap();
    db
}

fn is_out_of_stock(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected { reason, .. } if reason == "out_of_stock")
}

/// An inventory worker consuming a private prefix, and a test-owned queue
/// that receives a copy of every reply.
struct Harness {
    db: TestDatabase,
    broker: Arc<Broker>,
    replies: Consumer,
    stop: CancellationToken,
    worker: Option<JoinHandle<Result<(), WorkerError>>>,
    // Dropped last: deletes the prefix's queues and exchanges.
    _guard: TopologyGuard,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(Inventory).await
    }

    async fn start_with(handler: impl Handler) -> Harness {
        let mut harness = Self::idle().await;
        harness.run(handler, 4);
        harness
    }

    /// Everything but the worker: commands sent now wait on its queue.
    async fn idle() -> Harness {
        let db = stocked("inventory_runtime").await;
        let guard = TopologyGuard::new(&random_prefix());
        let stop = CancellationToken::new();
        let broker = Arc::new(connect(&guard, &stop).await);
        let replies = reply_copies(&broker, "test-replies").await;
        Harness {
            db,
            broker,
            replies,
            stop,
            worker: None,
            _guard: guard,
        }
    }

    fn run(&mut self, handler: impl Handler, prefetch: u16) {
        self.worker = Some(tokio::spawn(run_worker_until_stopped(
            handler,
            self.db.pool.clone(),
            self.broker.clone(),
            prefetch,
            self.stop.clone(),
        )));
    }

    async fn publish(&self, routing_key: &str, message_id: Uuid, saga_id: Uuid, body: Vec<u8>) {
        send(&self.broker, routing_key, message_id, saga_id, body).await;
    }

    async fn send(&self, command: &Envelope<Command>) {
        send_command(&self.broker, command).await;
    }

    /// Publishes a reserve whose body is not JSON, as `message_id`.
    async fn publish_not_json(&self, message_id: Uuid) {
        let routing_key = Step::Reserve.routing_key();
        self.publish(
            routing_key,
            message_id,
            Uuid::new_v4(),
            b"not json".to_vec(),
        )
        .await;
    }

    async fn next_reply(&mut self) -> Delivery {
        next_reply(&mut self.replies).await
    }

    /// The next reply's envelope.
    async fn next_answer(&mut self) -> Envelope<Outcome> {
        Envelope::<Outcome>::decode(&self.next_reply().await.data).expect("a reply envelope")
    }

    async fn available(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Stops the worker and checks that it stopped cleanly.
    async fn stop(self) {
        self.stop.cancel();
        let worker = self.worker.expect("the worker was started");
        let result = tokio::time::timeout(PATIENCE, worker)
            .await
            .expect("the worker stops when asked")
            .expect("the worker task did not panic");
        assert!(result.is_ok(), "worker ended with {result:?}");
        self.broker.close().await;
    }
}

fn reserve_mugs(saga_id: Uuid, quantity: u32) -> Envelope<Command> {
    reserve(saga_id, "MUG", quantity)
}

fn reserve(saga_id: Uuid, sku: &str, quantity: u32) -> Envelope<Command> {
    Envelope::command(saga_id, 1, reserve_of(&[(sku, quantity)]))
}

/// Makes the database refuse [`POISON`]'s reservations; the consumer of the
/// dead letters they become.
async fn refuse_poison(harness: &Harness) -> Consumer {
    refuse_in_database(&harness.db.pool, POISON).await;
    dead_letter_consumer(&harness.broker).await
}

/// A product whose reservation the database refuses.
const POISON: &str = "POISON";

/// Stocks `sku` and makes the database refuse any reservation line of it
/// with a data exception (SQLSTATE 22021, what a NUL in text gets). A
/// command that is valid on the wire but that the database never accepts:
/// a NUL, the way these tests used to make one, no longer decodes (a SKU
/// holds no control character).
async fn refuse_in_database(pool: &sqlx::PgPool, sku: &str) {
    sqlx::query(
        "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency,
             tax_category)
         VALUES ($1, 'refused by the database', 100, 100, 100, 'USD', 'general')",
    )
    .bind(sku)
    .execute(pool)
    .await
    .unwrap();
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_line() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.sku = '{sku}' THEN
                 RAISE EXCEPTION 'this test refuses %', NEW.sku USING ERRCODE = '22021';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_line BEFORE INSERT ON reservation_lines
             FOR EACH ROW EXECUTE FUNCTION refuse_line();"
    ))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_command_gets_the_same_reply_and_acts_once() {
    let mut harness = Harness::start().await;
    let saga = Uuid::new_v4();
    let command = reserve_mugs(saga, 2);

    harness.send(&command).await;
    harness.send(&command).await;
    let first = harness.next_reply().await;
    let second = harness.next_reply().await;

    let (a, b) = (
        Envelope::<Outcome>::decode(&first.data).expect("a reply envelope"),
        Envelope::<Outcome>::decode(&second.data).expect("a reply envelope"),
    );
    assert_eq!(a, b, "same reply message id and payload");
    assert_eq!(
        first.properties.message_id(),
        second.properties.message_id()
    );
    assert_eq!(
        first
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(a.message_id.to_string())
    );
    assert_eq!(a.saga_id, saga);
    assert_eq!(a.step, Step::Reserve);
    // One checkout is one trace: the reply carries the saga's trace id, and
    // the saga id as correlation id.
    let trace =
        saga_shared::broker::header(&first, traceparent::HEADER).expect("traceparent header");
    assert_eq!(
        traceparent::trace_id(&trace),
        Some(saga.simple().to_string().as_str())
    );
    assert_eq!(
        first
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(saga.to_string())
    );
    reserved(a.payload);
    assert_eq!(harness.available("MUG").await, 3, "stock taken once");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_fields_this_worker_does_not_know_is_served_not_dead_lettered() {
    // What an orchestrator one release ahead may send: fields added to the
    // envelope, the payload and a line.
    let mut harness = Harness::start().await;
    let command = reserve_mugs(Uuid::new_v4(), 1);
    let mut body: serde_json::Value = serde_json::from_slice(&command.encode()).unwrap();
    body["priority"] = "high".into();
    body["payload"]["hold_minutes"] = 30.into();
    body["payload"]["lines"][0]["gift_wrap"] = true.into();
    harness
        .publish(
            command.step.routing_key(),
            command.message_id,
            command.saga_id,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;

    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, command.saga_id);
    reserved(reply.payload);
    assert_eq!(harness.available("MUG").await, 4);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_with_its_reason_and_the_queue_keeps_flowing() {
    let mut harness = Harness::start().await;
    let mut dead_letters = dead_letter_consumer(&harness.broker).await;

    let poison_id = Uuid::new_v4();
    harness.publish_not_json(poison_id).await;
    let command = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&command).await;

    let dead = next_dead_letter(&mut dead_letters).await;
    assert_eq!(dead.data, b"not json");
    let error = header(&dead, ERROR_HEADER).expect("an x-error header");
    assert!(error.contains("not a JSON envelope"), "{error}");
    assert_eq!(
        dead.properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(poison_id.to_string())
    );

    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, command.saga_id);
    assert!(
        matches!(reply.payload, Outcome::Ok(_)),
        "{:?}",
        reply.payload
    );
    assert_eq!(harness.available("MUG").await, 4);
    harness.stop().await;
}

/// The inventory handler, except that it crashes on one saga's commands.
struct CrashesOn(Uuid);

impl Handler for CrashesOn {
    const KIND: WorkerKind = WorkerKind::Inventory;

    async fn handle(
        &self,
        conn: &mut sqlx::PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        if command.saga_id == self.0 {
            panic!("a handler bug, triggered by saga {}", self.0);
        }
        Inventory.handle(conn, command).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_crashing_its_handler_is_dead_lettered_by_the_delivery_limit() {
    let crashing = Uuid::new_v4();
    let mut harness = Harness::start_with(CrashesOn(crashing)).await;
    // The delivery limit is a queue policy: the explicit topology step sets it.
    saga_shared::queue_policies::Management::new(&amqp_url(), None)
        .unwrap()
        .apply(harness.broker.topology(), true)
        .await
        .expect("the management API keeps the policies");
    let mut dead_letters = dead_letter_consumer(&harness.broker).await;
    let poison = reserve_mugs(crashing, 1);
    harness.send(&poison).await;
    let good = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&good).await;

    // The good command is answered while the bad one is retried.
    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, good.saga_id);

    // The queue's delivery limit, not the worker, takes the bad one out.
    let dead = next_dead_letter(&mut dead_letters).await;
    assert_eq!(
        dead.properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(poison.message_id.to_string())
    );
    assert_eq!(
        header(&dead, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    // The worker is still alive and answering.
    let after = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&after).await;
    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, after.saga_id);
    assert_eq!(harness.available("MUG").await, 3);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_binary_serves_until_sigterm_and_exits_0() {
    let db = stocked("inventory_serve").await;
    let guard = TopologyGuard::new(&random_prefix());
    let broker = connect(&guard, &CancellationToken::new()).await;
    let mut replies = reply_copies(&broker, "test-replies").await;
    let mut service = worker_binary(env!("CARGO_BIN_EXE_inventory"), &db, &guard)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "pretty")
        .env("SHUTDOWN_GRACE_SECONDS", "5")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the inventory binary");
    // Its log, to show should it not stop.
    let mut log = service.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut log, &mut text).await;
        text
    });

    let command = reserve_mugs(Uuid::new_v4(), 2);
    send_command(&broker, &command).await;
    let reply = Envelope::<Outcome>::decode(&next_reply(&mut replies).await.data).unwrap();
    assert_eq!(reply.saga_id, command.saga_id);
    assert!(
        matches!(reply.payload, Outcome::Ok(_)),
        "{:?}",
        reply.payload
    );

    let pid = service.id().expect("the service is running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let status = match tokio::time::timeout(PATIENCE, service.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = service.kill().await;
            panic!(
                "the service did not stop on SIGTERM; its log:\n{}",
                log.await.unwrap()
            );
        }
    };
    assert_eq!(status.code(), Some(0), "{}", log.await.unwrap());
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_reopens_the_publishing_channel_and_keeps_the_consumers() {
    let mut harness = Harness::start().await;
    // RabbitMQ closes a channel that publishes to a missing exchange.
    let refused = harness
        .broker
        .publish(&Outgoing {
            exchange: format!("{}no-such-exchange", harness.broker.topology().prefix()),
            routing_key: "x".into(),
            body: b"{}".to_vec(),
            message_id: Uuid::new_v4(),
            saga_id: Uuid::new_v4(),
            message_type: "x".into(),
            traceparent: traceparent::for_saga(Uuid::new_v4()),
        })
        .await;
    assert!(refused.is_err(), "publishing to a missing exchange fails");
    // The next publish goes out on a new channel, and the consumers of the
    // same connection (the worker's, the test's reply queue) never noticed.
    let command = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&command).await;
    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, command.saga_id);
    assert!(harness.broker.is_connected());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_database_never_accepts_are_dead_lettered_not_held() {
    // More of them than the worker's prefetch (4): held, they would pin
    // every slot and the good command behind them would never be answered.
    let mut harness = Harness::start().await;
    let mut dead_letters = refuse_poison(&harness).await;
    let mut poison = Vec::new();
    for _ in 0..6 {
        let command = reserve(Uuid::new_v4(), POISON, 1);
        harness.send(&command).await;
        poison.push(command.message_id.to_string());
    }
    let good = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&good).await;

    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, good.saga_id);
    let mut dead = Vec::new();
    for _ in 0..poison.len() {
        let letter = next_dead_letter(&mut dead_letters).await;
        let error = header(&letter, ERROR_HEADER).expect("an x-error header");
        assert!(
            !error.contains('\0') && error.contains("22021"),
            "the reason names the data error: {error:?}"
        );
        dead.push(letter.properties.message_id().as_ref().unwrap().to_string());
    }
    dead.sort();
    poison.sort();
    assert_eq!(dead, poison, "each poison command dead-lettered once");
    assert_eq!(
        harness.available("MUG").await,
        4,
        "only the good command took stock"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_earlier_reserve_holds_nothing_after_the_saga_was_refused() {
    let mut harness = Harness::start().await;
    let saga = Uuid::new_v4();
    let reserve = |attempt| Envelope::command(saga, attempt, reserve_of(&[("MUG", 6)]));
    // Attempt 1 is delayed; its deadline passes and attempt 2 is refused.
    let (first, second) = (reserve(1), reserve(2));
    harness.send(&second).await;
    let refused = harness.next_answer().await;
    assert_eq!(refused.attempt, 2);
    assert!(is_out_of_stock(&refused.payload), "{:?}", refused.payload);
    // The saga ends compensated with nothing to release; then stock comes back.
    sqlx::query("UPDATE products SET on_hand = 10, available = 10 WHERE sku = 'MUG'")
        .execute(&harness.db.pool)
        .await
        .unwrap();
    // Attempt 1 finally runs: it must hold nothing, as nobody will release it.
    harness.send(&first).await;
    let late = harness.next_answer().await;
    assert_eq!(late.attempt, 1);
    assert!(
        is_out_of_stock(&late.payload),
        "the late attempt answers the saga's refusal: {:?}",
        late.payload
    );
    assert_eq!(harness.available("MUG").await, 10, "no stock held");
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'active'")
            .fetch_one(&harness.db.pool)
            .await
            .unwrap();
    assert_eq!(active, 0, "no active reservation left behind");
    harness.stop().await;
}

/// Replies until one for each of `sagas` came, each saga's reply once.
async fn one_reply_each(harness: &mut Harness, sagas: &[Uuid]) -> Vec<Envelope<Outcome>> {
    let mut replies = Vec::new();
    while replies.len() < sagas.len() {
        let reply = harness.next_answer().await;
        assert!(
            sagas.contains(&reply.saga_id),
            "a reply of another saga: {reply:?}"
        );
        assert!(
            replies
                .iter()
                .all(|r: &Envelope<Outcome>| r.saga_id != reply.saga_id),
            "saga {} answered twice",
            reply.saga_id
        );
        replies.push(reply);
    }
    replies
}

/// Inbox rows, and the transactions that wrote them: a row's `received_at`
/// is its transaction's start (`now()`), the same for every command of one
/// transaction (`xmin` is not: each command has a savepoint, whose writes
/// carry the subtransaction's id).
async fn inbox_commits(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT received_at) FROM inbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_are_ready_together_commit_together() {
    let mut harness = Harness::idle().await;
    sqlx::query("UPDATE products SET on_hand = 100, available = 100 WHERE sku = 'MUG'")
        .execute(&harness.db.pool)
        .await
        .unwrap();
    let commands: Vec<_> = (0..12).map(|_| reserve_mugs(Uuid::new_v4(), 1)).collect();
    for command in &commands {
        harness.send(command).await;
    }
    harness.run(Inventory, 16);
    let sagas: Vec<Uuid> = commands.iter().map(|c| c.saga_id).collect();
    for reply in one_reply_each(&mut harness, &sagas).await {
        reserved(reply.payload);
    }
    let (rows, commits) = inbox_commits(&harness.db.pool).await;
    assert_eq!(rows, 12, "each command handled once");
    assert!(commits < 12, "12 ready commands took {commits} commits");
    assert_eq!(harness.available("MUG").await, 88);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_in_a_batch_fails_alone() {
    let mut harness = Harness::idle().await;
    let mut dead_letters = refuse_poison(&harness).await;
    let good: Vec<_> = (0..4).map(|_| reserve_mugs(Uuid::new_v4(), 1)).collect();
    // The database refuses this one's data in the middle of the batch; the
    // not-JSON one never reaches the database.
    let refused = reserve(Uuid::new_v4(), POISON, 1);
    let garbage = Uuid::new_v4();
    harness.send(&good[0]).await;
    harness.send(&good[1]).await;
    harness.send(&refused).await;
    harness.publish_not_json(garbage).await;
    harness.send(&good[2]).await;
    harness.send(&good[3]).await;
    harness.run(Inventory, 16);

    let sagas: Vec<Uuid> = good.iter().map(|c| c.saga_id).collect();
    for reply in one_reply_each(&mut harness, &sagas).await {
        reserved(reply.payload);
    }
    let mut dead: Vec<String> = Vec::new();
    for _ in 0..2 {
        let letter = next_dead_letter(&mut dead_letters).await;
        dead.push(letter.properties.message_id().as_ref().unwrap().to_string());
    }
    dead.sort();
    let mut expected = vec![refused.message_id.to_string(), garbage.to_string()];
    expected.sort();
    assert_eq!(dead, expected, "each bad command dead-lettered, once");
    assert_eq!(
        harness.available("MUG").await,
        1,
        "the good ones took stock"
    );
    let (rows, commits) = inbox_commits(&harness.db.pool).await;
    assert_eq!(rows, 4, "only the good commands are in the inbox");
    assert!(
        commits < 4,
        "the good ones committed together, not {commits} times"
    );
    // Nothing else is answered: the next reply is the next command's.
    let probe = reserve_mugs(Uuid::new_v4(), 1);
    harness.send(&probe).await;
    let reply = harness.next_answer().await;
    assert_eq!(reply.saga_id, probe.saga_id);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_charges_are_batched_through_both_phases_and_charged_once_each() {
    use workers::payment::{self, Payment, PaymentConfig, Simulator};

    let db = migrated("payment_runtime", &payment::MIGRATOR).await;
    let guard = TopologyGuard::new(&random_prefix());
    let stop = CancellationToken::new();
    let broker = Arc::new(connect(&guard, &stop).await);
    let mut replies = reply_copies(&broker, "test-replies").await;
    let charges: Vec<Envelope<Command>> = (0..8)
        .map(|i| Envelope::command(Uuid::new_v4(), 1, charge_of(100 + i, "sim_approve")))
        .collect();
    for charge in &charges {
        send_command(&broker, charge).await;
    }
    // A duplicate delivery among them is answered the same, charged once.
    send_command(&broker, &charges[0]).await;
    let worker = tokio::spawn(run_worker_until_stopped(
        Payment::with_config(Simulator::new(db.pool.clone()), PaymentConfig::simulated()),
        db.pool.clone(),
        broker.clone(),
        16,
        stop.clone(),
    ));
    let mut answered: Vec<Envelope<Outcome>> = Vec::new();
    while answered.len() < charges.len() + 1 {
        let reply = Envelope::<Outcome>::decode(&next_reply(&mut replies).await.data).unwrap();
        assert!(
            matches!(reply.payload, Outcome::Ok(StepResult::Charged(_))),
            "{:?}",
            reply.payload
        );
        answered.push(reply);
    }
    let first: Vec<&Envelope<Outcome>> = answered
        .iter()
        .filter(|r| r.saga_id == charges[0].saga_id)
        .collect();
    assert_eq!(first.len(), 2, "the duplicate is answered too");
    assert_eq!(first[0], first[1], "with the same reply");
    let ledger = payment::ledger(&db.pool).await.unwrap();
    assert_eq!(ledger.len(), charges.len());
    assert!(ledger.iter().all(|line| line.charges == 1), "{ledger:?}");
    let (rows, commits): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT received_at) FROM inbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 8);
    assert!(
        commits < 8,
        "the intents of 8 ready charges took {commits} commits"
    );

    stop.cancel();
    let result = tokio::time::timeout(PATIENCE, worker)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    broker.close().await;
}
