//! Tax per line, rounded half up, with the country default as fallback.

use saga_protocol::messages::{
    reason, CalculateTax, Command, LineTax, Outcome, PricedLine, ShipTo, StepResult, TaxCalculated,
};
use saga_protocol::values::Cents;
use saga_protocol::Envelope;
use saga_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;
use workers::runtime::{handle_batch, handle_command, Batched};
use workers::tax::{rates, Tax, MIGRATOR};
use workers::WorkerError;

use crate::{handle, migrated, ok, priced_line, rejected};

const RATES: &str = "\
country,region,category,rate_bp
US,,general,500
US,CA,general,725
us,ca,food,0
DE,,general,1900
";

async fn with_rates() -> TestDatabase {
    let db = migrated("tax", &MIGRATOR).await;
    rates::import(&db.pool, "rates.csv", RATES.as_bytes())
        .await
        .expect("seed the rates");
    db
}

fn calculate(country: &str, region: &str, lines: Vec<PricedLine>) -> Command {
    Command::CalculateTax(CalculateTax {
        ship_to: ShipTo {
            country: country.into(),
            region: region.into(),
        },
        currency: "USD".parse().unwrap(),
        lines,
    })
}

/// What the tax worker answers to taxing `lines` shipped to `country` and
/// `region`, for a saga of its own.
async fn calculating(
    pool: &PgPool,
    country: &str,
    region: &str,
    lines: Vec<PricedLine>,
) -> Outcome {
    handle(
        &Tax,
        pool,
        Uuid::new_v4(),
        calculate(country, region, lines),
    )
    .await
}

fn line_tax(sku: &str, rate_bp: u32, tax_cents: i64) -> LineTax {
    LineTax {
        sku: sku.parse().unwrap(),
        rate_bp,
        tax_cents: Cents::new(tax_cents),
    }
}

fn taxed(result: StepResult) -> TaxCalculated {
    match result {
        StepResult::TaxCalculated(taxed) => taxed,
        other => panic!("expected tax, got {other:?}"),
    }
}

#[tokio::test]
async fn tax_is_rounded_half_up_per_line_with_the_region_rate() {
    let db = with_rates().await;
    let lines = vec![
        // 1000 * 7.25% = 72.5 -> 73
        priced_line("A", 1, 1000, "general"),
        // 3 * 333 = 999 * 7.25% = 72.4275 -> 72
        priced_line("B", 3, 333, "general"),
        priced_line("C", 2, 500, "food"),
        priced_line("D", 1, 1000, "general"),
    ];

    let taxed = taxed(ok(calculating(&db.pool, "US", "CA", lines).await));

    assert_eq!(
        taxed,
        TaxCalculated {
            lines: vec![
                line_tax("A", 725, 73),
                line_tax("B", 725, 72),
                line_tax("C", 0, 0),
                line_tax("D", 725, 73),
            ],
            // Per line; on the 2999 taxed subtotal it would be 217.
            tax_cents: Cents::new(218),
        }
    );
}

#[tokio::test]
async fn rounding_is_per_line_not_on_the_total() {
    let db = with_rates().await;
    // 10 cents at 5% is 0.5 -> 1 per line; on the 30-cent total it would be 1.5 -> 2.
    let lines = ["A", "B", "C"].map(|sku| priced_line(sku, 1, 10, "general"));

    let taxed = taxed(ok(calculating(&db.pool, "US", "", lines.to_vec()).await));

    assert_eq!(taxed.tax_cents, 3);
    assert!(taxed
        .lines
        .iter()
        .all(|l| l.rate_bp == 500 && l.tax_cents == 1));
}

#[tokio::test]
async fn an_unknown_region_falls_back_to_the_country_default_case_insensitively() {
    let db = with_rates().await;

    let taxed = taxed(ok(calculating(
        &db.pool,
        "us",
        "ny",
        vec![priced_line("A", 1, 2000, "general")],
    )
    .await));
    assert_eq!(taxed.lines[0].rate_bp, 500);
    assert_eq!(taxed.tax_cents, 100);

    let taxed = taxed_in(&db, "Us", "cA").await;
    assert_eq!(
        taxed.lines[0].rate_bp, 725,
        "region rates win over the default"
    );
}

async fn taxed_in(db: &TestDatabase, country: &str, region: &str) -> TaxCalculated {
    taxed(ok(calculating(
        &db.pool,
        country,
        region,
        vec![priced_line("A", 1, 2000, "general")],
    )
    .await))
}

#[tokio::test]
async fn no_rate_is_refused_naming_country_region_and_category() {
    let db = with_rates().await;

    let (why, detail) = rejected(
        calculating(
            &db.pool,
            "US",
            "NY",
            vec![
                priced_line("A", 1, 100, "general"),
                priced_line("B", 1, 100, "food"),
            ],
        )
        .await,
    );
    assert_eq!(why, reason::NO_TAX_RATE);
    assert!(
        detail.contains("US-NY") && detail.contains("food") && !detail.contains("general"),
        "{detail}"
    );

    let (why, detail) = rejected(
        calculating(
            &db.pool,
            "FR",
            "",
            vec![priced_line("A", 1, 100, "general")],
        )
        .await,
    );
    assert_eq!(why, reason::NO_TAX_RATE);
    assert!(
        detail.contains("FR") && detail.contains("general"),
        "{detail}"
    );
}

#[tokio::test]
async fn rate_import_upserts_and_refuses_bad_rows() {
    let db = with_rates().await;

    let summary = rates::import(
        &db.pool,
        "more.csv",
        "country,region,category,rate_bp\nUS,CA,general,800\nFR,,general,2000\n".as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        summary.to_string(),
        "imported 2 tax rates (1 new, 1 updated)"
    );
    assert_eq!(taxed_in(&db, "US", "CA").await.lines[0].rate_bp, 800);

    let bad = "country,region,category,rate_bp\n\
               USA,,general,100\n\
               US,,,100\n\
               US,,general,10001\n\
               US,,general,x\n\
               DE,,books,700\n\
               de,,books,700\n";
    let error = match rates::import(&db.pool, "bad.csv", bad.as_bytes()).await {
        Err(WorkerError::Input(message)) => message,
        other => panic!("expected an input error, got {other:?}"),
    };
    for expected in [
        "bad.csv: line 2, country",
        "line 3, category: is empty",
        "line 4, rate_bp: 10001 is outside",
        "line 5, rate_bp: `x`",
        "line 7, country/region/category: DE `books` is already on line 6",
        "nothing imported",
    ] {
        assert!(error.contains(expected), "missing `{expected}` in: {error}");
    }
    let books: i64 = sqlx::query_scalar("SELECT count(*) FROM tax_rates WHERE category = 'books'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(books, 0, "nothing imported");
}

/// The tax of a recorded reply body.
fn recorded_tax(reply: &serde_json::Value) -> i64 {
    let body = serde_json::to_vec(reply).expect("JSON serializes");
    let reply = Envelope::<Outcome>::decode(&body).expect("a recorded reply is an envelope");
    taxed(ok(reply.payload)).tax_cents.get()
}

// The claim and the reply are one statement, outside any transaction: a
// redelivery, alone or twice in one batch, is still answered the way the
// first delivery was, even once the rates changed in between.
#[tokio::test]
async fn a_redelivered_tax_command_is_answered_with_the_first_reply() {
    let db = with_rates().await;
    let command = Envelope::command(
        Uuid::new_v4(),
        1,
        calculate("US", "CA", vec![priced_line("A", 1, 1000, "general")]),
    );
    let first = handle_command(&Tax, &db.pool, &command).await.unwrap();
    assert_eq!(recorded_tax(&first), 73);

    rates::import(
        &db.pool,
        "raise.csv",
        "country,region,category,rate_bp\nUS,CA,general,900\n".as_bytes(),
    )
    .await
    .unwrap();
    let again = handle_command(&Tax, &db.pool, &command).await.unwrap();
    assert_eq!(again, first, "a redelivery gets the recorded reply");

    let fresh = Envelope::command(
        Uuid::new_v4(),
        1,
        calculate("US", "CA", vec![priced_line("A", 1, 1000, "general")]),
    );
    let batch = handle_batch(&Tax, &db.pool, &[&command, &fresh, &fresh])
        .await
        .unwrap();
    let replies: Vec<serde_json::Value> = batch
        .into_iter()
        .map(|done| match done {
            Batched::Reply(reply) => reply,
            _ => panic!("every command of the batch is answered"),
        })
        .collect();
    assert_eq!(replies[0], first, "the redelivery in a batch too");
    assert_eq!(
        recorded_tax(&replies[1]),
        90,
        "a new command sees the new rate"
    );
    assert_eq!(
        replies[2], replies[1],
        "a duplicate in one batch, one answer"
    );

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE reply IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2, "one inbox row per message, each with its reply");
}
