//! Retention: finished sagas past `RETENTION_DAYS` go to the archive with
//! their timelines and dead letters, then out of the database; live ones
//! stay however old; support reads an archived one back with sagactl; a
//! client asking for one gets a 404 that says why; the auditor does not
//! take what they left in the workers' databases for orphans.

use std::time::{Duration, SystemTime};

use orchestrator::archive::{Archive, ArchiveLocation};
use orchestrator::retention::{archive_past_retention, Archived, Pace};
use orchestrator::saga::StepPolicies;
use orchestrator::store::id_time::uuid_v7_floor;
use orchestrator::store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{order, Setup, System};

fn folder(system: &System) -> std::path::PathBuf {
    match &system.retention.archive {
        ArchiveLocation::Folder(folder) => folder.clone(),
        ArchiveLocation::Bucket(_) => unreachable!("tests archive to a folder"),
    }
}

async fn sagactl_find(system: &System, id: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sagactl"))
        .args(["archive", "find", id])
        .env("ARCHIVE", folder(system))
        .output()
        .await
        .expect("sagactl runs")
}

async fn count(system: &System, sql: &str, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar(sql)
        .bind(ids)
        .fetch_one(&system.orchestrator_db.pool)
        .await
        .unwrap()
}

/// A run with a retention of nothing at all, once the instance's own run
/// (at its start) has let go of the turn.
async fn archive_now(store: &Store, archive: &Archive) -> Archived {
    saga_testkit::eventually("the retention turn", Duration::from_secs(30), || async {
        let archived = archive_past_retention(
            store,
            archive,
            Duration::ZERO,
            Pace::FLAT_OUT,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        (!archived.skipped).then_some(archived)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sagas_go_to_the_archive_and_live_ones_stay() {
    let system = System::start_setup(Setup {
        policies: StepPolicies::uniform(System::fast_retries(2)),
        retention_days: Some(90),
        ..Setup::default()
    })
    .await;
    let completed = [
        system.checkout(&order(&[("MUG", 1)], "sim_approve")).await,
        system
            .checkout(&order(&[("TSHIRT", 2)], "sim_approve"))
            .await,
    ];
    let declined = system.checkout(&order(&[("MUG", 1)], "sim_decline")).await;
    let parked = system.park(&order(&[("MUG", 1)], "sim_approve")).await;
    let finished: Vec<Uuid> = completed
        .iter()
        .chain([&declined])
        .map(|view| view["checkout_id"].as_str().unwrap().parse().unwrap())
        .collect();
    let parked_id: Uuid = parked.parse().unwrap();
    // A dead letter no saga holds, received long ago.
    sqlx::query(
        "INSERT INTO dead_letters (at, reason, body_bytes, body_preview)
         VALUES (now() - interval '100 days', 'rejected', 3, 'odd')",
    )
    .execute(&system.orchestrator_db.pool)
    .await
    .unwrap();

    // A retention of nothing at all: everything finished is past it.
    let store = Store::new(system.orchestrator_db.pool.clone(), StepPolicies::default());
    let archive = Archive::open(&system.retention.archive).unwrap();
    let archived = archive_now(&store, &archive).await;
    assert_eq!(
        (archived.sagas, archived.dead_letters),
        (3, 1),
        "{archived:?}"
    );

    let all: Vec<Uuid> = finished.iter().copied().chain([parked_id]).collect();
    assert_eq!(
        count(
            &system,
            "SELECT count(*) FROM sagas WHERE id = ANY($1)",
            &all
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &system,
            "SELECT count(*) FROM saga_events WHERE saga_id = ANY($1)",
            &finished
        )
        .await,
        0
    );
    assert_eq!(system.saga_status(&parked).await, "suspended");
    assert!(!system.timeline(&parked).await.is_empty());
    let dead_letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE saga_id IS NULL")
            .fetch_one(&system.orchestrator_db.pool)
            .await
            .unwrap();
    assert_eq!(dead_letters, 0);

    // Support reads a completed checkout back, timeline and all.
    let id = finished[0].to_string();
    let out = sagactl_find(&system, &id).await;
    let shown = saga_testkit::succeeded(&out);
    assert!(
        shown.contains(&id) && shown.contains("completed"),
        "{shown}"
    );
    for event in ["started", "completed"] {
        assert!(
            shown.contains(event),
            "no `{event}` in the timeline:\n{shown}"
        );
    }
    let declined_id = finished[2].to_string();
    let record = archive.find_saga(finished[2]).await.unwrap().unwrap();
    assert_eq!(record["saga"]["status"], "compensated");
    assert!(record["events"].as_array().unwrap().len() > 2, "{record}");
    assert_eq!(record["saga"]["id"], declined_id);
    // The parked one is not in the archive: sagactl says so (exit 3).
    let out = sagactl_find(&system, &parked).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A second run has nothing left to do and writes nothing.
    let again = archive_now(&store, &archive).await;
    assert_eq!(again, Default::default());

    // The workers keep their records longer: not orphans to the auditor.
    let summary = system.audit().await;
    assert_eq!(summary.archived, 3);

    // A client asking for a checkout older than the retention learns why.
    let old = uuid_v7_floor(SystemTime::now() - Duration::from_secs(91 * 24 * 3600));
    let (status, problem) = system.get(&format!("/v1/checkouts/{old}")).await;
    assert_eq!(status, 404);
    assert_eq!(
        problem["type"], "urn:checkout-saga:problem:past-retention",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("90 days"),
        "{problem}"
    );
    // A recent one that never was is just not found.
    let (status, problem) = system
        .get(&format!("/v1/checkouts/{}", Uuid::now_v7()))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("urn:checkout-saga:problem:not-found"))
    );
    // An archived one asked for by its (recent) id is not found either.
    let (status, _) = system.get(&format!("/v1/checkouts/{id}")).await;
    assert_eq!(status, 404);

    let folder = folder(&system);
    system.stop_without_audit().await;
    std::fs::remove_dir_all(folder).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_archives_at_a_time() {
    // No retention of its own: the test's runs are the only ones.
    let system = System::start().await;
    let store = Store::new(system.orchestrator_db.pool.clone(), StepPolicies::default());
    let turn = store
        .retention_turn()
        .await
        .unwrap()
        .expect("the first takes the turn");
    let archive = Archive::open(&system.retention.archive).unwrap();
    let skipped = archive_past_retention(
        &store,
        &archive,
        Duration::ZERO,
        Pace::FLAT_OUT,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(skipped.skipped);
    turn.end().await;
    let ran = archive_past_retention(
        &store,
        &archive,
        Duration::ZERO,
        Pace::FLAT_OUT,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!ran.skipped);
    let folder = folder(&system);
    system.stop().await;
    let _ = std::fs::remove_dir_all(folder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_in_a_bucket_is_written_and_read_back_as_a_folder_is() {
    let s3 = saga_testkit::LocalS3::start().await;
    s3.bucket("checkout-archive").await;
    let location = ArchiveLocation::Bucket("s3://checkout-archive/eu-shop".to_owned());
    let aws = s3.env();
    let archive = Archive::open_with(&location, &aws).unwrap();
    let system = System::start().await;
    let completed = system.checkout(&order(&[("MUG", 1)], "sim_approve")).await;
    let id = completed["checkout_id"].as_str().unwrap().to_owned();
    let store = Store::new(system.orchestrator_db.pool.clone(), StepPolicies::default());
    let archived = archive_now(&store, &archive).await;
    assert_eq!(archived.sagas, 1, "{archived:?}");
    assert!(
        archived.files[0].starts_with("s3://checkout-archive/eu-shop/sagas/"),
        "{archived:?}"
    );

    // Support reads it back from the bucket with sagactl, as from a folder.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagactl"))
        .args(["archive", "find", &id, "--json"])
        .env("ARCHIVE", "s3://checkout-archive/eu-shop")
        .envs(aws.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .await
        .expect("sagactl runs");
    let record: serde_json::Value = serde_json::from_str(&saga_testkit::succeeded(&out)).unwrap();
    assert_eq!(record["saga"]["status"], "completed");
    assert_eq!(record["saga"]["id"], id.as_str());
    system.stop_without_audit().await;
}
