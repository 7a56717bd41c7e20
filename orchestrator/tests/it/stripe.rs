//! The real binaries charging through localstripe, a Stripe server nobody
//! here wrote, which ignores idempotency keys: one succeeded PaymentIntent
//! per completed checkout, a refund of the whole amount per undone one,
//! whatever is killed or away, and the auditor reconciling with Stripe.

use std::collections::HashMap;
use std::time::Duration;

use auditor::stripe::StripeAudit;
use saga_testkit::localstripe::{cards, SECRET_KEY};
use saga_testkit::LocalStripe;
use secrecy::SecretString;
use serde_json::Value;

use crate::crashes::{charge_compensated_after_one_second, Deployment, PATIENCE};
use crate::payment_crashes::aborted;
use crate::system::order;

/// One TSHIRT shipped to CA, as the other suites price it.
const TOTAL: i64 = 2_145;

fn auditing(server: &LocalStripe, cancel_orphans: bool) -> StripeAudit {
    StripeAudit {
        client: saga_stripe::Client::new(
            &server.url(),
            SecretString::from(SECRET_KEY.to_owned()),
            Duration::from_secs(10),
        )
        .unwrap(),
        cancel_orphans,
    }
}

/// A deployment whose payment worker charges through `server`, with
/// `payment` and `orchestrator` variables on top.
async fn deployment(
    server: &LocalStripe,
    payment: Vec<(&'static str, String)>,
    orchestrator: Vec<(&'static str, String)>,
) -> Deployment {
    let mut payment_env = server.payment_env();
    payment_env.extend(payment);
    Deployment::start_with(HashMap::from([
        ("payment", payment_env),
        ("orchestrator", orchestrator),
    ]))
    .await
}

/// The server's PaymentIntents of the checkout `id`.
async fn intents_of(server: &LocalStripe, id: &str) -> Vec<Value> {
    server
        .intents()
        .await
        .into_iter()
        .filter(|intent| intent["metadata"]["saga_id"] == id)
        .collect()
}

fn statuses(intents: &[Value]) -> Vec<&str> {
    let mut statuses: Vec<&str> = intents
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    statuses
}

/// The refunds of the PaymentIntent `intent`, summed.
async fn refunded(server: &LocalStripe, intent: &Value) -> (usize, i64) {
    let refunds: Vec<Value> = server
        .refunds()
        .await
        .into_iter()
        .filter(|refund| refund["payment_intent"] == intent["id"])
        .collect();
    (
        refunds.len(),
        refunds.iter().map(|r| r["amount"].as_i64().unwrap()).sum(),
    )
}

/// Restarts the payment worker without its failpoint, waits until the
/// checkout `id` (the deployment's one) ends `ends`, and returns its
/// PaymentIntents.
async fn restarted(
    deployment: &mut Deployment,
    server: &LocalStripe,
    id: &str,
    ends: &str,
) -> Vec<Value> {
    deployment
        .env
        .get_mut("payment")
        .unwrap()
        .retain(|(name, _)| *name != "PAYMENT_FAILPOINT");
    deployment.spawn("payment");
    let statuses_by = deployment.settle().await;
    assert_eq!(statuses_by.get(ends), Some(&1), "{statuses_by:?}");
    intents_of(server, id).await
}

/// A TSHIRT checkout paid with an approving card, placed on a deployment
/// whose payment worker aborts at `failpoint`, and that worker dead there.
async fn crashed_at(
    failpoint: &str,
    orchestrator: Vec<(&'static str, String)>,
) -> (LocalStripe, Deployment, String) {
    let server = LocalStripe::start().await;
    let failpoint = vec![("PAYMENT_FAILPOINT", failpoint.to_owned())];
    let mut deployment = deployment(&server, failpoint, orchestrator).await;
    let method = server.payment_method(cards::APPROVES).await;
    let id = deployment.place(&order(&[("TSHIRT", 1)], &method)).await;
    aborted(&mut deployment).await;
    (server, deployment, id)
}

/// Stops the deployment once the auditor, reading Stripe, finds it clean.
async fn stop_audited(deployment: Deployment, server: &LocalStripe) {
    deployment
        .stop_audited(Some(&auditing(server, false)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_completes_with_one_succeeded_payment_intent_of_the_total() {
    let server = LocalStripe::start().await;
    let deployment = deployment(&server, Vec::new(), Vec::new()).await;
    let method = server.payment_method(cards::APPROVES).await;

    let id = deployment.place(&order(&[("TSHIRT", 1)], &method)).await;
    let statuses_by = deployment.settle().await;

    assert_eq!(statuses_by.get("completed"), Some(&1), "{statuses_by:?}");
    let intents = intents_of(&server, &id).await;
    assert_eq!(statuses(&intents), ["succeeded"], "{intents:#?}");
    assert_eq!(intents[0]["amount"], TOTAL);
    assert_eq!(intents[0]["currency"], "usd");
    assert_eq!(intents[0]["payment_method"], method.as_str());
    assert_eq!(intents[0]["metadata"]["checkout_id"], id.as_str());
    assert_eq!(refunded(&server, &intents[0]).await, (0, 0));
    stop_audited(deployment, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_rejects_the_checkout_and_releases_the_stock() {
    let server = LocalStripe::start().await;
    let deployment = deployment(&server, Vec::new(), Vec::new()).await;
    let before = deployment.available("TSHIRT").await;
    let method = server.payment_method(cards::DECLINES).await;

    let id = deployment.place(&order(&[("TSHIRT", 2)], &method)).await;
    deployment.settle().await;

    let view = deployment.checkout(&id).await;
    assert_eq!(view["status"], "rejected", "{view}");
    assert_eq!(view["reason"], "payment_declined", "{view}");
    assert_eq!(
        deployment.available("TSHIRT").await,
        before,
        "the stock is back"
    );
    assert_eq!(
        statuses(&intents_of(&server, &id).await),
        ["requires_payment_method"]
    );
    assert!(server.refunds().await.is_empty());
    stop_audited(deployment, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_after_a_charge_refunds_the_whole_amount() {
    // The worker dies once the money moved, before it records it; the
    // charge misses its one-second deadline and the saga compensates.
    let (server, mut deployment, id) = crashed_at(
        "after_provider_charge",
        charge_compensated_after_one_second(),
    )
    .await;
    // Back only once the charge's deadline passed and the saga gave up on it.
    let sagas = &deployment.databases["orchestrator"].pool;
    saga_testkit::eventually("the saga compensating", PATIENCE, || async {
        let status: String = sqlx::query_scalar("SELECT status FROM sagas")
            .fetch_one(sagas)
            .await
            .ok()?;
        (status == "compensating").then_some(())
    })
    .await;
    let intents = restarted(&mut deployment, &server, &id, "compensated").await;
    assert_eq!(
        statuses(&intents),
        ["succeeded"],
        "charged once: {intents:#?}"
    );
    assert_eq!(
        refunded(&server, &intents[0]).await,
        (1, TOTAL),
        "refunded whole, once"
    );
    assert_eq!(
        deployment.payments().await,
        vec![("refunded".to_owned(), TOTAL, TOTAL)]
    );
    stop_audited(deployment, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_confirming_charges_once_after_restart() {
    let (server, mut deployment, id) = crashed_at("after_provider_charge", Vec::new()).await;
    assert_eq!(
        deployment.payments().await,
        vec![("charging".to_owned(), TOTAL, 0)]
    );
    let intents = restarted(&mut deployment, &server, &id, "completed").await;
    assert_eq!(
        statuses(&intents),
        ["succeeded"],
        "one PaymentIntent, confirmed once: {intents:#?}"
    );
    assert_eq!(
        deployment.payments().await,
        vec![("charged".to_owned(), TOTAL, 0)]
    );
    stop_audited(deployment, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_recording_its_intent_leaves_an_orphan_the_auditor_cancels() {
    let (server, mut deployment, id) = crashed_at("after_provider_create", Vec::new()).await;
    let intents = restarted(&mut deployment, &server, &id, "completed").await;
    assert_eq!(
        statuses(&intents),
        ["requires_confirmation", "succeeded"],
        "the orphan was never confirmed: {intents:#?}"
    );
    let orphan = intents
        .iter()
        .find(|i| i["status"] == "requires_confirmation")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reported = deployment.audit(Some(&auditing(&server, false))).await;
    assert!(
        reported.is_clean(),
        "an unconfirmed orphan moved nothing: {reported}"
    );
    assert!(
        reported
            .to_string()
            .contains(&format!("ORPHAN unconfirmed PaymentIntent {orphan}")),
        "{reported}"
    );
    let cancelling = deployment.audit(Some(&auditing(&server, true))).await;
    assert!(
        cancelling
            .to_string()
            .contains(&format!("CANCELLED orphan PaymentIntent {orphan}")),
        "{cancelling}"
    );
    assert_eq!(server.intent(&orphan).await["status"], "canceled");
    assert_eq!(
        statuses(&intents_of(&server, &id).await),
        ["canceled", "succeeded"]
    );
    stop_audited(deployment, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_away_for_ten_seconds_delays_the_checkouts_and_doubles_nothing() {
    const CHECKOUTS: usize = 5;
    const OUTAGE: Duration = Duration::from_secs(10);
    let mut server = LocalStripe::start().await;
    // Enough attempts to outlast the outage: the default policy (five)
    // parks a charge whose provider is away for longer than a few seconds.
    let patient = vec![("STEP_PAYMENT_CHARGE_MAX_ATTEMPTS", "60".to_owned())];
    let deployment = deployment(&server, Vec::new(), patient).await;
    let method = server.payment_method(cards::APPROVES).await;

    server.stop().await;
    let away_until = tokio::time::Instant::now() + OUTAGE;
    let mut ids = Vec::new();
    for _ in 0..CHECKOUTS {
        ids.push(deployment.place(&order(&[("TSHIRT", 1)], &method)).await);
    }
    // Every charge met the outage: each payment counts a failed call.
    let payments = &deployment.databases["payment"].pool;
    saga_testkit::eventually("every charge failed once", PATIENCE, || async {
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payments WHERE transient_failures > 0")
                .fetch_one(payments)
                .await
                .ok()?;
        (failed == CHECKOUTS as i64).then_some(())
    })
    .await;
    // The outage lasts its ten seconds: the scenario, not a wait for a state.
    tokio::time::sleep_until(away_until).await;
    server.start_again().await;
    let statuses_by = deployment.settle().await;

    assert_eq!(
        statuses_by.get("completed"),
        Some(&(CHECKOUTS as i64)),
        "{statuses_by:?}"
    );
    for id in &ids {
        let intents = intents_of(&server, id).await;
        assert_eq!(statuses(&intents), ["succeeded"], "{id}: {intents:#?}");
    }
    stop_audited(deployment, &server).await;
}
