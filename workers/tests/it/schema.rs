//! Migrations as a deploy step, against the real PostgreSQL: the migration
//! lock, its timeouts, and the range of schemas a build starts on.

use std::time::Duration;

use saga_shared::schema::{self, MigrateSettings, OnStart, Schema, SchemaError, Status};
use saga_testkit::{self as testing, TestDatabase};
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{Connection, PgConnection};
use workers::{inventory, tax};

async fn fresh(label: &str) -> TestDatabase {
    testing::init_tracing();
    TestDatabase::create(label).await
}

/// A fresh database migrated to `schema` as this build has it.
async fn migrated_to(label: &str, schema: &Schema) -> TestDatabase {
    let db = fresh(label).await;
    migrate(&db, schema).await;
    db
}

/// Migrates `db` to `schema` as `migrate` does by default.
async fn migrate(db: &TestDatabase, schema: &Schema) -> Status {
    schema::migrate(&db.pool, schema, MigrateSettings::default())
        .await
        .expect("migrate")
}

/// What a service of `schema` starting on `db` gets from its schema, for
/// each way it may start: only checking, or migrating too.
async fn prepared_both_ways(
    db: &TestDatabase,
    schema: &Schema,
) -> Vec<(OnStart, Result<Status, SchemaError>)> {
    let mut prepared = Vec::new();
    for on_start in [OnStart::Check, OnStart::Migrate(MigrateSettings::default())] {
        prepared.push((on_start, schema::prepare(&db.pool, schema, on_start).await));
    }
    prepared
}

/// Why a service of `schema` that may only check refuses to start on `db`.
async fn refused_check(db: &TestDatabase, schema: &Schema) -> String {
    schema::prepare(&db.pool, schema, OnStart::Check)
        .await
        .unwrap_err()
        .to_string()
}

/// Asserts `said` begins with `start`; what follows it varies.
fn assert_begins(said: &str, start: &str) {
    assert!(said.starts_with(start), "{said}");
}

fn bounded(lock_timeout: Duration, statement_timeout: Duration) -> MigrateSettings {
    MigrateSettings {
        lock_timeout,
        statement_timeout,
    }
}

/// A session of its own, outside the test database's pool.
async fn session(db: &TestDatabase) -> PgConnection {
    PgConnection::connect(&db.url).await.expect("connect")
}

/// `schema`'s service with this build's migrations plus `extra`: a later
/// release, as far as the database can tell.
fn with_extra(schema: &Schema, extra: Vec<Migration>) -> Schema {
    let mut migrations: Vec<Migration> = schema.migrator.iter().cloned().collect();
    migrations.extend(extra);
    leak(schema.service, migrations)
}

/// `schema`'s service with only its first `count` migrations: an older
/// release.
fn first(schema: &Schema, count: usize) -> Schema {
    leak(
        schema.service,
        schema.migrator.iter().take(count).cloned().collect(),
    )
}

fn leak(service: &'static str, migrations: Vec<Migration>) -> Schema {
    let migrator = Box::leak(Box::new(Migrator {
        migrations: migrations.into(),
        ..Migrator::DEFAULT
    }));
    Schema::new(service, migrator)
}

fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        description.into(),
        MigrationType::Simple,
        sql.into(),
        false,
    )
}

fn versions(status: &Status) -> Vec<i64> {
    status.applied.iter().map(|(version, _)| *version).collect()
}

/// Records a migration this build does not know, as a newer release's
/// `migrate` would have.
async fn apply_unknown(db: &TestDatabase, version: i64) {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from a later release', true, '\\x00', 0)",
    )
    .bind(version)
    .execute(&db.pool)
    .await
    .expect("record a newer migration");
}

#[tokio::test]
async fn migrating_twice_applies_once_then_nothing() {
    let db = fresh("schema_twice").await;
    let n = tax::SCHEMA.build_version();

    let first = schema::migrate(&db.pool, &tax::SCHEMA, MigrateSettings::default())
        .await
        .expect("migrate");
    assert_eq!(versions(&first), (1..=n).collect::<Vec<_>>());
    assert_eq!(first.version, n);
    assert!(first
        .report()
        .ends_with(&format!("tax: schema now at version {n}\n")));

    let second = schema::migrate(&db.pool, &tax::SCHEMA, MigrateSettings::default())
        .await
        .expect("migrate again");
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(
        second.report(),
        format!("tax: schema already at version {n}\n")
    );
    schema::check(&db.pool, &tax::SCHEMA)
        .await
        .expect("the schema is this build's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_at_once_both_succeed_and_apply_each_migration_once() {
    let db = fresh("schema_concurrent").await;
    // Both start while the lock is held (by sqlx's own `lock`, as an older
    // release takes it), so both are surely waiting on it together when it
    // is released. They poll for it: a blocked waiter would hold a
    // snapshot that a CREATE INDEX CONCURRENTLY of the holder waits for.
    let mut holder = session(&db).await;
    holder.lock().await.expect("take the migration lock");
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                schema::migrate(&pool, &inventory::SCHEMA, MigrateSettings::default()).await
            })
        })
        .collect();
    testing::eventually(
        "both migrations waiting on the migration lock",
        Duration::from_secs(10),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'inventory migrate'",
            )
            .fetch_one(&db.pool)
            .await
            .ok()?;
            (waiting == 2).then_some(())
        },
    )
    .await;
    holder.unlock().await.expect("release the migration lock");

    let mut applied = Vec::new();
    for run in runs {
        let status = run.await.unwrap().expect("both succeed");
        assert_eq!(status.version, inventory::SCHEMA.build_version());
        applied.push(versions(&status));
    }
    applied.sort();
    let n = inventory::SCHEMA.build_version();
    assert_eq!(applied, vec![vec![], (1..=n).collect::<Vec<_>>()]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, n);
}

#[tokio::test]
async fn a_service_that_may_not_migrate_refuses_a_schema_behind_it() {
    let db = fresh("schema_behind").await;
    let n = inventory::SCHEMA.build_version();
    assert_eq!(
        refused_check(&db, &inventory::SCHEMA).await,
        format!("inventory: database schema is at version 0, this build needs {n}: run `inventory migrate` first")
    );

    schema::migrate(
        &db.pool,
        &first(&inventory::SCHEMA, 2),
        MigrateSettings::default(),
    )
    .await
    .expect("an older build migrates");
    assert_eq!(
        refused_check(&db, &inventory::SCHEMA).await,
        format!("inventory: database schema is at version 2, this build needs {n}: run `inventory migrate` first")
    );

    let status = schema::prepare(
        &db.pool,
        &inventory::SCHEMA,
        OnStart::Migrate(MigrateSettings::default()),
    )
    .await
    .expect("a service that may migrate does");
    assert_eq!(versions(&status), (3..=n).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_newer_schema_that_allows_this_build_lets_it_start() {
    let db = migrated_to("schema_newer", &inventory::SCHEMA).await;
    let n = inventory::SCHEMA.build_version();
    apply_unknown(&db, n + 5).await;

    for (on_start, prepared) in prepared_both_ways(&db, &inventory::SCHEMA).await {
        let status = prepared.unwrap_or_else(|e| panic!("{on_start:?}: {e}"));
        assert_eq!(status.version, n + 5);
        assert!(status.applied.is_empty());
    }
    let status = migrate(&db, &inventory::SCHEMA).await;
    let already = format!(
        "inventory: schema already at version {} (this build knows {n};",
        n + 5
    );
    assert_begins(&status.report(), &already);

    // A rollback to the build before this one: it knows less, and the
    // schema's floor (2 for inventory) still allows it.
    let older = first(&inventory::SCHEMA, n as usize - 1);
    schema::prepare(&db.pool, &older, OnStart::Check)
        .await
        .expect("the previous build starts too");
}

#[tokio::test]
async fn a_schema_that_requires_a_newer_build_refuses_this_one() {
    let db = migrated_to("schema_floor", &tax::SCHEMA).await;
    let n = tax::SCHEMA.build_version();
    apply_unknown(&db, n + 2).await;
    sqlx::query("UPDATE schema_compat SET min_reader_version = $1")
        .bind(n + 2)
        .execute(&db.pool)
        .await
        .unwrap();

    let expected = format!(
        "tax: database schema is at version {} and requires a build that knows version {}; this build knows {n}",
        n + 2,
        n + 2
    );
    for (on_start, prepared) in prepared_both_ways(&db, &tax::SCHEMA).await {
        let error = prepared.unwrap_err();
        assert_eq!(error.to_string(), expected, "{on_start:?}");
    }
}

#[tokio::test]
async fn a_migration_that_waits_for_a_table_lock_gives_up_and_can_be_run_again() {
    let db = migrated_to("schema_lock_timeout", &inventory::SCHEMA).await;
    let n = inventory::SCHEMA.build_version();
    let next = with_extra(
        &inventory::SCHEMA,
        vec![migration(
            n + 1,
            "inbox origin",
            "ALTER TABLE inbox ADD COLUMN origin text",
        )],
    );

    // A reader in the middle of a transaction: its ACCESS SHARE lock is
    // what an ALTER TABLE queues behind, and every query after it with it.
    let mut reader = session(&db).await;
    let mut open = reader.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM inbox")
        .execute(&mut *open)
        .await
        .unwrap();

    let settings = bounded(Duration::from_millis(200), Duration::from_secs(60));
    let error = schema::migrate(&db.pool, &next, settings)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SchemaError::LockTimeout { version, .. } if version == n + 1),
        "{error:?}"
    );
    let line = error.to_string();
    let waited = format!(
        "inventory: migration {} (inbox origin) waited 200ms (MIGRATE_LOCK_TIMEOUT) for a lock",
        n + 1
    );
    assert_begins(&line, &waited);
    assert!(line.contains("it was rolled back"), "{line}");
    assert!(line.contains("run `inventory migrate` again"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    let status = schema::check(&db.pool, &inventory::SCHEMA).await.unwrap();
    assert_eq!(status.version, n, "nothing of it was applied");

    open.commit().await.unwrap();
    let status = schema::migrate(&db.pool, &next, settings)
        .await
        .expect("run again once the reader is done");
    assert_eq!(status.applied, vec![(n + 1, "inbox origin".to_owned())]);
}

#[tokio::test]
async fn a_migration_that_runs_too_long_is_cancelled_and_named() {
    let db = fresh("schema_statement_timeout").await;
    let n = tax::SCHEMA.build_version();
    let slow = with_extra(
        &tax::SCHEMA,
        vec![migration(n + 1, "slow backfill", "SELECT pg_sleep(30)")],
    );
    let settings = bounded(Duration::from_secs(5), Duration::from_millis(300));
    let error = schema::migrate(&db.pool, &slow, settings)
        .await
        .unwrap_err();
    let cancelled = format!(
        "tax: migration {} (slow backfill) ran for 300ms (MIGRATE_STATEMENT_TIMEOUT) and was cancelled",
        n + 1
    );
    assert_begins(&error.to_string(), &cancelled);
    // The migrations before it are in; it is not.
    let status = schema::check(&db.pool, &tax::SCHEMA).await.unwrap();
    assert_eq!(status.version, n);
}

#[tokio::test]
async fn a_migration_waits_for_another_one_no_longer_than_its_statement_timeout() {
    let db = fresh("schema_lock_busy").await;
    let mut holder = session(&db).await;
    holder.lock().await.expect("take the migration lock");
    let settings = bounded(Duration::from_secs(5), Duration::from_millis(300));
    let error = schema::migrate(&db.pool, &tax::SCHEMA, settings)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "tax: another migration of this database held the migration lock for 300ms (MIGRATE_STATEMENT_TIMEOUT); nothing was applied; run `tax migrate` again once it is done"
    );
    holder.unlock().await.unwrap();
    schema::migrate(&db.pool, &tax::SCHEMA, settings)
        .await
        .expect("free again");
}

#[tokio::test]
async fn an_edited_migration_is_refused_in_one_line() {
    let db = migrated_to("schema_checksum", &tax::SCHEMA).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
        .execute(&db.pool)
        .await
        .unwrap();
    for (on_start, prepared) in prepared_both_ways(&db, &tax::SCHEMA).await {
        let error = prepared.unwrap_err();
        assert!(
            error.to_string().starts_with(
                "tax: migration 2 (inbox received at) was applied from other contents than this build's file (checksum mismatch)"
            ),
            "{on_start:?}: {error}"
        );
    }
}
