//! Money that cannot be charged: a total above the payment worker's maximum
//! is refused by the payment worker, a subtotal that does not fit in an
//! `i64` by the orchestrator; either way the checkout is rejected
//! `invalid_amount`, its stock released and nothing charged.

use crate::system::{order, System};

async fn stock(system: &System, sku: &str, unit_price_cents: i64) {
    sqlx::query(
        "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency, tax_category)
         VALUES ($1, $1, 10, 10, $2, 'USD', 'general')",
    )
    .bind(sku)
    .bind(unit_price_cents)
    .execute(&system.inventory_db.pool)
    .await
    .unwrap();
}

async fn ledger_entries(system: &System) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM provider_ledger")
        .fetch_one(&system.payment_db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_above_the_maximum_charge_is_rejected_invalid_amount() {
    let system = System::start().await;
    // 1,000,000.00 plus 8.25% tax: over the default maximum of 100,000,000 cents.
    stock(&system, "YACHT", 100_000_000).await;

    system
        .checkout_rejected(&order(&[("YACHT", 1)], "sim_approve"), "invalid_amount")
        .await;
    assert_eq!(system.available("YACHT").await, 10);
    assert_eq!(system.held().await, 0);
    assert!(
        system.payments().await.is_empty(),
        "nothing stored as charged"
    );
    assert_eq!(ledger_entries(&system).await, 0, "nothing at the provider");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtotal_that_overflows_is_rejected_not_wrapped() {
    let system = System::start().await;
    // Written past the import's bound, straight into the table.
    stock(&system, "PLANET", i64::MAX / 2).await;

    system
        .checkout_rejected(&order(&[("PLANET", 3)], "sim_approve"), "invalid_amount")
        .await;
    assert_eq!(system.available("PLANET").await, 10);
    assert!(system.payments().await.is_empty());
    system.stop().await;
}
