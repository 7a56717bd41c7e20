//! Replies that are ready together are applied together: one transaction
//! for the batch, each reply still its saga's own conditional write. Two
//! replies of one saga apply in turn; a reply that can never apply is
//! dead-lettered alone while the rest of its batch commits.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::http::validation::parse_checkout;
use orchestrator::saga::{ClientStatus, StepPolicies};
use orchestrator::store::{BatchedReply, Created, Owner, Store, StoreError};
use saga_protocol::messages::{Command, Outcome, ReserveStock};
use saga_protocol::Envelope;
use saga_shared::broker::Outgoing;
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_testkit::{self as testing, TestDatabase};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::system::{count_sagas, order, System};

pub async fn create(store: &Store) -> Uuid {
    let body = serde_json::to_vec(&order(&[("BOOK", 1)], "sim_approve")).unwrap();
    let request = parse_checkout(&body).unwrap();
    let owner = Owner {
        client: crate::system::CLIENT,
        max_in_flight: 1_000,
    };
    match store.create(request, owner, None, "hash").await.unwrap() {
        Created::New(record) => record.saga.id,
        _ => panic!("a checkout without a key is always new"),
    }
}

/// Inventory's answer to `saga_id`'s reservation, attempt `attempt`.
pub fn reserve_reply(saga_id: Uuid, attempt: u32, outcome: Outcome) -> Envelope<Outcome> {
    Envelope::command(
        saga_id,
        attempt,
        Command::Reserve(ReserveStock { lines: vec![] }),
    )
    .reply(outcome)
}

pub fn out_of_stock() -> Outcome {
    Outcome::Rejected {
        reason: "out_of_stock".into(),
        detail: "none left".into(),
    }
}

/// How each reserve reply of saga `id` was taken, in order: (attempt,
/// event) for the replies applied, late ones included.
async fn reserve_replies_applied(pool: &sqlx::PgPool, id: Uuid) -> Vec<(i32, String)> {
    let events: Vec<(i32, String)> = sqlx::query_as(
        "SELECT attempt, event FROM saga_events WHERE saga_id = $1 AND step = 'inventory.reserve'
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    events
        .into_iter()
        .filter(|(_, event)| {
            event == "transient" || event.starts_with("late_") || event == "rejected"
        })
        .collect()
}

/// The saga `id`, as `store` reads it, ended rejected for
/// [`out_of_stock`].
pub async fn assert_rejected_out_of_stock(store: &Store, id: Uuid) {
    let saga = store.get(id).await.unwrap().unwrap().saga;
    assert_eq!(
        saga.status.client_status(),
        ClientStatus::Rejected,
        "{saga:?}"
    );
    assert_eq!(saga.reason.as_deref(), Some("out_of_stock"));
}

/// The reserve of saga `id` failed for now at attempt 1 and was rejected
/// at attempt 2, both applied as the attempt awaited (neither as late).
pub async fn assert_transient_then_rejected(pool: &sqlx::PgPool, id: Uuid) {
    let replied = reserve_replies_applied(pool, id).await;
    assert_eq!(replied, [(1, "transient".into()), (2, "rejected".into())]);
}

/// The transactions that last wrote these sagas.
async fn writers(pool: &sqlx::PgPool, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM sagas WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_once_applies_a_sagas_replies_in_turn_and_refuses_a_stray_alone() {
    let db = TestDatabase::create("orchestrator").await;
    orchestrator::app::MIGRATOR.run(&db.pool).await.unwrap();
    let store = Store::new(db.pool.clone(), StepPolicies::default());
    let (twice, once) = (create(&store).await, create(&store).await);
    let stray = Uuid::now_v7();
    let replies = [
        // Attempt 1 fails for now; the retry it schedules is rejected. The
        // second applies only if it sees what the first wrote: to the saga
        // as it was, attempt 2 is no attempt it awaits.
        reserve_reply(
            twice,
            1,
            Outcome::Transient {
                error: "lock timeout".into(),
            },
        ),
        reserve_reply(stray, 1, out_of_stock()),
        reserve_reply(twice, 2, out_of_stock()),
        reserve_reply(once, 1, out_of_stock()),
    ];
    let batch: Vec<BatchedReply> = replies
        .iter()
        .map(|reply| BatchedReply {
            reply,
            span: tracing::Span::none(),
        })
        .collect();
    let results = store
        .apply_replies(&batch)
        .await
        .expect("the batch commits");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::UnknownSaga(id)) if id == stray),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok() && results[3].is_ok(), "{results:?}");

    for id in [twice, once] {
        assert_rejected_out_of_stock(&store, id).await;
    }
    assert_transient_then_rejected(&db.pool, twice).await;
    assert_eq!(writers(&db.pool, &[twice, once]).await, 1, "one commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_replies_commit_in_fewer_transactions_and_a_stray_is_dead_lettered_alone() {
    let mut system = System::start().await;
    system.stop_orchestrator().await;
    let pool = system.orchestrator_db.pool.clone();
    let store = Store::new(pool.clone(), StepPolicies::default());
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(create(&store).await);
    }
    // Their commands are never sent: the replies below are theirs.
    sqlx::query("DELETE FROM outbox")
        .execute(&pool)
        .await
        .unwrap();

    let broker = Arc::new(
        system
            .connect_broker("replier", &CancellationToken::new())
            .await,
    );
    let stray = Uuid::now_v7();
    let mut replies: Vec<Envelope<Outcome>> = ids
        .iter()
        .map(|id| reserve_reply(*id, 1, out_of_stock()))
        .collect();
    replies.insert(ids.len() / 2, reserve_reply(stray, 1, out_of_stock()));
    let messages: Vec<Outgoing> = replies
        .iter()
        .map(|reply| Outgoing {
            exchange: broker.topology().reply_exchange(),
            routing_key: REPLY_ROUTING_KEY.to_owned(),
            body: reply.encode(),
            message_id: reply.message_id,
            saga_id: reply.saga_id,
            message_type: reply.message_type.clone(),
            traceparent: saga_shared::traceparent::for_saga(reply.saga_id),
        })
        .collect();
    for result in broker.publish_all(&messages, Duration::from_secs(10)).await {
        result.unwrap();
    }
    // All of them wait in the queue when the orchestrator comes back.
    system.start_orchestrator().await;

    testing::eventually("every saga rejected", Duration::from_secs(30), || async {
        let done = count_sagas(&pool, &ids, "status = 'compensated'").await;
        (done == ids.len() as i64).then_some(())
    })
    .await;
    let commits = writers(&pool, &ids).await;
    assert!(
        commits < ids.len() as i64,
        "{} replies took {commits} commits",
        ids.len()
    );
    let listed = system
        .dead_letters_for(stray, Duration::from_secs(30))
        .await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown saga"),
        "{listed:#?}"
    );
    // Nothing else was dead-lettered.
    let (_, all) = system.admin("GET", "/v1/admin/dead-letters", None).await;
    assert_eq!(all["dead_letters"].as_array().unwrap().len(), 1, "{all}");
    broker.close().await;
    system.stop_without_audit().await;
}
