//! The saga gauges' counts equal a count of the whole table, count after
//! count, while sagas start, finish and park.

use orchestrator::saga::SagaStatus;
use orchestrator::store::saga_tally::SagaTally;
use saga_testkit::TestDatabase;
use uuid::Uuid;

async fn insert(pool: &sqlx::PgPool, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO sagas (id, status, current_step, attempt, state, request_hash)
         VALUES ($1, $2, NULL, 0, '{}'::jsonb, 'h')",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn set(pool: &sqlx::PgPool, id: Uuid, status: &str) {
    sqlx::query("UPDATE sagas SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
}

async fn whole_table(pool: &sqlx::PgPool) -> Vec<(SagaStatus, i64)> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut counts: Vec<(SagaStatus, i64)> = SagaStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    for (status, n) in rows {
        counts
            .iter_mut()
            .find(|(s, _)| s.as_str() == status)
            .unwrap()
            .1 = n;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tally_counts_what_a_whole_table_count_would() {
    let db = TestDatabase::create("orchestrator").await;
    orchestrator::app::MIGRATOR.run(&db.pool).await.unwrap();
    let pool = &db.pool;
    // Every saga here is committed at once: the settled part moves up to
    // the oldest live saga at each count.
    let mut tally = SagaTally::with_margin(std::time::Duration::ZERO);
    let mut running = Vec::new();
    for status in ["completed", "compensated", "cancelled", "completed"] {
        insert(pool, status).await;
    }
    for _ in 0..3 {
        running.push(insert(pool, "running").await);
    }
    let parked = insert(pool, "suspended").await;
    insert(pool, "completed").await;
    assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);

    // The oldest live saga finishes, a newer one compensates, more start
    // and finish; the parked one is cancelled by support.
    set(pool, running[0], "completed").await;
    set(pool, running[1], "compensating").await;
    assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    set(pool, running[1], "compensated").await;
    insert(pool, "completed").await;
    let newest = insert(pool, "running").await;
    assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    set(pool, parked, "cancelled").await;
    set(pool, running[2], "completed").await;
    set(pool, newest, "completed").await;
    // Twice: the second count starts from what the first settled.
    for _ in 0..2 {
        assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    }
}
