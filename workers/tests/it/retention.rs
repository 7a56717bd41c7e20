//! Retention in the workers' databases: the running worker prunes inbox
//! rows older than `INBOX_RETENTION_DAYS` and keeps the newer ones, which
//! still answer redeliveries; reservations go after `RETENTION_DAYS`, money
//! records after `MONEY_RETENTION_DAYS`.

use std::time::{Duration, SystemTime};

use saga_protocol::saga_id::uuid_v7_floor;
use saga_protocol::WorkerKind;
use saga_testkit::{self as testing, random_prefix, TopologyGuard};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use workers::retention::{prune_records, Records, Retention};
use workers::tax::MIGRATOR;

use crate::{migrated, worker_binary};

/// `count` inbox rows received `days_ago` days ago.
async fn inbox_rows(pool: &PgPool, count: i32, days_ago: i32) {
    sqlx::query(
        "INSERT INTO inbox (message_id, saga_id, step, attempt, reply, received_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'tax.calculate', 1, '{}'::jsonb,
                now() - $2 * interval '1 day'
         FROM generate_series(1, $1)",
    )
    .bind(count)
    .bind(days_ago)
    .execute(pool)
    .await
    .unwrap();
}

async fn count_older_than(pool: &PgPool, days: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM inbox WHERE received_at < now() - $1 * interval '1 day'",
    )
    .bind(days)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_prunes_inbox_rows_past_their_retention_and_keeps_the_rest() {
    let db = migrated("tax_retention", &MIGRATOR).await;
    // More than one batch of old rows, and recent ones that must stay.
    inbox_rows(&db.pool, 2_500, 10).await;
    inbox_rows(&db.pool, 300, 4).await;
    inbox_rows(&db.pool, 200, 0).await;
    let guard = TopologyGuard::new(&random_prefix());
    let mut service = worker_binary(env!("CARGO_BIN_EXE_tax"), &db, &guard)
        .env("INBOX_RETENTION_DAYS", "5")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the tax binary");

    testing::eventually(
        "the rows past 5 days pruned",
        Duration::from_secs(30),
        || async { (count_older_than(&db.pool, 5).await == 0).then_some(()) },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 500, "the rows within the retention stay");
    service.kill().await.unwrap();
}

/// A saga id drawn `days_ago` days ago; `n` tells apart ids of the same day.
fn saga_drawn(days_ago: u64, n: u128) -> Uuid {
    let floor = uuid_v7_floor(SystemTime::now() - Duration::from_secs(days_ago * 24 * 3600));
    Uuid::from_u128(floor.as_u128() | n)
}

async fn scalar<T>(pool: &PgPool, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A reservation of `saga` holding `quantity` mugs, or none (a tombstone).
async fn reservation(pool: &PgPool, saga: Uuid, status: &str, quantity: Option<i32>) {
    sqlx::query("INSERT INTO reservations (saga_id, status, currency) VALUES ($1, $2, 'USD')")
        .bind(saga)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    let Some(quantity) = quantity else { return };
    sqlx::query(
        "INSERT INTO reservation_lines (saga_id, position, sku, quantity, unit_price_cents, tax_category)
         VALUES ($1, 0, 'MUG', $2, 1200, 'standard')",
    )
    .bind(saga)
    .bind(quantity)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_past_retention_go_and_an_active_ones_stock_leaves_on_hand() {
    let db = migrated("inventory_retention", &workers::inventory::MIGRATOR).await;
    let pool = &db.pool;
    // 10 on hand: 3 held by an old completed checkout, 1 by a recent one.
    sqlx::query(
        "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency, tax_category)
         VALUES ('MUG', 'Mug', 10, 6, 1200, 'USD', 'standard')",
    )
    .execute(pool)
    .await
    .unwrap();
    let recent = Uuid::now_v7();
    reservation(pool, saga_drawn(100, 1), "active", Some(3)).await;
    reservation(pool, saga_drawn(100, 2), "released", Some(2)).await;
    reservation(pool, saga_drawn(100, 4), "released", None).await;
    let within = saga_drawn(89, 3);
    reservation(pool, within, "released", None).await;
    reservation(pool, recent, "active", Some(1)).await;

    let pruned = prune_records(
        pool,
        Records::Reservations,
        Duration::from_secs(90 * 24 * 3600),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(pruned, 3);
    let (on_hand, available): (i32, i32) =
        sqlx::query_as("SELECT on_hand, available FROM products WHERE sku = 'MUG'")
            .fetch_one(pool)
            .await
            .unwrap();
    // The old checkout's 3 shipped; what is held and available is unchanged.
    assert_eq!((on_hand, available), (7, 6));
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT saga_id FROM reservations ORDER BY saga_id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, vec![within, recent]);
    assert_eq!(
        scalar::<i64>(pool, "SELECT count(*) FROM reservation_lines").await,
        1
    );
    let horizon: Uuid = scalar(pool, "SELECT deleted_below FROM retention_horizon").await;
    assert!(saga_drawn(100, 1) < horizon && horizon < within);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_records_stay_seven_years_and_one_in_flight_stays_longer() {
    let db = migrated("payment_retention", &workers::payment::MIGRATOR).await;
    let pool = &db.pool;
    let (old_charged, old_charging, old_ledger_only, young) = (
        saga_drawn(2_600, 1),
        saga_drawn(2_600, 2),
        saga_drawn(2_600, 3),
        saga_drawn(2_500, 4),
    );
    for (saga, status) in [
        (old_charged, "charged"),
        (old_charging, "charging"),
        (young, "charged"),
    ] {
        sqlx::query(
            "INSERT INTO payments (saga_id, status, amount_cents, currency, provider_reference)
             VALUES ($1, $2, 500, 'USD', gen_random_uuid())",
        )
        .bind(saga)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    }
    for saga in [old_charged, old_charging, old_ledger_only, young] {
        sqlx::query(
            "INSERT INTO provider_ledger (reference, saga_id, operation, outcome, amount_cents)
             VALUES (gen_random_uuid(), $1, 'charge', 'approved', 500)",
        )
        .bind(saga)
        .execute(pool)
        .await
        .unwrap();
    }
    let retention = Retention::from_source(&saga_testkit::environment(&[]), WorkerKind::Payment)
        .unwrap()
        .records
        .unwrap();
    let pruned = prune_records(pool, retention.0, retention.1, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let payments: Vec<Uuid> = sqlx::query_scalar("SELECT saga_id FROM payments ORDER BY saga_id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(payments, vec![old_charging, young]);
    let ledger: Vec<Uuid> =
        sqlx::query_scalar("SELECT saga_id FROM provider_ledger ORDER BY saga_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(ledger, vec![old_charging, young]);
}
