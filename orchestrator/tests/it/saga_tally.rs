//! The saga gauges' counts equal a count of the whole table, count after
//! count, while sagas start, finish and park.

use orchestrator::archive::{Archive, ArchiveLocation};
use orchestrator::retention::{archive_past_retention, Pace};
use orchestrator::saga::{SagaStatus, StepPolicies};
use orchestrator::store::saga_tally::SagaTally;
use orchestrator::store::Store;
use saga_testkit::TestDatabase;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

async fn insert(pool: &sqlx::PgPool, status: &str) -> Uuid {
    insert_with_id(pool, status, Uuid::now_v7()).await
}

/// A saga created `ago`, as its UUIDv7 id says.
async fn insert_created(pool: &sqlx::PgPool, status: &str, ago: std::time::Duration) -> Uuid {
    let since_epoch = (std::time::SystemTime::now() - ago)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
    ));
    insert_with_id(pool, status, id).await
}

async fn insert_with_id(pool: &sqlx::PgPool, status: &str, id: Uuid) -> Uuid {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_parked_saga_does_not_hold_the_cut_off_back() {
    let db = TestDatabase::create("orchestrator").await;
    orchestrator::app::MIGRATOR.run(&db.pool).await.unwrap();
    let pool = &db.pool;
    let mut tally = SagaTally::with_margin(std::time::Duration::ZERO);
    // Parked a day ago, and still waiting for support; finished ones since.
    let parked = insert_created(pool, "suspended", Duration::from_secs(86_400)).await;
    let mut newest = Uuid::nil();
    for status in ["completed", "compensated", "completed", "cancelled"] {
        newest = insert_created(pool, status, Duration::from_secs(1)).await;
    }

    assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    // Everything finished since the parked saga is settled: the next
    // count reads none of it again.
    assert!(
        tally.cut_off() > newest,
        "cut-off {} held back",
        tally.cut_off()
    );

    insert(pool, "completed").await;
    assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    set(pool, parked, "cancelled").await;
    for _ in 0..2 {
        assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_archives_leaves_the_counts_of_every_instance() {
    let db = TestDatabase::create("orchestrator").await;
    orchestrator::app::MIGRATOR.run(&db.pool).await.unwrap();
    let pool = &db.pool;
    let year = Duration::from_secs(365 * 86_400);
    for status in ["completed", "completed", "compensated", "cancelled"] {
        insert_created(pool, status, year).await;
    }
    let parked_long_ago = insert_created(pool, "suspended", year).await;
    // Finished a year ago as well.
    sqlx::query("UPDATE sagas SET updated_at = now() - interval '365 days'")
        .execute(pool)
        .await
        .unwrap();
    insert(pool, "completed").await;
    // One instance counted them all before retention ran.
    let mut counted_before = SagaTally::with_margin(Duration::ZERO);
    assert_eq!(
        counted_before.count(pool).await.unwrap(),
        whole_table(pool).await
    );

    // A retention of 30 days archives the four finished a year ago; the
    // parked one stays, however old.
    let folder = std::env::temp_dir().join(format!("tally-archive-{}", Uuid::now_v7()));
    let archive = Archive::open(&ArchiveLocation::Folder(folder.clone())).unwrap();
    let store = Store::new(pool.clone(), StepPolicies::default());
    let archived = archive_past_retention(
        &store,
        &archive,
        Duration::from_secs(30 * 86_400),
        Pace::FLAT_OUT,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(archived.sagas, 4, "{archived:?}");
    let now = whole_table(pool).await;
    assert_eq!(
        now.iter()
            .filter(|(status, _)| status.is_final())
            .map(|(_, n)| n)
            .sum::<i64>(),
        1
    );
    assert_eq!(counted_before.count(pool).await.unwrap(), now);
    // So does one started since, and both keep counting what is there.
    let mut started_after = SagaTally::with_margin(Duration::ZERO);
    assert_eq!(started_after.count(pool).await.unwrap(), now);
    set(pool, parked_long_ago, "cancelled").await;
    insert(pool, "compensated").await;
    for tally in [&mut counted_before, &mut started_after] {
        assert_eq!(tally.count(pool).await.unwrap(), whole_table(pool).await);
    }
    let _ = std::fs::remove_dir_all(folder);
}
