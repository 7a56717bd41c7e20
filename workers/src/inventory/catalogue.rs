//! The catalogue as an operator handles it: imported from and exported to
//! CSV. An import checks every row before it changes anything, and never
//! lets on hand fall below what active reservations hold.

use std::collections::hash_map::Entry as Seen;
use std::collections::HashMap;
use std::io::Read;

use saga_protocol::values::{Cents, Currency, Sku, ValueError};
use sqlx::PgPool;

use crate::import::{read_rows, ImportSummary, Problems, Row};
use crate::WorkerError;

pub const IMPORT_HEADER: [&str; 6] = [
    "sku",
    "name",
    "on_hand",
    "unit_price_cents",
    "currency",
    "tax_category",
];

/// The largest unit price an import accepts: one million in the currency's
/// major unit, the payment worker's default largest charge. A bound keeps
/// every subtotal (price x quantity, quantity at most 10,000) far from an
/// `i64` overflow.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// The longest SKU an import accepts, in characters: any SKU's.
pub const MAX_SKU_CHARS: usize = Sku::MAX_CHARS;

pub const EXPORT_HEADER: [&str; 7] = [
    "sku",
    "name",
    "on_hand",
    "available",
    "unit_price_cents",
    "currency",
    "tax_category",
];

/// One valid row of an import file.
struct Entry {
    line: u64,
    sku: Sku,
    name: String,
    on_hand: i32,
    unit_price_cents: Cents,
    currency: Currency,
    tax_category: String,
}

/// Loads a catalogue, all of it or none of it. A new SKU starts with all its
/// stock available; an existing one keeps what its reservations hold.
pub async fn import(
    pool: &PgPool,
    source: &str,
    input: impl Read,
) -> Result<ImportSummary, WorkerError> {
    let rows = read_rows(source, input, &IMPORT_HEADER)?;
    let mut entries = validate(source, &rows)?;
    // Every statement below then takes its row locks in SKU order, as
    // reservations do, so concurrent writers never deadlock.
    entries.sort_by(|a, b| a.sku.cmp(&b.sku));

    let mut tx = pool.begin().await?;
    let skus: Vec<&str> = entries.iter().map(|e| e.sku.as_str()).collect();
    let held: HashMap<String, i32> = sqlx::query_as::<_, (String, i32)>(
        "SELECT sku, on_hand - available FROM products
         WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    let mut problems = Problems::new(source);
    for entry in &entries {
        match held.get(entry.sku.as_str()) {
            Some(&held) if entry.on_hand < held => problems.add(
                entry.line,
                "on_hand",
                format!(
                    "{} is below the {held} units of `{}` held by active reservations",
                    entry.on_hand, entry.sku
                ),
            ),
            _ => {}
        }
    }
    problems.into_result()?;

    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let on_hand: Vec<i32> = entries.iter().map(|e| e.on_hand).collect();
    let prices: Vec<i64> = entries.iter().map(|e| e.unit_price_cents.get()).collect();
    let currencies: Vec<&str> = entries.iter().map(|e| e.currency.as_str()).collect();
    let categories: Vec<&str> = entries.iter().map(|e| e.tax_category.as_str()).collect();
    // `on_hand - available` on the right of SET is the old row's: what its
    // reservations hold, which the new stock keeps held.
    sqlx::query(
        "INSERT INTO products
             (sku, name, on_hand, available, unit_price_cents, currency, tax_category)
         SELECT e.sku, e.name, e.on_hand, e.on_hand, e.unit_price_cents, e.currency, e.tax_category
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::text[], $6::text[])
             AS e (sku, name, on_hand, unit_price_cents, currency, tax_category)
         ON CONFLICT (sku) DO UPDATE SET
             name = EXCLUDED.name,
             on_hand = EXCLUDED.on_hand,
             available = EXCLUDED.on_hand - (products.on_hand - products.available),
             unit_price_cents = EXCLUDED.unit_price_cents,
             currency = EXCLUDED.currency,
             tax_category = EXCLUDED.tax_category,
             updated_at = now()",
    )
    .bind(&skus)
    .bind(&names)
    .bind(&on_hand)
    .bind(&prices)
    .bind(&currencies)
    .bind(&categories)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let updated = entries
        .iter()
        .filter(|e| held.contains_key(e.sku.as_str()))
        .count();
    Ok(ImportSummary::of("products", entries.len(), updated))
}

fn validate(source: &str, rows: &[Row]) -> Result<Vec<Entry>, WorkerError> {
    let mut problems = Problems::new(source);
    let mut first_line: HashMap<Sku, u64> = HashMap::new();
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let field = |i: usize| row.record.get(i).unwrap_or_default();
        let line = row.line;
        let text = field(0);
        let sku = match Sku::parse(text) {
            Ok(sku) => match first_line.entry(sku.clone()) {
                Seen::Occupied(first) => {
                    problems.add(
                        line,
                        "sku",
                        format!("`{sku}` is already on line {}", first.get()),
                    );
                    None
                }
                Seen::Vacant(slot) => {
                    slot.insert(line);
                    Some(sku)
                }
            },
            Err(error) => {
                problems.add(line, "sku", sku_problem(text, error));
                None
            }
        };
        let on_hand = match whole_number(field(2)) {
            Ok(n) if n > i64::from(i32::MAX) => {
                problems.add(line, "on_hand", format!("{n} is too large"));
                None
            }
            Ok(n) => Some(n as i32),
            Err(problem) => {
                problems.add(line, "on_hand", problem);
                None
            }
        };
        let unit_price_cents = match whole_number(field(3)) {
            Ok(n) if n > MAX_UNIT_PRICE_CENTS => {
                problems.add(
                    line,
                    "unit_price_cents",
                    format!("{n} is above the largest unit price, {MAX_UNIT_PRICE_CENTS}"),
                );
                None
            }
            Ok(n) => Some(n),
            Err(problem) => {
                problems.add(line, "unit_price_cents", problem);
                None
            }
        };
        // Lower case is refused, not upper-cased: see `Currency`.
        let text = field(4);
        let currency = match Currency::parse(text) {
            Ok(currency) => Some(currency),
            Err(_) => {
                problems.add(
                    line,
                    "currency",
                    format!("`{text}` is not three upper-case letters (ISO 4217, e.g. USD)"),
                );
                None
            }
        };
        let tax_category = field(5);
        if tax_category.is_empty() {
            problems.add(line, "tax_category", "is empty");
        }
        if let (Some(sku), Some(on_hand), Some(unit_price_cents), Some(currency)) =
            (sku, on_hand, unit_price_cents, currency)
        {
            entries.push(Entry {
                line,
                sku,
                name: field(1).to_owned(),
                on_hand,
                unit_price_cents: Cents::new(unit_price_cents),
                currency,
                tax_category: tax_category.to_owned(),
            });
        }
    }
    problems.into_result()?;
    Ok(entries)
}

/// What is wrong with the SKU `text`, in the words this import has always
/// used.
fn sku_problem(text: &str, error: ValueError) -> String {
    match error {
        ValueError::Blank { .. } if text.is_empty() => "is empty".to_owned(),
        ValueError::Blank { .. } => "is blank".to_owned(),
        ValueError::TooLong { chars, .. } => {
            format!("is {chars} characters long, more than {MAX_SKU_CHARS}")
        }
        ValueError::ControlCharacter { .. } => format!("{text:?} holds a control character"),
        other => other.to_string(),
    }
}

/// A count or an amount of minor units: an integer, zero or more.
fn whole_number(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("{n} is negative")),
        Ok(n) => Ok(n),
        Err(_) if text.is_empty() => Err("is empty".to_owned()),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// The whole catalogue as CSV, sorted by SKU.
pub async fn export(pool: &PgPool) -> Result<Vec<u8>, WorkerError> {
    let rows: Vec<(String, String, i32, i32, i64, String, String)> = sqlx::query_as(
        "SELECT sku, name, on_hand, available, unit_price_cents, currency, tax_category
         FROM products ORDER BY sku COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory has no I/O to fail, and every record has the same
    // number of fields.
    let written = "CSV into memory";
    writer.write_record(EXPORT_HEADER).expect(written);
    for (sku, name, on_hand, available, price, currency, category) in rows {
        writer
            .write_record([
                sku,
                name,
                on_hand.to_string(),
                available.to_string(),
                price.to_string(),
                currency,
                category,
            ])
            .expect(written);
    }
    Ok(writer.into_inner().expect(written))
}
