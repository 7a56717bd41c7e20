//! Any service in any stack: the tax worker written in Python from the
//! message contract alone (`examples/tax-worker-python`) takes the Rust tax
//! worker's place beside the real orchestrator and the Rust inventory and
//! payment workers. Checkouts complete with exactly the totals the Rust tax
//! worker gives, a rejection by it is compensated, a duplicated command is
//! answered from its inbox, and poison is dead-lettered while it goes on.
//!
//! It needs `python3` (3.11 or later) with `venv`, and PyPI the first time:
//! `examples/tax-worker-python/setup` makes the worker's virtualenv under
//! the target directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use saga_protocol::messages::{CalculateTax, Command, Outcome, PricedLine, ShipTo, Step};
use saga_protocol::values::{Cents, Quantity};
use saga_protocol::{Envelope, WorkerKind};
use saga_shared::broker::{header, Broker, Outgoing};
use saga_shared::queue_policies::{Applied, Management};
use saga_shared::topology::Topology;
use saga_shared::traceparent;
use saga_testkit::{self as testing, Proxy, TestDatabase, TopologyGuard};
use serde_json::{json, Value};
use tokio::process::{Child, Command as Process};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{Setup, System, CATALOGUE};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tax-worker-python");

/// The rates both tax workers load: (country, region, category, basis
/// points); an empty region is the country's default.
const RATES: &[(&str, &str, &str, i64)] = &[
    ("US", "CA", "clothing", 725),
    ("US", "", "books", 300),
    ("US", "", "general", 600),
    ("US", "CA", "general", 825),
    ("US", "NY", "clothing", 450),
    // 1,500 x 0.10% = 1.5 cents: rounded half up to 2.
    ("US", "OR", "books", 10),
    ("DE", "", "general", 1900),
    ("DE", "", "clothing", 1900),
    ("DE", "", "books", 700),
];

fn rates_csv() -> String {
    let mut csv = String::from("country,region,category,rate_bp\n");
    for (country, region, category, rate_bp) in RATES {
        csv.push_str(&format!("{country},{region},{category},{rate_bp}\n"));
    }
    csv
}

/// The rate at a destination, worked out here from [`RATES`]: the region's
/// own, else the country default.
fn rate(country: &str, region: &str, category: &str) -> Option<i64> {
    let find = |region: &str| {
        RATES
            .iter()
            .find(|r| (r.0, r.1, r.2) == (country, region, category))
            .map(|r| r.3)
    };
    find(region).or_else(|| find(""))
}

/// (unit price, tax category) of a catalogue SKU.
fn product(sku: &str) -> (i64, &'static str) {
    let p = CATALOGUE
        .iter()
        .find(|p| p.0 == sku)
        .expect("a catalogue SKU");
    (p.2, p.4)
}

/// (subtotal, tax) of `items` shipped to `country`/`region`, each line's
/// tax rounded half up on its own, in integers; `None` when a line has no
/// rate.
fn expected_amounts(country: &str, region: &str, items: &[(&str, u32)]) -> Option<(i64, i64)> {
    let (mut subtotal, mut tax) = (0, 0);
    for (sku, quantity) in items {
        let (price, category) = product(sku);
        let amount = price * i64::from(*quantity);
        let rate_bp = rate(country, region, category)?;
        subtotal += amount;
        tax += (amount * rate_bp + 5_000) / 10_000;
    }
    Some((subtotal, tax))
}

fn checkout_body(country: &str, region: &str, items: &[(&str, u32)], payment: &str) -> Value {
    json!({
        "customer_id": "customer-py",
        "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        "ship_to": {"country": country, "region": region},
        "payment_method": payment,
    })
}

/// A `tax.calculate` command as the orchestrator would send it for `items`.
fn tax_command(country: &str, region: &str, items: &[(&str, u32)]) -> Envelope<Command> {
    let lines = items
        .iter()
        .map(|(sku, quantity)| {
            let (price, category) = product(sku);
            PricedLine {
                sku: sku.parse().unwrap(),
                quantity: Quantity::new(*quantity).unwrap(),
                unit_price_cents: Cents::new(price),
                tax_category: category.to_owned(),
            }
        })
        .collect();
    tax_command_of(country, region, lines)
}

fn tax_command_of(country: &str, region: &str, lines: Vec<PricedLine>) -> Envelope<Command> {
    Envelope::command(
        Uuid::new_v4(),
        1,
        Command::CalculateTax(CalculateTax {
            ship_to: ShipTo {
                country: country.to_owned(),
                region: region.to_owned(),
            },
            currency: "USD".parse().unwrap(),
            lines,
        }),
    )
}

/// What the Rust tax worker answers to `command`, on the system's own
/// (Rust-migrated) tax database loaded with the same rates: its reply body.
async fn rust_reply(system: &System, command: &Envelope<Command>) -> Value {
    workers::runtime::handle_command(&workers::tax::Tax, &system.tax_db.pool, command)
        .await
        .expect("the Rust tax worker answers")
}

/// The worker's virtualenv python, made (once, shared by every run) by the
/// example's own setup script.
async fn venv_python() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        let output = std::process::Command::new(Path::new(EXAMPLE).join("setup"))
            .stdin(Stdio::null())
            .output()
            .expect("examples/tax-worker-python/setup runs");
        assert!(
            output.status.success(),
            "examples/tax-worker-python/setup failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
    .await
    .unwrap()
}

/// The Python worker as a child process, its log in a file: shown when the
/// test fails, removed when it passes. Killed if the test ends without
/// stopping it.
struct PythonWorker {
    child: Option<Child>,
    log: PathBuf,
}

impl PythonWorker {
    fn spawn(python: &Path, env: &[(&str, String)], log: PathBuf) -> PythonWorker {
        let file = std::fs::File::create(&log).expect("the worker's log file");
        let child = Process::new(python)
            .arg(Path::new(EXAMPLE).join("worker.py"))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the Python tax worker starts");
        PythonWorker {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not stopped");
        child.try_wait().expect("its status").is_none()
    }

    /// SIGTERM, and it exits 0 having finished what it held.
    async fn terminate(mut self) {
        let mut child = self.child.take().expect("not stopped");
        let pid = child.id().expect("still running") as libc::pid_t;
        // SAFETY: kill(2) on a child we own; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("the Python worker did not exit after SIGTERM"))
            .unwrap();
        assert!(
            status.success(),
            "the Python worker exited with {status}:\n{}",
            self.log()
        );
        assert!(self.log().contains("stopped"), "{}", self.log());
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("--- the Python tax worker's log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One reply as it came off the broker.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    body: Vec<u8>,
    message_id: Option<String>,
    correlation_id: Option<String>,
    kind: Option<String>,
    content_type: Option<String>,
    delivery_mode: Option<u8>,
    traceparent: Option<String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a reply is JSON")
    }
}

/// A copy of every reply on the reply exchange (a queue of the test's own
/// bound beside the orchestrator's), by saga.
struct Replies {
    consumer: lapin::Consumer,
    by_saga: HashMap<String, Vec<Reply>>,
}

impl Replies {
    async fn listen(broker: &Broker) -> Replies {
        let consumer = testing::reply_copies(broker, "python-tax-test").await;
        Replies {
            consumer,
            by_saga: HashMap::new(),
        }
    }

    /// The first `n` replies to `saga_id`'s commands (deadline 30 s).
    async fn of(&mut self, saga_id: Uuid, n: usize) -> Vec<Reply> {
        let saga = saga_id.to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.by_saga.get(&saga).map_or(0, Vec::len) < n {
            let delivery = tokio::time::timeout_at(deadline, self.consumer.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {n} replies to saga {saga}"))
                .expect("the reply consumer goes on")
                .expect("a delivery");
            let p = &delivery.properties;
            let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
            let reply = Reply {
                body: delivery.data.clone(),
                message_id: text(p.message_id()),
                correlation_id: text(p.correlation_id()),
                kind: text(p.kind()),
                content_type: text(p.content_type()),
                delivery_mode: *p.delivery_mode(),
                traceparent: header(&delivery, traceparent::HEADER),
            };
            let key = reply.correlation_id.clone().unwrap_or_default();
            self.by_saga.entry(key).or_default().push(reply);
        }
        self.by_saga[&saga][..n].to_vec()
    }
}

/// A command published straight to the commands exchange, as the relay does.
fn outgoing(topology: &Topology, command: &Envelope<Command>, traceparent: &str) -> Outgoing {
    Outgoing {
        exchange: topology.command_exchange(),
        routing_key: command.step.routing_key().to_owned(),
        body: command.encode(),
        message_id: command.message_id,
        saga_id: command.saga_id,
        message_type: command.message_type.clone(),
        traceparent: traceparent.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_tax_worker_takes_the_rust_ones_place() {
    let python = venv_python().await;
    let system = System::start_setup(Setup {
        without_tax_worker: true,
        ..Setup::default()
    })
    .await;
    // The Python worker's own database, empty: it makes its own tables.
    let tax_db = TestDatabase::create("pytax").await;

    // The same rates file for both tax workers, each through its own import.
    let rates_file = std::env::temp_dir().join(format!("{}tax-rates.csv", system.prefix));
    std::fs::write(&rates_file, rates_csv()).unwrap();
    let import = Process::new(&python)
        .arg(Path::new(EXAMPLE).join("worker.py"))
        .arg("import")
        .arg(&rates_file)
        .env("DATABASE_URL", &tax_db.url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("worker.py import runs");
    let _ = std::fs::remove_file(&rates_file);
    assert!(
        import.status.success(),
        "worker.py import failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&import.stdout).trim(),
        format!("imported {0} tax rates ({0} new, 0 updated)", RATES.len())
    );
    let schema: Vec<i32> = sqlx::query_scalar("SELECT version FROM tax_worker_migrations")
        .fetch_all(&tax_db.pool)
        .await
        .expect("the Python worker made its own tables");
    assert_eq!(schema, [1]);
    workers::tax::rates::import(&system.tax_db.pool, "rates.csv", rates_csv().as_bytes())
        .await
        .expect("the Rust import takes the same file");

    // It reaches its database through a proxy the test can cut.
    let database = Proxy::start("127.0.0.1:5432").await;
    let mut worker = PythonWorker::spawn(
        &python,
        &[
            ("DATABASE_URL", database.url_for(&tax_db.url, 5432)),
            ("AMQP_URL", testing::amqp_url()),
            ("AMQP_PREFIX", system.prefix.clone()),
            ("PREFETCH", "8".to_owned()),
        ],
        std::env::temp_dir().join(format!("{}tax-worker-python.log", system.prefix)),
    );
    let stop = CancellationToken::new();
    let broker = system.connect_broker("python-tax-test", &stop).await;
    let topology = broker.topology().clone();
    let tax_queue = topology.command_queue(WorkerKind::Tax);
    testing::eventually(
        "the Python worker consuming tax commands",
        Duration::from_secs(60),
        || async {
            let channel = broker.channel().await.unwrap();
            let queue = channel
                .queue_declare(
                    tax_queue.as_str().into(),
                    QueueDeclareOptions::default().passive(),
                    FieldTable::default(),
                )
                .await;
            let _ = channel.close(200, "looked".into()).await;
            queue.ok().filter(|q| q.consumer_count() >= 1).map(|_| ())
        },
    )
    .await;
    assert!(worker.is_running(), "{}", worker.log());
    let mut replies = Replies::listen(&broker).await;

    // Poison first: dead-lettered, and everything behind it flows.
    let poison_saga = Uuid::new_v4();
    broker
        .publish(&Outgoing {
            exchange: topology.command_exchange(),
            routing_key: Step::CalculateTax.routing_key().to_owned(),
            body: b"{not json".to_vec(),
            message_id: Uuid::new_v4(),
            saga_id: poison_saga,
            message_type: "tax.calculate".into(),
            traceparent: traceparent::for_saga(poison_saga),
        })
        .await
        .unwrap();

    // Checkouts: approved ones across rates and regions, one without a
    // rate, one whose card is declined.
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, u32)],
        &'static str,
    );
    let approved: &[Case] = &[
        (
            "US",
            "CA",
            &[("TSHIRT", 3), ("MUG", 2), ("BOOK", 1)],
            "sim_approve",
        ),
        // NY has its own clothing rate; general is the US default.
        ("US", "NY", &[("TSHIRT", 1), ("MUG", 1)], "sim_approve"),
        ("DE", "", &[("BOOK", 2), ("MUG", 1)], "sim_approve"),
        ("US", "OR", &[("BOOK", 1), ("MUG", 1)], "sim_approve"),
    ];
    let no_rate: Case = ("US", "OR", &[("TSHIRT", 1)], "sim_approve");
    let declined: Case = ("US", "CA", &[("BOOK", 1)], "sim_decline");
    let place = |case: &Case| {
        let (system, body) = (&system, checkout_body(case.0, case.1, case.2, case.3));
        async move { system.place(&body).await }
    };
    let approved_ids = futures::future::join_all(approved.iter().map(place)).await;
    let no_rate_id = place(&no_rate).await;
    let declined_id = place(&declined).await;

    let mut charged = 0;
    for (case, id) in approved.iter().zip(&approved_ids) {
        let done = system.wait_final(id).await;
        let (subtotal, tax) = expected_amounts(case.0, case.1, case.2).expect("rates for it");
        assert_eq!(done["status"], "completed", "{case:?}: {done}");
        assert_eq!(done["subtotal_cents"], subtotal, "{case:?}: {done}");
        assert_eq!(done["tax_cents"], tax, "{case:?}: {done}");
        assert_eq!(done["total_cents"], subtotal + tax, "{case:?}: {done}");
        // Exactly what the Rust tax worker makes of the same command.
        let rust = rust_reply(&system, &tax_command(case.0, case.1, case.2)).await;
        assert_eq!(
            rust["payload"]["result"]["tax_cents"], tax,
            "{case:?}: {rust}"
        );
        charged += subtotal + tax;
    }
    // 1,500 x 0.10% = 1.5: half up.
    assert_eq!(
        expected_amounts("US", "OR", &[("BOOK", 1)]),
        Some((1_500, 2))
    );

    let rejected = system.wait_final(&no_rate_id).await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(rejected["reason"], "no_tax_rate", "{rejected}");
    let declined_done = system.wait_final(&declined_id).await;
    assert_eq!(declined_done["status"], "rejected", "{declined_done}");
    assert_eq!(
        declined_done["reason"], "payment_declined",
        "{declined_done}"
    );
    system
        .wait_status(
            &[no_rate_id.clone(), declined_id.clone()],
            "compensated",
            Duration::from_secs(30),
        )
        .await;
    // Stock: what completed is held, what was rejected was given back.
    assert_eq!(system.available("TSHIRT").await, 100 - 3 - 1);
    assert_eq!(system.available("MUG").await, 10 - 2 - 1 - 1 - 1);
    assert_eq!(system.available("BOOK").await, 50 - 1 - 2 - 1);
    assert_eq!(system.net_charged().await, charged);

    // The same command twice, as a redelivery or a duplicate publish would
    // bring it: one inbox row, and both replies the same, byte for byte.
    let duplicated = tax_command("US", "CA", &[("TSHIRT", 2), ("MUG", 3), ("BOOK", 1)]);
    let sent_traceparent = traceparent::for_saga(duplicated.saga_id);
    for _ in 0..2 {
        broker
            .publish(&outgoing(&topology, &duplicated, &sent_traceparent))
            .await
            .unwrap();
    }
    let both = replies.of(duplicated.saga_id, 2).await;
    assert_eq!(
        both[0], both[1],
        "a duplicate is answered with the recorded reply"
    );
    let reply = &both[0];
    assert_eq!(
        reply.message_id.as_deref(),
        reply.json()["message_id"].as_str()
    );
    assert_eq!(
        reply.correlation_id.as_deref(),
        Some(duplicated.saga_id.to_string().as_str())
    );
    assert_eq!(reply.kind.as_deref(), Some("tax.calculate.reply"));
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    assert_eq!(reply.delivery_mode, Some(2), "persistent");
    assert_eq!(
        reply.traceparent.as_deref(),
        Some(sent_traceparent.as_str())
    );
    let inbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(duplicated.message_id)
        .fetch_one(&tax_db.pool)
        .await
        .unwrap();
    assert_eq!(inbox_rows, 1, "the duplicate acted once");

    // Its replies, and the Python worker's replies to commands no checkout
    // sends, against the Rust worker's: the same answers, and envelopes the
    // Rust contract decodes.
    let mut huge = tax_command("US", "CA", &[("MUG", 1)]);
    if let Command::CalculateTax(request) = &mut huge.payload {
        request.lines[0].quantity = Quantity::new(u32::MAX).unwrap();
        request.lines[0].unit_price_cents = Cents::new(i64::MAX / 2);
    }
    let mut negative = tax_command("US", "CA", &[("MUG", 1), ("BOOK", 1)]);
    if let Command::CalculateTax(request) = &mut negative.payload {
        request.lines[1].unit_price_cents = Cents::new(-1);
    }
    let compared = [
        duplicated.clone(),
        // Not normalized by an orchestrator: trimmed and upper-cased here.
        tax_command(" us", "ny ", &[("TSHIRT", 1), ("BOOK", 2)]),
        // No clothing rate in OR, nor a US default.
        tax_command("US", "OR", &[("TSHIRT", 1), ("MUG", 1)]),
        // No rate at all in JP.
        tax_command("JP", "", &[("BOOK", 1), ("MUG", 1)]),
        tax_command_of("US", "CA", Vec::new()),
        huge,
        negative,
    ];
    for command in &compared[1..] {
        broker
            .publish(&outgoing(
                &topology,
                command,
                &traceparent::for_saga(command.saga_id),
            ))
            .await
            .unwrap();
    }
    let mut outcomes = Vec::new();
    for command in &compared {
        let from_python = replies.of(command.saga_id, 1).await.remove(0);
        let from_rust = rust_reply(&system, command).await;
        let decoded = Envelope::<Outcome>::decode(&from_python.body)
            .unwrap_or_else(|e| panic!("the Rust contract reads the Python reply: {e}"));
        assert_eq!(decoded.saga_id, command.saga_id);
        assert_eq!(decoded.step, Step::CalculateTax);
        assert_eq!(decoded.attempt, command.attempt);
        let payload = from_python.json()["payload"].clone();
        assert_eq!(
            payload, from_rust["payload"],
            "Python and Rust answer {:?} alike",
            command.payload
        );
        outcomes.push(payload);
    }
    assert_eq!(outcomes[0]["outcome"], "ok");
    assert_eq!(outcomes[1]["result"]["lines"][0]["rate_bp"], 450);
    assert_eq!(outcomes[2]["reason"], "no_tax_rate");
    assert_eq!(
        outcomes[2]["detail"],
        "no tax rate for category `clothing` in US-OR (nor a default for US)"
    );
    assert_eq!(outcomes[3]["reason"], "no_tax_rate");
    assert_eq!(outcomes[4]["result"]["tax_cents"], 0);
    assert_eq!(outcomes[5]["reason"], "invalid_command");
    assert_eq!(outcomes[6]["reason"], "invalid_command");

    // The poison, dead-lettered with its reason and where it came from;
    // the worker went on and is still running.
    let dead: Value = system
        .dead_letters_for(poison_saga, Duration::from_secs(30))
        .await
        .remove(0);
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .starts_with("body is not a JSON envelope"),
        "{dead}"
    );
    assert_eq!(dead["routing_key"], "tax.calculate", "{dead}");
    assert_eq!(
        dead["original_exchange"],
        topology.command_exchange(),
        "{dead}"
    );
    assert!(worker.is_running(), "{}", worker.log());

    // Its database goes away: a command is held (not nacked, not
    // dead-lettered) and answered once the database is back.
    database.cut();
    let during = system
        .place(&checkout_body("US", "CA", &[("BOOK", 1)], "sim_approve"))
        .await;
    testing::eventually(
        "the Python worker holding a command while its database is away",
        Duration::from_secs(30),
        // Twice: the lost connection, then a reconnect refused.
        || async { (worker.log().matches("holding it").count() >= 2).then_some(()) },
    )
    .await;
    assert_eq!(
        system.get(&format!("/v1/checkouts/{during}")).await.1["status"],
        "pending"
    );
    database.restore();
    let done = system.wait_final(&during).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["tax_cents"], 45, "{done}");
    charged += 1_545;
    assert_eq!(system.net_charged().await, charged);

    // Every tax command answered: an inbox row for each saga.
    let tax_commands = approved.len() + 3 + compared.len();
    let rows: i64 = sqlx::query_scalar("SELECT count(DISTINCT saga_id) FROM inbox")
        .fetch_one(&tax_db.pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, tax_commands);

    worker.terminate().await;
    drop(replies);
    broker.close().await;
    system.stop().await;
}

/// Started first, on a prefix nothing has declared yet, the Python worker
/// makes the topology and the queue policies exactly as the Rust services
/// would: they then start beside it without a conflict, and find the
/// policies as they want them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_the_python_worker_declares_is_the_rust_services_own() {
    let python = venv_python().await;
    let prefix = testing::random_prefix();
    let _topology = TopologyGuard::new(&prefix);
    let tax_db = TestDatabase::create("pytax").await;
    let mut worker = PythonWorker::spawn(
        &python,
        &[
            ("DATABASE_URL", tax_db.url.clone()),
            ("AMQP_URL", testing::amqp_url()),
            ("AMQP_PREFIX", prefix.clone()),
        ],
        std::env::temp_dir().join(format!("{prefix}tax-worker-python.log")),
    );
    let topology = Topology::new(&prefix);
    let management = Management::new(&testing::amqp_url(), None).unwrap();
    let http = reqwest::Client::new();
    let queue_url = |queue: &str| {
        format!(
            "{}/api/queues/%2F/{}",
            management.endpoint(),
            queue.replace('%', "%25")
        )
    };
    let consuming = |queue: String| {
        let (http, url) = (&http, queue_url(&queue));
        async move {
            let request = http.get(url).basic_auth("guest", Some("guest"));
            let queue = testing::try_json_answer(request).await?;
            (queue["consumers"].as_u64() >= Some(1)).then_some(queue)
        }
    };
    let tax_queue = testing::eventually(
        "the Python worker consuming the queue it declared",
        Duration::from_secs(60),
        || consuming(topology.command_queue(WorkerKind::Tax)),
    )
    .await;
    assert!(worker.is_running(), "{}", worker.log());
    // Declared as the Rust services declare a new queue: the queue type
    // alone, the rest left to the policy.
    assert_eq!(
        tax_queue["arguments"],
        json!({"x-queue-type": "quorum"}),
        "{tax_queue:#}"
    );
    assert_eq!(tax_queue["durable"], true);
    // The Rust services' own declaration and policies, now: nothing to
    // change, nothing in conflict.
    let stop = CancellationToken::new();
    let broker = Broker::connect(
        &testing::amqp_url(),
        topology.clone(),
        "rust-after-python",
        &stop,
    )
    .await
    .expect("the Rust declaration accepts what the Python worker declared");
    let applied = management.apply(&topology, false).await.unwrap();
    assert!(
        applied.iter().all(|a| matches!(a, Applied::Unchanged(_))),
        "the Python worker made the Rust services' policies: {applied:?}"
    );
    testing::eventually(
        "the policy applied to the tax queue",
        Duration::from_secs(30),
        || async {
            let queue = consuming(topology.command_queue(WorkerKind::Tax)).await?;
            (queue["policy"] == format!("{prefix}checkout-work-queues")).then_some(())
        },
    )
    .await;
    broker.close().await;
    worker.terminate().await;
}

/// The worker's own unit tests (contract, tax rule, import), with no
/// services, in its virtualenv.
#[tokio::test]
async fn the_python_tax_workers_unit_tests_pass() {
    let python = venv_python().await;
    let output = Process::new(python)
        .args(["-m", "unittest", "--quiet"])
        .current_dir(EXAMPLE)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("python -m unittest runs");
    assert!(
        output.status.success(),
        "the Python unit tests failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
