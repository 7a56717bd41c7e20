use crate::system::{order, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_checkout_completes_with_exact_totals_stock_and_one_charge() {
    let system = System::start().await;
    // TSHIRT: 2 x 20.00 clothing in US/CA at 7.25%  -> 4000, tax 290
    // BOOK:   1 x 15.00 books, US default 3.00%     -> 1500, tax 45
    // MUG:    3 x  9.99 general, US/CA 8.25%        -> 2997, tax 247.2525 -> 247
    let done = system
        .checkout(&order(
            &[("TSHIRT", 2), ("BOOK", 1), ("MUG", 3)],
            "sim_approve",
        ))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["subtotal_cents"], 8_497);
    assert_eq!(done["tax_cents"], 290 + 45 + 247);
    assert_eq!(done["total_cents"], 8_497 + 582);
    assert_eq!(done["currency"], "USD");
    assert!(done.get("reason").is_none(), "{done}");

    assert_eq!(system.available("TSHIRT").await, 98);
    assert_eq!(system.available("BOOK").await, 49);
    assert_eq!(system.available("MUG").await, 7);
    assert_eq!(system.held().await, 6);
    system.assert_one_charge(9_079).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_and_unknown_sku_are_rejected_holding_nothing_charging_nothing() {
    let system = System::start().await;
    let rejections: [(&[(&str, u32)], &str); 3] = [
        (&[("TSHIRT", 1), ("SCARCE", 2)], "out_of_stock"),
        (&[("TSHIRT", 1), ("NOPE", 1)], "unknown_sku"),
        (&[("MUG", 1), ("EUROMUG", 1)], "currency_mismatch"),
    ];
    for (items, reason) in rejections {
        system
            .checkout_rejected(&order(items, "sim_approve"), reason)
            .await;
    }

    assert_eq!(system.available("TSHIRT").await, 100);
    assert_eq!(system.available("SCARCE").await, 1);
    assert_eq!(system.held().await, 0);
    assert!(system.payments().await.is_empty());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_payment_releases_the_stock_with_no_net_charge() {
    let system = System::start().await;
    system
        .checkout_rejected(
            &order(&[("TSHIRT", 3), ("MUG", 1)], "sim_decline"),
            "payment_declined",
        )
        .await;
    assert_eq!(system.available("TSHIRT").await, 100);
    assert_eq!(system.available("MUG").await, 10);
    assert_eq!(system.held().await, 0);
    let net: i64 = system
        .payments()
        .await
        .iter()
        .map(|(s, a, r)| {
            if s == "charged" || s == "refunded" {
                a - r
            } else {
                0
            }
        })
        .sum();
    assert_eq!(net, 0);
    // The timeline shows the reserve, the refusal and the release.
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(step, '') || ':' || event FROM saga_events
         WHERE event <> 'sent' ORDER BY id",
    )
    .fetch_all(&system.orchestrator_db.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        [
            ":started",
            "inventory.reserve:ok",
            "tax.calculate:ok",
            "payment.charge:rejected",
            "inventory.release:ok",
            ":compensated",
        ]
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_checkouts_all_finish_and_conserve_stock() {
    let system = System::start().await;
    // 12 buyers race for 10 mugs: exactly 10 succeed.
    let body = order(&[("MUG", 1)], "sim_approve");
    let results = futures::future::join_all((0..12).map(|_| system.checkout(&body))).await;
    let completed = results
        .iter()
        .filter(|r| r["status"] == "completed")
        .count();
    let rejected = results
        .iter()
        .filter(|r| r["reason"] == "out_of_stock")
        .count();
    assert_eq!((completed, rejected), (10, 2), "{results:?}");
    assert_eq!(system.available("MUG").await, 0);
    assert_eq!(system.held().await, 10);
    assert_eq!(system.payments().await.len(), 10);
    system.stop().await;
}
