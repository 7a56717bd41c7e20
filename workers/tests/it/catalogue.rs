//! The catalogue's CSV import and export.

use sqlx::PgPool;
use uuid::Uuid;
use workers::import::ImportSummary;
use workers::inventory::{catalogue, Inventory, MIGRATOR};
use workers::WorkerError;

use crate::{handle, migrated, ok, reserve_of};

const HEADER: &str = "sku,name,on_hand,unit_price_cents,currency,tax_category\n";

async fn import(pool: &PgPool, csv: &str) -> Result<ImportSummary, WorkerError> {
    catalogue::import(pool, "catalogue.csv", csv.as_bytes()).await
}

async fn export(pool: &PgPool) -> String {
    String::from_utf8(catalogue::export(pool).await.unwrap()).unwrap()
}

fn input_error(result: Result<ImportSummary, WorkerError>) -> String {
    match result {
        Err(WorkerError::Input(message)) => message,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[tokio::test]
async fn import_then_export_round_trips_sorted_by_sku() {
    let db = migrated("catalogue", &MIGRATOR).await;
    let csv =
        format!("{HEADER}MUG,\"Mug, large\",5,850,USD,general\nAPPLE,Apple,10,125,USD,food\n");

    let summary = import(&db.pool, &csv).await.unwrap();

    assert_eq!(
        summary.to_string(),
        "imported 2 products (2 new, 0 updated)"
    );
    assert_eq!(
        export(&db.pool).await,
        "sku,name,on_hand,available,unit_price_cents,currency,tax_category\n\
         APPLE,Apple,10,10,125,USD,food\n\
         MUG,\"Mug, large\",5,5,850,USD,general\n"
    );
}

#[tokio::test]
async fn reimport_updates_products_and_keeps_what_reservations_hold() {
    let db = migrated("catalogue", &MIGRATOR).await;
    import(&db.pool, &format!("{HEADER}MUG,Mug,5,850,USD,general\n"))
        .await
        .unwrap();
    ok(handle(
        &Inventory,
        &db.pool,
        Uuid::new_v4(),
        reserve_of(&[("MUG", 2)]),
    )
    .await);

    let summary = import(
        &db.pool,
        &format!("{HEADER}MUG,Big mug,12,900,USD,kitchen\nBOWL,Bowl,1,400,USD,kitchen\n"),
    )
    .await
    .unwrap();

    assert_eq!((summary.new, summary.updated), (1, 1));
    let csv = export(&db.pool).await;
    assert!(
        csv.contains("\nMUG,Big mug,12,10,900,USD,kitchen\n"),
        "{csv}"
    );
    assert!(csv.contains("\nBOWL,Bowl,1,1,400,USD,kitchen\n"), "{csv}");

    // Two units are held: on hand cannot drop below them.
    let error = input_error(
        import(
            &db.pool,
            &format!("{HEADER}MUG,Big mug,1,900,USD,kitchen\n"),
        )
        .await,
    );
    assert!(
        error.contains("line 2") && error.contains("on_hand") && error.contains("held"),
        "{error}"
    );
    assert!(
        export(&db.pool).await.contains("\nMUG,Big mug,12,10,"),
        "nothing changed"
    );
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_field_and_nothing_is_imported() {
    let db = migrated("catalogue", &MIGRATOR).await;
    let csv = format!(
        "{HEADER}\
         GOOD,Good,1,100,USD,general\n\
         ,No sku,1,100,USD,general\n\
         NEG,Negative,-1,100,USD,general\n\
         FRAC,Fraction,1.5,100,USD,general\n\
         PRICE,Price,1,-5,USD,general\n\
         CUR,Currency,1,100,usd,general\n\
         CAT,Category,1,100,USD,\n\
         GOOD,Again,1,100,USD,general\n"
    );

    let error = input_error(import(&db.pool, &csv).await);

    for expected in [
        "line 3, sku: is empty",
        "line 4, on_hand: -1 is negative",
        "line 5, on_hand: `1.5` is not a whole number",
        "line 6, unit_price_cents: -5 is negative",
        "line 7, currency: `usd`",
        "line 8, tax_category: is empty",
        "line 9, sku: `GOOD` is already on line 2",
        "nothing imported",
    ] {
        assert!(error.contains(expected), "missing `{expected}` in: {error}");
    }
    assert!(!error.contains('\n'), "one line: {error}");
    assert_eq!(export(&db.pool).await.lines().count(), 1, "only the header");
}

#[tokio::test]
async fn a_wrong_header_or_ragged_row_is_refused() {
    let db = migrated("catalogue", &MIGRATOR).await;

    let error = input_error(import(&db.pool, "sku,name,stock\nA,B,1\n").await);
    assert!(error.contains("line 1, header"), "{error}");

    let error = input_error(import(&db.pool, &format!("{HEADER}A,B,1\n")).await);
    assert!(
        error.contains("line 2") && error.contains("3 fields, expected 6"),
        "{error}"
    );

    let error = input_error(import(&db.pool, "").await);
    assert!(error.contains("empty"), "{error}");
}

#[tokio::test]
async fn prices_above_the_bound_and_long_or_control_skus_are_refused_by_line() {
    let db = migrated("catalogue", &MIGRATOR).await;
    let long = "S".repeat(65);
    let longest = "L".repeat(64);
    let csv = format!(
        "{HEADER}\
         RICH,Rich,1,100000001,USD,general\n\
         MAX,Max,1,9223372036854775807,USD,general\n\
         {long},Long,1,100,USD,general\n\
         BEL\u{7}L,Bell,1,100,USD,general\n\
         N\u{0}UL,Nul,1,100,USD,general\n\
         TA\tB,Tab,1,100,USD,general\n"
    );

    let error = input_error(import(&db.pool, &csv).await);

    assert!(
        error.contains(
            "line 2, unit_price_cents: 100000001 is above the largest unit price, 100000000"
        ),
        "{error}"
    );
    assert!(error.contains("line 3, unit_price_cents"), "{error}");
    assert!(
        error.contains("line 4, sku: is 65 characters long, more than 64"),
        "{error}"
    );
    for line in [5, 6, 7] {
        assert!(
            error.contains(&format!("line {line}, sku:")) && error.contains("control character"),
            "line {line}: {error}"
        );
    }
    assert!(error.ends_with("(nothing imported)"), "{error}");
    assert_eq!(
        export(&db.pool).await.lines().count(),
        1,
        "only the header: nothing imported"
    );

    // The bounds themselves are accepted.
    import(
        &db.pool,
        &format!("{HEADER}{longest},Longest,1,100000000,USD,general\n"),
    )
    .await
    .unwrap();
}
