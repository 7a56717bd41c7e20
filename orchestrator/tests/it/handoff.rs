//! A transition's commands go from the instance that committed them
//! straight to its relay; the outbox row is leased meanwhile. A lease
//! outlives the instance holding it: another relay sends the command once
//! it ends. A reply is decided on the saga as this instance last wrote it,
//! but never on a copy another instance has moved past.

use std::time::Duration;

use orchestrator::handoff;
use orchestrator::saga::StepPolicies;
use orchestrator::store::Store;
use saga_protocol::messages::Outcome;
use saga_testkit::TestDatabase;

use crate::reply_batches::{
    assert_rejected_out_of_stock, assert_transient_then_rejected, create, out_of_stock,
    reserve_reply,
};
use crate::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_saga_another_instance_advanced_is_decided_on_the_row() {
    let db = TestDatabase::create("orchestrator").await;
    orchestrator::app::MIGRATOR.run(&db.pool).await.unwrap();
    let (one, two) = (
        Store::new(db.pool.clone(), StepPolicies::default()),
        Store::new(db.pool.clone(), StepPolicies::default()),
    );
    // `one` wrote the saga last, so it remembers it awaiting attempt 1.
    let id = create(&one).await;
    // `two` applies attempt 1's transient failure: attempt 2 is awaited.
    let transient = Outcome::Transient {
        error: "lock timeout".into(),
    };
    two.apply_reply(&reserve_reply(id, 1, transient))
        .await
        .unwrap();
    // To the copy `one` holds, attempt 2 is no attempt it awaits; the row
    // says it is.
    one.apply_reply(&reserve_reply(id, 2, out_of_stock()))
        .await
        .unwrap();

    assert_rejected_out_of_stock(&one, id).await;
    assert_transient_then_rejected(&db.pool, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_handed_to_a_relay_that_is_gone_is_sent_when_its_lease_ends() {
    let mut system = System::start().await;
    system.stop_orchestrator().await;
    let pool = system.orchestrator_db.pool.clone();
    // An instance that died right after its commit, before it could
    // publish what it committed.
    let store =
        Store::new(pool.clone(), StepPolicies::default()).handing_to(handoff::Lane::detached());
    let id = create(&store).await;
    let leased: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM not_before - now())::float8 FROM outbox WHERE saga_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        leased > 1.0,
        "the row is leased to the instance that wrote it: due in {leased} s"
    );

    // Another instance's relay sends it once the lease ends, and the
    // checkout runs to its end.
    system.start_orchestrator().await;
    system
        .wait_status(&[id.to_string()], "completed", Duration::from_secs(30))
        .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every command published and deleted");
    system.stop().await;
}
