//! The PostgreSQL primary dies and its synchronous standby is promoted
//! under a running system whose every `DATABASE_URL` names both hosts: the
//! API answers 503 meanwhile, then everything resumes on the new primary,
//! and nothing acknowledged is lost.

use std::time::{Duration, Instant};

use futures::future::join_all;
use saga_testkit as testing;

use crate::cluster::PostgresPair;
use crate::system::{order, Setup, System};

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_and_its_standby_promoted_answers_503_then_resumes() {
    let pair = PostgresPair::start().await;
    let system = System::start_setup(Setup {
        database_admin_url: Some(pair.admin_url.clone()),
        ..Setup::default()
    })
    .await;
    let body = order(&[("TSHIRT", 1)], "sim_approve");
    let mut ids: Vec<String> = join_all((0..10).map(|_| system.place(&body))).await;
    system.wait_status(&ids, "completed", PATIENCE).await;
    // Ten more in flight when the primary dies.
    ids.extend(join_all((0..10).map(|_| system.place(&body))).await);

    pair.kill_primary().await;
    let killed = Instant::now();
    let down = testing::eventually("the API says the database is down", PATIENCE, || async {
        let (status, body) = system.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(down["checks"]["database"], "down", "{down}");
    let (status, problem) = system.post(&body, None).await;
    assert_eq!(status, 503, "{problem}");

    pair.promote().await;
    testing::eventually("ready on the promoted standby", PATIENCE, || async {
        (system.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let recovered = killed.elapsed();
    ids.extend(join_all((0..10).map(|_| system.place(&body))).await);
    system.wait_status(&ids, "completed", PATIENCE).await;

    let payments = system.payments().await;
    assert_eq!(payments.len(), 30, "{payments:?}");
    assert!(
        payments
            .iter()
            .all(|p| *p == ("charged".to_owned(), 2_145, 0)),
        "{payments:?}"
    );
    assert_eq!(system.available("TSHIRT").await, 70);
    system.audit().await;
    // The script promotes at once; what is left is noticing it (a check
    // every 0.5 s) and the test's own polling.
    assert!(recovered < Duration::from_secs(30), "{recovered:?}");
    system.stop().await;
}
