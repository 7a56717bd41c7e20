//! The auditor against real databases: a consistent world passes, and
//! breaking any one fact is reported as exactly that invariant.

use std::process::Output;
use std::time::Duration;

use orchestrator::saga::{CheckoutRequest, Saga, SagaStatus};
use saga_protocol::messages::{LineRequest, LineTax, PricedLine, Reserved, ShipTo, TaxCalculated};
use saga_protocol::values::{Cents, Quantity};
use saga_protocol::Step;
use saga_testkit::TestDatabase;
use uuid::Uuid;

const COMPLETED: Uuid = Uuid::from_u128(0x01);
const COMPENSATED: Uuid = Uuid::from_u128(0x02);
const CANCELLED: Uuid = Uuid::from_u128(0x03);
const SUSPENDED: Uuid = Uuid::from_u128(0x04);
const RUNNING_WITH_DEADLINE: Uuid = Uuid::from_u128(0x05);
const RUNNING_WITH_OUTBOX: Uuid = Uuid::from_u128(0x06);
/// Compensated after a reserve timed out: the release left a tombstone.
const COMPENSATED_TOMBSTONE: Uuid = Uuid::from_u128(0x07);

const PRICES: [(&str, i64); 2] = [("sku-a", 1000), ("sku-b", 250)];

fn price(sku: &str) -> i64 {
    PRICES.iter().find(|(s, _)| *s == sku).unwrap().1
}

/// One database per service, as deployed.
struct World {
    orchestrator: TestDatabase,
    inventory: TestDatabase,
    payment: TestDatabase,
}

/// A saga as the engine stores it, priced and taxed (10% per line) as far as
/// `progress` says it got.
fn saga(id: Uuid, status: SagaStatus, items: &[(&str, u32)], progress: &[Step]) -> Saga {
    let priced: Vec<PricedLine> = items
        .iter()
        .map(|(sku, quantity)| PricedLine {
            sku: sku.parse().unwrap(),
            quantity: Quantity::new(*quantity).unwrap(),
            unit_price_cents: Cents::new(price(sku)),
            tax_category: "standard".into(),
        })
        .collect();
    let tax_lines: Vec<LineTax> = priced
        .iter()
        .map(|l| LineTax {
            sku: l.sku.clone(),
            rate_bp: 1000,
            tax_cents: Cents::new(l.amount_cents().unwrap().get() / 10),
        })
        .collect();
    Saga {
        id,
        status,
        request: CheckoutRequest {
            customer_id: "c-1".parse().unwrap(),
            items: items
                .iter()
                .map(|(sku, quantity)| LineRequest::parse(sku, *quantity).unwrap())
                .collect(),
            ship_to: ShipTo {
                country: "US".into(),
                region: "CA".into(),
            },
            payment_method: "sim_approve".into(),
        },
        current: None,
        attempt: 1,
        series_start: 1,
        suspended_from: None,
        cancelled: status == SagaStatus::Cancelled,
        completed: progress.to_vec(),
        compensations: vec![],
        reserved: progress.contains(&Step::Reserve).then(|| Reserved {
            currency: "USD".parse().unwrap(),
            lines: priced,
        }),
        tax: progress
            .contains(&Step::CalculateTax)
            .then(|| TaxCalculated {
                tax_cents: Cents::checked_sum(tax_lines.iter().map(|l| l.tax_cents)).unwrap(),
                lines: tax_lines,
            }),
        charge: None,
        reason: None,
        detail: None,
        last_error: None,
    }
}

impl World {
    /// Every kind of saga, with the reservations and payments its status
    /// implies and stock that adds up.
    async fn consistent() -> World {
        let world = World {
            orchestrator: TestDatabase::create("audit_orch").await,
            inventory: TestDatabase::create("audit_inv").await,
            payment: TestDatabase::create("audit_pay").await,
        };
        orchestrator::app::MIGRATOR
            .run(&world.orchestrator.pool)
            .await
            .unwrap();
        workers::inventory::MIGRATOR
            .run(&world.inventory.pool)
            .await
            .unwrap();
        workers::payment::MIGRATOR
            .run(&world.payment.pool)
            .await
            .unwrap();

        use SagaStatus::*;
        use Step::*;
        let all = [Reserve, CalculateTax, Charge];
        let completed = saga(
            COMPLETED,
            Completed,
            &[("sku-a", 1), ("sku-b", 1), ("sku-a", 1)],
            &all,
        );
        let total = world.insert_saga(&completed, None).await;
        world
            .reserve(COMPLETED, true, &completed.request.items)
            .await;
        world.pay(COMPLETED, "charged", total, 0).await;

        let declined = saga(
            COMPENSATED,
            Compensated,
            &[("sku-b", 2)],
            &[Reserve, CalculateTax],
        );
        world.insert_saga(&declined, None).await;
        world
            .reserve(COMPENSATED, false, &declined.request.items)
            .await;
        world.pay(COMPENSATED, "declined", 0, 0).await;

        let cancelled = saga(CANCELLED, Cancelled, &[("sku-a", 1)], &all);
        let total = world.insert_saga(&cancelled, None).await;
        world
            .reserve(CANCELLED, false, &cancelled.request.items)
            .await;
        world.pay(CANCELLED, "refunded", total, total).await;

        let mut parked = saga(
            SUSPENDED,
            Suspended,
            &[("sku-a", 1)],
            &[Reserve, CalculateTax],
        );
        parked.current = Some(Charge);
        parked.suspended_from = Some(Running);
        world.insert_saga(&parked, None).await;
        world.reserve(SUSPENDED, true, &parked.request.items).await;
        world.pay(SUSPENDED, "charging", 0, 0).await;

        let mut taxing = saga(RUNNING_WITH_DEADLINE, Running, &[("sku-b", 1)], &[Reserve]);
        taxing.current = Some(CalculateTax);
        world.insert_saga(&taxing, Some(30)).await;
        world
            .reserve(RUNNING_WITH_DEADLINE, true, &taxing.request.items)
            .await;

        // Awaiting a delayed retry of its reserve: no deadline until it is sent.
        let mut retrying = saga(RUNNING_WITH_OUTBOX, Running, &[("sku-a", 3)], &[]);
        retrying.current = Some(Reserve);
        retrying.attempt = 2;
        world.insert_saga(&retrying, None).await;
        sqlx::query(
            "INSERT INTO outbox (message_id, saga_id, routing_key, message_type, body, traceparent,
                                 not_before)
             VALUES ($1, $2, 'inventory.reserve', 'inventory.reserve', '{}', '', now() + interval '5 seconds')",
        )
        .bind(Uuid::new_v4())
        .bind(RUNNING_WITH_OUTBOX)
        .execute(&world.orchestrator.pool)
        .await
        .unwrap();

        let timed_out = saga(COMPENSATED_TOMBSTONE, Compensated, &[("sku-b", 1)], &[]);
        world.insert_saga(&timed_out, None).await;
        world.reserve(COMPENSATED_TOMBSTONE, false, &[]).await;

        // Held: sku-a 2 (completed) + 1 (suspended); sku-b 1 (completed) + 1 (running).
        for (sku, on_hand, held) in [("sku-a", 100, 3), ("sku-b", 50, 2)] {
            sqlx::query("UPDATE products SET on_hand = $2, available = $2 - $3 WHERE sku = $1")
                .bind(sku)
                .bind(on_hand)
                .bind(held)
                .execute(&world.inventory.pool)
                .await
                .unwrap();
        }
        world
    }

    /// Inserts `saga` (its deadline `deadline_in` seconds from now) and
    /// returns its total, or 0 before it is known.
    async fn insert_saga(&self, saga: &Saga, deadline_in: Option<i64>) -> i64 {
        sqlx::query(
            "INSERT INTO sagas (id, status, current_step, attempt, state, idempotency_key,
                                request_hash, deadline_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'hash',
                     now() + $7::int8 * interval '1 second')",
        )
        .bind(saga.id)
        .bind(saga.status.as_str())
        .bind(saga.current.map(|s| s.routing_key()))
        .bind(saga.attempt as i32)
        .bind(serde_json::to_value(saga).unwrap())
        .bind(format!("key-{}", saga.id))
        .bind(deadline_in)
        .execute(&self.orchestrator.pool)
        .await
        .unwrap();
        saga.total_cents().map_or(0, Cents::get)
    }

    /// A reservation with one line per request line, as the worker writes it.
    async fn reserve(&self, saga_id: Uuid, active: bool, items: &[LineRequest]) {
        for (sku, unit_price) in PRICES {
            sqlx::query(
                "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency,
                                       tax_category)
                 VALUES ($1, $1, 0, 0, $2, 'USD', 'standard') ON CONFLICT (sku) DO NOTHING",
            )
            .bind(sku)
            .bind(unit_price)
            .execute(&self.inventory.pool)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO reservations (saga_id, status, currency) VALUES ($1, $2, 'USD')")
            .bind(saga_id)
            .bind(if active { "active" } else { "released" })
            .execute(&self.inventory.pool)
            .await
            .unwrap();
        for (position, item) in items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO reservation_lines (saga_id, position, sku, quantity, unit_price_cents,
                                                tax_category)
                 VALUES ($1, $2, $3, $4, $5, 'standard')",
            )
            .bind(saga_id)
            .bind(position as i32)
            .bind(item.sku.as_str())
            .bind(item.quantity.get() as i32)
            .bind(price(item.sku.as_str()))
            .execute(&self.inventory.pool)
            .await
            .unwrap();
        }
    }

    async fn pay(&self, saga_id: Uuid, status: &str, amount: i64, refunded: i64) {
        sqlx::query(
            "INSERT INTO payments (saga_id, status, amount_cents, refunded_cents, currency,
                                   provider_reference, rejection_reason)
             VALUES ($1, $2, $3, $4, 'USD', $5,
                     CASE WHEN $2 = 'declined' THEN 'payment_declined' END)",
        )
        .bind(saga_id)
        .bind(status)
        .bind(amount)
        .bind(refunded)
        .bind((amount > 0).then(Uuid::new_v4))
        .execute(&self.payment.pool)
        .await
        .unwrap();
        // The provider's side of the same story.
        match status {
            "charged" | "refunded" if amount > 0 => {
                self.book(saga_id, Some("charge"), "charge", "approved", amount)
                    .await;
            }
            "declined" => {
                self.book(saga_id, Some("charge"), "charge", "declined", 0)
                    .await
            }
            _ => {}
        }
        if refunded > 0 {
            self.book(saga_id, Some("refund"), "refund", "approved", refunded)
                .await;
        }
    }

    /// An entry of the provider's ledger; `key` is the operation prefix of
    /// its idempotency key (`charge:<saga>`), `None` for a request without one.
    async fn book(
        &self,
        saga_id: Uuid,
        key: Option<&str>,
        operation: &str,
        outcome: &str,
        amount: i64,
    ) {
        sqlx::query(
            "INSERT INTO provider_ledger (reference, idempotency_key, saga_id, operation, outcome,
                                          amount_cents, currency, payment_method)
             VALUES ($1, $2, $3, $4, $5, $6, 'USD', 'sim_approve')",
        )
        .bind(Uuid::new_v4())
        .bind(key.map(|k| format!("{k}:{saga_id}")))
        .bind(saga_id)
        .bind(operation)
        .bind(outcome)
        .bind(amount)
        .execute(&self.payment.pool)
        .await
        .unwrap();
    }

    async fn run(&self, extra: &[(&str, &str)]) -> Output {
        let mut command = auditor_command();
        command
            .env("ORCHESTRATOR_DATABASE_URL", &self.orchestrator.url)
            .env("INVENTORY_DATABASE_URL", &self.inventory.url)
            .env("PAYMENT_DATABASE_URL", &self.payment.url);
        for (name, value) in extra {
            command.env(name, value);
        }
        command.output().await.unwrap()
    }

    async fn execute(&self, db: &TestDatabase, sql: &str) {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
}

/// The binary, with none of its variables inherited from this environment.
fn auditor_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_auditor"));
    for name in [
        "ORCHESTRATOR_DATABASE_URL",
        "INVENTORY_DATABASE_URL",
        "PAYMENT_DATABASE_URL",
        "AUDIT_DEADLINE_GRACE_SECONDS",
    ] {
        command.env_remove(name);
    }
    command
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The auditor's output says `detail`, which names what it found.
fn assert_reports(output: &Output, detail: &str) {
    let all = text(output);
    assert!(all.contains(detail), "{all}");
}

/// Exit code 1, and every violation is of `invariant`, one of them at `saga`
/// and `sku`.
fn assert_only(output: &Output, invariant: &str, saga: Option<Uuid>, sku: Option<&str>) {
    let all = text(output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let violations: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("VIOLATION "))
        .collect();
    let prefix = format!("VIOLATION {invariant} ");
    assert!(violations.iter().all(|l| l.starts_with(&prefix)), "{all}");
    let place = format!(
        "saga={} sku={}",
        saga.map_or("-".to_owned(), |s| s.to_string()),
        sku.unwrap_or("-")
    );
    assert!(
        violations.iter().any(|l| l.contains(&place)),
        "{place}\n{all}"
    );
    let summary = format!("{} violations", violations.len());
    assert!(stdout.trim_end().ends_with(&summary), "{all}");
}

/// The auditor's output on a consistent world after `statements` ran in
/// the one of its databases that `database` picks.
async fn audit_after(database: fn(&World) -> &TestDatabase, statements: &[&str]) -> Output {
    let world = World::consistent().await;
    for statement in statements {
        world.execute(database(&world), statement).await;
    }
    world.run(&[]).await
}

#[tokio::test]
async fn a_consistent_world_passes() {
    let world = World::consistent().await;
    let output = world.run(&[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "audited 7 sagas (completed 1, compensated 2, cancelled 1, suspended 1, in flight 2), \
         2 skus: 0 violations\n"
    );
}

#[tokio::test]
async fn completed_reserved() {
    // One more sku-b held than requested, with stock still adding up.
    let output = audit_after(
        |world| &world.inventory,
        &[
            "UPDATE reservation_lines SET quantity = 2
             WHERE saga_id = '00000000-0000-0000-0000-000000000001' AND sku = 'sku-b'",
            "UPDATE products SET available = available - 1 WHERE sku = 'sku-b'",
        ],
    )
    .await;
    assert_only(
        &output,
        "completed-reserved",
        Some(COMPLETED),
        Some("sku-b"),
    );
    assert_reports(&output, "requested quantity 1, active reservation holds 2");
}

#[tokio::test]
async fn completed_charged() {
    let output = audit_after(
        |world| &world.payment,
        &["UPDATE payments SET amount_cents = 2 * amount_cents
             WHERE saga_id = '00000000-0000-0000-0000-000000000001'"],
    )
    .await;
    assert_only(&output, "completed-charged", Some(COMPLETED), None);
    // 2 x 1000 + 250, plus 10% tax per line.
    assert_reports(&output, "expected charge 2475 USD cents (subtotal 2250 + tax 225), found charged 4950 USD refunded 0");
}

#[tokio::test]
async fn a_doubled_charge_in_the_provider_ledger() {
    let world = World::consistent().await;
    // What the old payment worker did after a crash between the provider's
    // approval and its commit: a second charge, under no key of its own.
    world
        .book(COMPLETED, None, "charge", "approved", 2_475)
        .await;
    let output = world.run(&[]).await;
    assert_only(&output, "ledger-charged", Some(COMPLETED), None);
    assert_reports(&output, "expected one charge of 2475 cents at the provider, its ledger shows 2 charges of 4950 cents, 0 refunds of 0 cents");
}

#[tokio::test]
async fn a_charge_at_the_provider_for_a_rejected_saga() {
    // The payment table says declined, yet the provider took the money.
    let output = audit_after(
        |world| &world.payment,
        &[
            "UPDATE provider_ledger SET outcome = 'approved', amount_cents = 550
             WHERE saga_id = '00000000-0000-0000-0000-000000000002'",
        ],
    )
    .await;
    assert_only(&output, "ledger-net-zero", Some(COMPENSATED), None);
    assert_reports(&output, "status compensated, yet the provider's ledger shows 1 charges of 550 cents, 0 refunds of 0 cents (net 550)");
}

#[tokio::test]
async fn money_moved_at_the_provider_for_an_unknown_saga() {
    let world = World::consistent().await;
    let stranger = Uuid::from_u128(0x97);
    world
        .book(stranger, Some("charge"), "charge", "approved", 100)
        .await;
    // Voided by a refund before any charge: nothing moved, nothing to report.
    world
        .book(Uuid::from_u128(0x96), Some("charge"), "charge", "voided", 0)
        .await;
    let output = world.run(&[]).await;
    assert_only(&output, "orphan-ledger", Some(stranger), None);
}

#[tokio::test]
async fn undone_holds_nothing() {
    let output = audit_after(
        |world| &world.payment,
        &["UPDATE payments SET status = 'charged', refunded_cents = 0
             WHERE saga_id = '00000000-0000-0000-0000-000000000003'"],
    )
    .await;
    assert_only(&output, "undone-holds-nothing", Some(CANCELLED), None);
}

#[tokio::test]
async fn stock_conserved() {
    let output = audit_after(
        |world| &world.inventory,
        &["UPDATE products SET available = available - 1 WHERE sku = 'sku-a'"],
    )
    .await;
    assert_only(&output, "stock-conserved", None, Some("sku-a"));
}

#[tokio::test]
async fn not_stuck() {
    let world = World::consistent().await;
    world
        .execute(
            &world.orchestrator,
            "UPDATE sagas SET deadline_at = now() - interval '10 seconds'
             WHERE id = '00000000-0000-0000-0000-000000000005'",
        )
        .await;
    // Ten seconds late is within the default grace: the timer may be busy.
    let output = world.run(&[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let output = world.run(&[("AUDIT_DEADLINE_GRACE_SECONDS", "5")]).await;
    assert_only(&output, "not-stuck", Some(RUNNING_WITH_DEADLINE), None);

    // Without its delayed retry, the other running saga awaits nothing.
    world
        .execute(&world.orchestrator, "DELETE FROM outbox")
        .await;
    let output = world.run(&[]).await;
    assert_only(&output, "not-stuck", Some(RUNNING_WITH_OUTBOX), None);
}

#[tokio::test]
async fn idempotency_unique() {
    // The unique index would refuse this; the auditor must not rely on it.
    let output = audit_after(
        |world| &world.orchestrator,
        &[
            "ALTER TABLE sagas DROP CONSTRAINT sagas_idempotency_key_key",
            "UPDATE sagas SET idempotency_key = 'key-00000000-0000-0000-0000-000000000001'
             WHERE id = '00000000-0000-0000-0000-000000000006'",
        ],
    )
    .await;
    assert_only(&output, "idempotency-unique", Some(COMPLETED), None);
}

#[tokio::test]
async fn orphan_reservation_and_payment() {
    let world = World::consistent().await;
    let orphan = Uuid::from_u128(0x99);
    let tombstone = Uuid::from_u128(0x98);
    // Released with lines: it once held stock, so it is no tombstone, yet
    // holds nothing now, so only the orphan check can see it.
    world
        .reserve(orphan, false, &[LineRequest::parse("sku-a", 1).unwrap()])
        .await;
    world.reserve(tombstone, false, &[]).await;
    let output = world.run(&[]).await;
    assert_only(&output, "orphan-reservation", Some(orphan), None);

    let world = World::consistent().await;
    world.pay(orphan, "charged", 500, 0).await;
    world.pay(tombstone, "refunded", 0, 0).await;
    // The payment table's word alone; the provider's is orphan-ledger's.
    world
        .execute(
            &world.payment,
            "DELETE FROM provider_ledger WHERE saga_id = '00000000-0000-0000-0000-000000000099'",
        )
        .await;
    let output = world.run(&[]).await;
    assert_only(&output, "orphan-payment", Some(orphan), None);
    assert!(!text(&output).contains(&tombstone.to_string()));
}

#[tokio::test]
async fn the_library_audits_through_read_only_sessions() {
    let world = World::consistent().await;
    let config = auditor::Config::from_args(auditor::config::Args {
        orchestrator_database_url: Some(world.orchestrator.url.clone()),
        inventory_database_url: Some(world.inventory.url.clone()),
        payment_database_url: Some(world.payment.url.clone()),
        ..auditor::config::Args::default()
    })
    .unwrap();
    let sources = auditor::Sources::connect(&config).await.unwrap();
    assert_eq!(sources.deadline_grace, Duration::from_secs(30));
    let report = auditor::audit(&sources).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.summary,
        auditor::Summary {
            sagas: 7,
            completed: 1,
            compensated: 2,
            cancelled: 1,
            suspended: 1,
            in_flight: 2,
            skus: 2,
            archived: 0,
        }
    );
    let write = sqlx::query("DELETE FROM payments")
        .execute(&sources.payment)
        .await
        .unwrap_err();
    assert!(
        write.to_string().contains("read-only transaction"),
        "{write}"
    );
}

#[tokio::test]
async fn a_missing_variable_is_a_configuration_error() {
    let output = auditor_command()
        .env(
            "ORCHESTRATOR_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1/o",
        )
        .env("PAYMENT_DATABASE_URL", "postgres://127.0.0.1/p")
        .output()
        .await
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{all}");
    assert!(stderr.contains("INVENTORY_DATABASE_URL"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");

    let output = auditor_command()
        .args(["--orchestrator-database-url", "mysql://u:hunter2@x/o"])
        .args(["--inventory-database-url", "postgres://x/i"])
        .args(["--payment-database-url", "postgres://x/p"])
        .output()
        .await
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("ORCHESTRATOR_DATABASE_URL"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test]
async fn an_unreachable_database_exits_3() {
    let output = auditor_command()
        // Nothing listens on port 1.
        .env(
            "ORCHESTRATOR_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/o",
        )
        .env(
            "INVENTORY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/i",
        )
        .env("PAYMENT_DATABASE_URL", "postgres://postgres@127.0.0.1:1/p")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("could not read the"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn help_explains_the_checks_and_exit_codes() {
    let output = auditor_command().arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{help}");
    for expected in [
        "stock-conserved",
        "not-stuck",
        "ORCHESTRATOR_DATABASE_URL",
        "3  a database",
    ] {
        assert!(help.contains(expected), "{expected}\n{help}");
    }
}

/// The library's sources over the world's databases.
async fn sources(world: &World) -> auditor::Sources {
    let config = auditor::Config::from_args(auditor::config::Args {
        orchestrator_database_url: Some(world.orchestrator.url.clone()),
        inventory_database_url: Some(world.inventory.url.clone()),
        payment_database_url: Some(world.payment.url.clone()),
        ..auditor::config::Args::default()
    })
    .unwrap();
    auditor::Sources::connect(&config).await.unwrap()
}

#[tokio::test]
async fn a_full_audit_in_slices_of_two_finds_what_one_slice_finds() {
    let world = World::consistent().await;
    // Records between the sagas' ids (the cancelled saga gone, its records
    // left) and above them all, and a saga whose charge is wrong: each must
    // be seen with its own slice.
    for table in ["saga_events WHERE saga_id", "sagas WHERE id"] {
        world
            .execute(
                &world.orchestrator,
                &format!("DELETE FROM {table} = '00000000-0000-0000-0000-000000000003'"),
            )
            .await;
    }
    let above = Uuid::from_u128(0x99);
    world.pay(above, "charged", 500, 0).await;
    world
        .execute(
            &world.payment,
            "UPDATE payments SET amount_cents = amount_cents + 1
             WHERE saga_id = '00000000-0000-0000-0000-000000000001'",
        )
        .await;
    let sources = sources(&world).await;
    let whole = auditor::audit::run_in_slices(&sources, None, auditor::Scope::Full, 5_000)
        .await
        .unwrap();
    let sliced = auditor::audit::run_in_slices(&sources, None, auditor::Scope::Full, 2)
        .await
        .unwrap();
    let names = |report: &auditor::Report| -> Vec<(String, Option<Uuid>)> {
        report
            .violations
            .iter()
            .map(|v| (v.invariant.name().to_owned(), v.saga))
            .collect()
    };
    assert_eq!(
        names(&whole),
        vec![
            ("completed-charged".to_owned(), Some(COMPLETED)),
            ("orphan-reservation".to_owned(), Some(CANCELLED)),
            ("orphan-payment".to_owned(), Some(CANCELLED)),
            ("orphan-payment".to_owned(), Some(above)),
            ("orphan-ledger".to_owned(), Some(CANCELLED)),
            ("orphan-ledger".to_owned(), Some(above)),
        ]
    );
    assert_eq!(names(&sliced), names(&whole));
    assert_eq!(sliced.summary, whole.summary);
}

#[tokio::test]
async fn an_incremental_audit_reads_what_changed_since_its_watermark_and_exports_its_result() {
    let world = World::consistent().await;
    let folder = std::env::temp_dir().join(format!("audit-it-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    let watermark = folder.join("watermark");
    let metrics = folder.join("audit.prom");
    let files = [
        ("AUDIT_WATERMARK_FILE", watermark.to_str().unwrap()),
        ("AUDIT_METRICS_FILE", metrics.to_str().unwrap()),
    ];

    // No watermark yet: a full audit, which starts one.
    let output = world.run(&files).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_reports(&output, "audited 7 sagas (");
    let first = std::fs::read_to_string(&watermark).unwrap();

    // The finished sagas finished a day ago: only the live ones are read.
    world
        .execute(
            &world.orchestrator,
            "UPDATE sagas SET updated_at = now() - interval '1 day'
             WHERE status IN ('completed', 'compensated', 'cancelled')",
        )
        .await;
    let output = world.run(&files).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_reports(&output, "audited 3 sagas changed since");
    let second = std::fs::read_to_string(&watermark).unwrap();
    assert!(second > first, "{first} then {second}");

    // A saga that finishes now with a wrong charge is found, and the
    // watermark stays, so the next run finds it again.
    world
        .execute(
            &world.orchestrator,
            "UPDATE sagas SET updated_at = now() WHERE id = '00000000-0000-0000-0000-000000000001'",
        )
        .await;
    world
        .execute(
            &world.payment,
            "UPDATE payments SET amount_cents = amount_cents + 1
             WHERE saga_id = '00000000-0000-0000-0000-000000000001'",
        )
        .await;
    for _ in 0..2 {
        let output = world.run(&files).await;
        assert_only(&output, "completed-charged", Some(COMPLETED), None);
        assert_reports(&output, "audited 4 sagas changed since");
        assert_eq!(std::fs::read_to_string(&watermark).unwrap(), second);
    }
    let exported = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        exported.contains("checkout_audit_violations{invariant=\"completed-charged\"} 1\n"),
        "{exported}"
    );
    assert!(
        exported.contains("checkout_audit_sagas{scope=\"incremental\"} 4\n"),
        "{exported}"
    );
    assert!(
        exported.contains("checkout_audit_success 1\n"),
        "{exported}"
    );

    // A watermark file that says nothing useful is a configuration error.
    std::fs::write(&watermark, "soon").unwrap();
    let output = world.run(&files).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert_reports(&output, "AUDIT_WATERMARK_FILE");
    std::fs::remove_dir_all(folder).unwrap();
}
