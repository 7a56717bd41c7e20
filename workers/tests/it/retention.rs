//! Inbox retention: the running worker prunes inbox rows older than
//! `INBOX_RETENTION_DAYS` and keeps the newer ones, which still answer
//! redeliveries.

use std::time::Duration;

use saga_testkit::{self as testing, random_prefix, TopologyGuard};
use sqlx::PgPool;
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
