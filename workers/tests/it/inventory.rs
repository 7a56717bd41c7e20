//! Reservations: all or nothing, once per saga, and released at most once.

use saga_protocol::envelope::DecodeError;
use saga_protocol::messages::{
    reason, Command, Outcome, ReleaseStock, Released, Reserved, StepResult,
};
use saga_protocol::Envelope;
use saga_testkit::{eventually, TestDatabase};
use sqlx::PgPool;
use uuid::Uuid;
use workers::inventory::{catalogue, Inventory, MIGRATOR};
use workers::runtime::{handle_command, Handler};

use crate::{handle, migrated, ok, priced_line, rejected, reserve_of, reserved};

const CATALOGUE: &str = "\
sku,name,on_hand,unit_price_cents,currency,tax_category
APPLE,Apple,10,125,USD,food
BOOK,A book,3,1999,USD,books
MUG,Mug,5,850,USD,general
EURO-MUG,Euro mug,5,800,EUR,general
";

async fn stocked() -> TestDatabase {
    let db = migrated("inventory", &MIGRATOR).await;
    catalogue::import(&db.pool, "catalogue.csv", CATALOGUE.as_bytes())
        .await
        .expect("seed the catalogue");
    db
}

fn release() -> Command {
    Command::Release(ReleaseStock {})
}

/// What the inventory worker answers to reserving `lines` for `saga`.
async fn reserving(pool: &PgPool, saga: Uuid, lines: &[(&str, u32)]) -> Outcome {
    handle(&Inventory, pool, saga, reserve_of(lines)).await
}

/// What the inventory worker answers to releasing `saga`'s stock.
async fn releasing(pool: &PgPool, saga: Uuid) -> Outcome {
    handle(&Inventory, pool, saga, release()).await
}

async fn available(pool: &PgPool, sku: &str) -> i32 {
    sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
        .bind(sku)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Invariant 3: per SKU, on hand = available + held by active reservations.
async fn assert_stock_conserved(pool: &PgPool) {
    let broken: Vec<(String, i32, i32, i64)> = sqlx::query_as(
        "SELECT p.sku, p.on_hand, p.available, coalesce(sum(l.quantity), 0)::int8
         FROM products p
         LEFT JOIN reservation_lines l ON l.sku = p.sku
             AND l.saga_id IN (SELECT saga_id FROM reservations WHERE status = 'active')
         GROUP BY p.sku, p.on_hand, p.available
         HAVING p.on_hand <> p.available + coalesce(sum(l.quantity), 0)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        broken.is_empty(),
        "stock not conserved (sku, on_hand, available, held): {broken:?}"
    );
}

/// Asserts what is available of each of `skus`, and that stock is conserved.
async fn assert_stock(pool: &PgPool, skus: &[(&str, i32)]) {
    for &(sku, expected) in skus {
        assert_eq!(available(pool, sku).await, expected, "available {sku}");
    }
    assert_stock_conserved(pool).await;
}

fn released(outcome: Outcome) -> bool {
    match ok(outcome) {
        StepResult::Released(Released { released }) => released,
        other => panic!("expected a release, got {other:?}"),
    }
}

#[tokio::test]
async fn reserve_holds_stock_and_prices_lines_in_request_order() {
    let db = stocked().await;
    let saga = Uuid::new_v4();

    let reservation = reserved(reserving(&db.pool, saga, &[("MUG", 2), ("APPLE", 4)]).await);

    assert_eq!(
        reservation,
        Reserved {
            currency: "USD".parse().unwrap(),
            lines: vec![
                priced_line("MUG", 2, 850, "general"),
                priced_line("APPLE", 4, 125, "food"),
            ],
        }
    );
    assert_stock(&db.pool, &[("MUG", 3), ("APPLE", 6)]).await;
}

/// Each reserve refused as a whole, with what its detail must and must not
/// name: all or nothing, so the stock stays as the catalogue has it.
#[tokio::test]
async fn refused_reserves_take_nothing_and_say_why() {
    let db = stocked().await;
    /// A reserve's lines, why it is refused, and what its detail must and
    /// must not name.
    struct Refused {
        lines: &'static [(&'static str, u32)],
        why: &'static str,
        named: &'static [&'static str],
        unnamed: &'static [&'static str],
    }
    let refused = [
        Refused {
            lines: &[("APPLE", 2), ("BOOK", 4)],
            why: reason::OUT_OF_STOCK,
            named: &["BOOK"],
            unnamed: &["APPLE"],
        },
        Refused {
            lines: &[("APPLE", 1), ("GHOST", 1)],
            why: reason::UNKNOWN_SKU,
            named: &["GHOST"],
            unnamed: &[],
        },
        Refused {
            lines: &[("MUG", 1), ("EURO-MUG", 1)],
            why: reason::CURRENCY_MISMATCH,
            named: &["EUR", "USD"],
            unnamed: &[],
        },
        Refused {
            lines: &[],
            why: reason::INVALID_COMMAND,
            named: &[],
            unnamed: &[],
        },
    ];

    for Refused {
        lines,
        why,
        named,
        unnamed,
    } in refused
    {
        let (reason, detail) = rejected(reserving(&db.pool, Uuid::new_v4(), lines).await);

        assert_eq!(reason, why, "{lines:?}: {detail}");
        for name in named {
            assert!(detail.contains(name), "{lines:?} names {name}: {detail}");
        }
        for name in unnamed {
            assert!(
                !detail.contains(name),
                "{lines:?} leaves out {name}: {detail}"
            );
        }
        assert_stock(
            &db.pool,
            &[("APPLE", 10), ("BOOK", 3), ("MUG", 5), ("EURO-MUG", 5)],
        )
        .await;
    }
}

#[tokio::test]
async fn a_sku_on_several_lines_is_checked_against_their_sum() {
    let db = stocked().await;

    let (why, _) = rejected(reserving(&db.pool, Uuid::new_v4(), &[("BOOK", 2), ("BOOK", 2)]).await);
    assert_eq!(why, reason::OUT_OF_STOCK);

    let reservation = reserved(
        reserving(
            &db.pool,
            Uuid::new_v4(),
            &[("BOOK", 2), ("MUG", 1), ("BOOK", 1)],
        )
        .await,
    );
    let skus: Vec<&str> = reservation.lines.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["BOOK", "MUG", "BOOK"]);
    assert_stock(&db.pool, &[("BOOK", 0)]).await;
}

/// A zero quantity is no `Quantity`: such a command does not decode, so it
/// is dead-lettered as undecodable and never reaches the handler.
#[test]
fn a_zero_quantity_reservation_does_not_decode_naming_the_field() {
    let command = Envelope::command(Uuid::new_v4(), 1, reserve_of(&[("BOOK", 1), ("MUG", 1)]));
    let mut body: serde_json::Value = serde_json::from_slice(&command.encode()).unwrap();
    body["payload"]["lines"][1]["quantity"] = 0.into();

    let error = Envelope::<Command>::decode(body.to_string().as_bytes()).unwrap_err();

    assert!(
        matches!(&error, DecodeError::BadPayload { message_type, .. } if message_type == "inventory.reserve"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("quantity must be at least 1"),
        "{error}"
    );
}

#[tokio::test]
async fn a_retried_reserve_replies_the_recorded_reservation_and_holds_once() {
    let db = stocked().await;
    let saga = Uuid::new_v4();
    let first = reserved(reserving(&db.pool, saga, &[("BOOK", 2)]).await);
    // Prices change between the attempts: the reply must not.
    sqlx::query("UPDATE products SET unit_price_cents = 1 WHERE sku = 'BOOK'")
        .execute(&db.pool)
        .await
        .unwrap();

    let again = reserved(reserving(&db.pool, saga, &[("BOOK", 2)]).await);

    assert_eq!(again, first);
    assert_stock(&db.pool, &[("BOOK", 1)]).await;
}

#[tokio::test]
async fn release_gives_stock_back_once() {
    let db = stocked().await;
    let saga = Uuid::new_v4();
    reserved(reserving(&db.pool, saga, &[("APPLE", 3), ("MUG", 5)]).await);
    assert_eq!(available(&db.pool, "MUG").await, 0);

    assert!(released(releasing(&db.pool, saga).await));
    assert!(
        !released(releasing(&db.pool, saga).await),
        "second release is a no-op"
    );

    assert_stock(&db.pool, &[("APPLE", 10), ("MUG", 5)]).await;
}

#[tokio::test]
async fn release_before_reserve_leaves_nothing_held_after_the_late_reserve() {
    let db = stocked().await;
    let saga = Uuid::new_v4();

    assert!(
        !released(releasing(&db.pool, saga).await),
        "nothing was held"
    );
    let (why, _) = rejected(reserving(&db.pool, saga, &[("APPLE", 1)]).await);

    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_eq!(available(&db.pool, "APPLE").await, 10);
    assert!(!released(releasing(&db.pool, saga).await));
    assert_stock_conserved(&db.pool).await;
}

#[tokio::test]
async fn a_refused_reserve_leaves_no_reservation_to_release() {
    let db = stocked().await;
    let saga = Uuid::new_v4();
    rejected(reserving(&db.pool, saga, &[("BOOK", 99)]).await);

    assert!(!released(releasing(&db.pool, saga).await));
    assert_stock(&db.pool, &[("BOOK", 3)]).await;
}

#[tokio::test]
async fn concurrent_first_reserves_for_one_saga_hold_stock_once() {
    let db = stocked().await;
    let saga = Uuid::new_v4();
    let first = Envelope::command(saga, 1, reserve_of(&[("MUG", 2)]));
    let second = Envelope::command(saga, 2, reserve_of(&[("MUG", 2)]));

    let mut tx1 = db.pool.begin().await.unwrap();
    let outcome1 = Inventory.handle(&mut tx1, &first).await.unwrap();
    // The second attempt waits on the first's uncommitted reservation key.
    let pool = db.pool.clone();
    let racer = tokio::spawn(async move {
        let mut tx2 = pool.begin().await.unwrap();
        let outcome = Inventory.handle(&mut tx2, &second).await.unwrap();
        tx2.commit().await.unwrap();
        outcome
    });
    let blocked = eventually_blocked(&db.pool).await;
    assert!(blocked, "the second reserve should wait on the first");
    tx1.commit().await.unwrap();
    let outcome2 = racer.await.unwrap();

    assert_eq!(reserved(outcome2), reserved(outcome1));
    assert_stock(&db.pool, &[("MUG", 3)]).await;
}

/// True once some session of this database waits on a lock.
async fn eventually_blocked(pool: &PgPool) -> bool {
    eventually(
        "a session waiting on a lock",
        std::time::Duration::from_secs(10),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (waiting > 0).then_some(true)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reserves_racing_for_the_last_unit_exactly_one_gets_it() {
    let db = stocked().await;
    for round in 0..10 {
        sqlx::query("UPDATE products SET on_hand = 1, available = 1 WHERE sku = 'BOOK'")
            .execute(&db.pool)
            .await
            .unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (first, second) = tokio::join!(
            reserving(&db.pool, a, &[("BOOK", 1)]),
            reserving(&db.pool, b, &[("BOOK", 1)]),
        );
        let won: Vec<bool> = [first, second]
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Ok(StepResult::Reserved(_)) => true,
                Outcome::Rejected { reason, .. } if reason == reason::OUT_OF_STOCK => false,
                other => panic!("round {round}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one reserve takes the last unit"
        );
        let available: i32 =
            sqlx::query_scalar("SELECT available FROM products WHERE sku = 'BOOK'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(available, 0, "round {round}");
    }
}

#[tokio::test]
async fn a_price_change_between_read_and_take_reserves_at_the_price_taken() {
    // The stock read before the write is only for deciding; the write checks
    // it again under lock. A concurrent price change is seen there.
    let db = stocked().await;
    let saga = Uuid::new_v4();
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE products SET unit_price_cents = 900 WHERE sku = 'MUG'")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let reserving =
        tokio::spawn(
            async move { handle(&Inventory, &pool, saga, reserve_of(&[("MUG", 2)])).await },
        );
    // The reserve reads the committed price (850), then waits on the row.
    assert!(eventually_blocked(&db.pool).await);
    blocker.commit().await.unwrap();
    let outcome = reserving.await.unwrap();
    let StepResult::Reserved(reserved) = ok(outcome) else {
        panic!("expected a reservation");
    };
    assert_eq!(
        reserved.lines[0].unit_price_cents, 900,
        "the price the stock was taken at"
    );
    assert_eq!(recorded_price(&db.pool, saga).await, 900);
}

/// Runs `command` as the runtime does (inbox, one-statement path first);
/// the reply's outcome.
async fn answered(pool: &PgPool, command: &Envelope<Command>) -> Outcome {
    crate::answered(&Inventory, pool, command).await
}

/// A reserve of one `sku` for a saga of its own: the worker then knows its
/// price, and tries the one-statement path.
async fn price_known(pool: &PgPool, sku: &str) {
    answered(
        pool,
        &Envelope::command(Uuid::new_v4(), 1, reserve_of(&[(sku, 1)])),
    )
    .await;
}

/// The unit price `saga`'s (one) reserved line was taken at.
async fn recorded_price(pool: &PgPool, saga: Uuid) -> i64 {
    sqlx::query_scalar("SELECT unit_price_cents FROM reservation_lines WHERE saga_id = $1")
        .bind(saga)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn inbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redelivered_reserve_gets_the_reply_its_one_statement_recorded() {
    let db = stocked().await;
    let command = Envelope::command(Uuid::new_v4(), 1, reserve_of(&[("MUG", 2), ("APPLE", 1)]));

    let first = handle_command(&Inventory, &db.pool, &command)
        .await
        .unwrap();
    let again = handle_command(&Inventory, &db.pool, &command)
        .await
        .unwrap();
    let once_more = handle_command(&Inventory, &db.pool, &command)
        .await
        .unwrap();

    assert_eq!(first, again, "the recorded reply, message id included");
    assert_eq!(first, once_more);
    let reservation = reserved(
        Envelope::<Outcome>::decode(&serde_json::to_vec(&first).unwrap())
            .unwrap()
            .payload,
    );
    assert_eq!(
        reservation.lines,
        vec![
            priced_line("MUG", 2, 850, "general"),
            priced_line("APPLE", 1, 125, "food"),
        ]
    );
    assert_eq!(available(&db.pool, "MUG").await, 3, "taken once");
    assert_eq!(inbox_rows(&db.pool).await, 1);
    // A retry (a new message) answers from the reservation.
    let retry = Envelope::command(command.saga_id, 2, command.payload.clone());
    assert_eq!(reserved(answered(&db.pool, &retry).await), reservation);
    assert_stock(&db.pool, &[("MUG", 3)]).await;
}

#[tokio::test]
async fn a_reserve_short_of_stock_is_refused_by_the_general_path_and_takes_nothing() {
    let db = stocked().await;
    // Prices known: the one-statement path is tried and finds the stock short.
    price_known(&db.pool, "MUG").await;
    let saga = Uuid::new_v4();
    let command = Envelope::command(saga, 1, reserve_of(&[("APPLE", 1), ("MUG", 5)]));

    let (why, detail) = rejected(answered(&db.pool, &command).await);

    assert_eq!(why, reason::OUT_OF_STOCK);
    assert!(detail.contains("wanted 5, available 4"), "{detail}");
    assert_eq!(available(&db.pool, "MUG").await, 4);
    assert_eq!(available(&db.pool, "APPLE").await, 10, "all or none");
    // The refusal is the saga's answer, even once stock is back.
    sqlx::query("UPDATE products SET on_hand = 50, available = 49 WHERE sku = 'MUG'")
        .execute(&db.pool)
        .await
        .unwrap();
    let retry = Envelope::command(saga, 2, command.payload.clone());
    let (again, _) = rejected(answered(&db.pool, &retry).await);
    assert_eq!(again, reason::OUT_OF_STOCK);
    assert_stock(&db.pool, &[("MUG", 49)]).await;
}

#[tokio::test]
async fn a_price_changed_since_it_was_read_is_answered_at_the_new_price() {
    let db = stocked().await;
    price_known(&db.pool, "MUG").await;
    sqlx::query("UPDATE products SET unit_price_cents = 900 WHERE sku = 'MUG'")
        .execute(&db.pool)
        .await
        .unwrap();
    let saga = Uuid::new_v4();

    for attempt in 1..=2 {
        // Seen stale by the first, remembered anew for the second.
        let saga = if attempt == 1 { saga } else { Uuid::new_v4() };
        let command = Envelope::command(saga, 1, reserve_of(&[("MUG", 1)]));
        let reservation = reserved(answered(&db.pool, &command).await);
        assert_eq!(
            reservation.lines[0].unit_price_cents, 900,
            "attempt {attempt}"
        );
    }
    assert_eq!(recorded_price(&db.pool, saga).await, 900);
    assert_stock_conserved(&db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reserves_in_one_statement_each_never_oversell() {
    let db = stocked().await;
    // MUG: 5 units for 24 buyers, each also taking an apple.
    price_known(&db.pool, "BOOK").await;
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let pool = db.pool.clone();
        buyers.spawn(async move {
            let command =
                Envelope::command(Uuid::new_v4(), 1, reserve_of(&[("MUG", 1), ("APPLE", 1)]));
            answered(&pool, &command).await
        });
    }
    let (mut won, mut refused) = (0, 0);
    while let Some(outcome) = buyers.join_next().await {
        match outcome.unwrap() {
            Outcome::Ok(StepResult::Reserved(_)) => won += 1,
            Outcome::Rejected { reason, .. } if reason == reason::OUT_OF_STOCK => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, refused), (5, 19));
    assert_eq!(available(&db.pool, "MUG").await, 0);
    assert_eq!(
        available(&db.pool, "APPLE").await,
        5,
        "an apple per mug sold"
    );
    assert_stock_conserved(&db.pool).await;
}

#[tokio::test]
async fn a_release_gives_back_what_one_statement_reserved_and_a_late_reserve_holds_nothing() {
    let db = stocked().await;
    let saga = Uuid::new_v4();
    reserved(
        answered(
            &db.pool,
            &Envelope::command(saga, 1, reserve_of(&[("MUG", 2)])),
        )
        .await,
    );
    let release_command = Envelope::command(saga, 1, release());
    assert!(released(answered(&db.pool, &release_command).await));
    assert_eq!(available(&db.pool, "MUG").await, 5);

    // Released before its reserve came: the late reserve holds nothing.
    let late = Uuid::new_v4();
    assert!(!released(
        answered(&db.pool, &Envelope::command(late, 1, release())).await
    ));
    let (why, _) = rejected(
        answered(
            &db.pool,
            &Envelope::command(late, 1, reserve_of(&[("MUG", 2)])),
        )
        .await,
    );
    assert_eq!(why, reason::ALREADY_COMPENSATED);
    assert_stock(&db.pool, &[("MUG", 5)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_statement_reserve_that_loses_the_race_for_its_saga_answers_what_the_winner_did() {
    let db = stocked().await;
    price_known(&db.pool, "MUG").await;
    let saga = Uuid::new_v4();
    // The first attempt holds the saga's reservation (and the MUG row),
    // uncommitted, when the second tries its one statement.
    let first = Envelope::command(saga, 1, reserve_of(&[("MUG", 2)]));
    let mut tx = db.pool.begin().await.unwrap();
    let outcome1 = Inventory.handle(&mut tx, &first).await.unwrap();
    let second = Envelope::command(saga, 2, reserve_of(&[("MUG", 2)]));
    let racer = {
        let pool = db.pool.clone();
        tokio::spawn(async move { answered(&pool, &second).await })
    };
    assert!(eventually_blocked(&db.pool).await);
    tx.commit().await.unwrap();

    assert_eq!(reserved(racer.await.unwrap()), reserved(outcome1));
    assert_eq!(available(&db.pool, "MUG").await, 2, "taken once");
    assert_stock_conserved(&db.pool).await;
}
