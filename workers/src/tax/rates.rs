//! Tax rates by country, region and category, in basis points. An empty
//! region is the country's default for the category. Country and region are
//! stored upper-case and looked up case-insensitively.

use std::collections::hash_map::Entry as Seen;
use std::collections::HashMap;
use std::io::Read;

use sqlx::{PgConnection, PgPool};

use crate::import::{read_rows, ImportSummary, Problems, Row};
use crate::WorkerError;

pub const IMPORT_HEADER: [&str; 4] = ["country", "region", "category", "rate_bp"];

/// 100%: no rate is above it.
pub const MAX_RATE_BP: u32 = 10_000;

/// Where a rate applies, normalized as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub country: String,
    pub region: String,
}

impl Destination {
    pub fn new(country: &str, region: &str) -> Self {
        Destination {
            country: country.trim().to_uppercase(),
            region: region.trim().to_uppercase(),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.region.is_empty() {
            f.write_str(&self.country)
        } else {
            write!(f, "{}-{}", self.country, self.region)
        }
    }
}

/// The rate of each category that has one at `destination`: the region's
/// own rate, else the country default.
pub async fn for_destination(
    conn: &mut PgConnection,
    destination: &Destination,
    categories: &[&str],
) -> Result<HashMap<String, u32>, sqlx::Error> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT region, category, rate_bp FROM tax_rates
         WHERE country = $1 AND region IN ($2, '') AND category = ANY($3)",
    )
    .bind(&destination.country)
    .bind(&destination.region)
    .bind(categories)
    .fetch_all(&mut *conn)
    .await?;
    let mut rates = HashMap::new();
    for (region, category, rate_bp) in rows {
        // The table's CHECK keeps rates within 0..=10000.
        let rate_bp = rate_bp.unsigned_abs();
        if region.is_empty() {
            rates.entry(category).or_insert(rate_bp);
        } else {
            rates.insert(category, rate_bp);
        }
    }
    Ok(rates)
}

struct Rate {
    destination: Destination,
    category: String,
    rate_bp: i32,
}

/// Loads tax rates, all of them or none: new keys are added, existing ones
/// get the file's rate.
pub async fn import(
    pool: &PgPool,
    source: &str,
    input: impl Read,
) -> Result<ImportSummary, WorkerError> {
    let rows = read_rows(source, input, &IMPORT_HEADER)?;
    let rates = validate(source, &rows)?;
    let countries: Vec<&str> = rates
        .iter()
        .map(|r| r.destination.country.as_str())
        .collect();
    let regions: Vec<&str> = rates
        .iter()
        .map(|r| r.destination.region.as_str())
        .collect();
    let categories: Vec<&str> = rates.iter().map(|r| r.category.as_str()).collect();
    let rate_bp: Vec<i32> = rates.iter().map(|r| r.rate_bp).collect();
    let mut tx = pool.begin().await?;
    // `xmax = 0` only on a row this statement inserted rather than updated.
    let inserted: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO tax_rates (country, region, category, rate_bp)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[])
         ON CONFLICT (country, region, category) DO UPDATE SET rate_bp = EXCLUDED.rate_bp
         RETURNING (xmax = 0)",
    )
    .bind(&countries)
    .bind(&regions)
    .bind(&categories)
    .bind(&rate_bp)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let updated = inserted.iter().filter(|new| !**new).count();
    Ok(ImportSummary::of("tax rates", inserted.len(), updated))
}

fn validate(source: &str, rows: &[Row]) -> Result<Vec<Rate>, WorkerError> {
    let mut problems = Problems::new(source);
    let mut first_line: HashMap<(Destination, String), u64> = HashMap::new();
    let mut rates = Vec::with_capacity(rows.len());
    for row in rows {
        let field = |i: usize| row.record.get(i).unwrap_or_default();
        let line = row.line;
        let destination = Destination::new(field(0), field(1));
        let mut valid = true;
        if !(destination.country.len() == 2
            && destination.country.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            problems.add(
                line,
                "country",
                format!(
                    "`{}` is not a two-letter country code (ISO 3166, e.g. US)",
                    field(0)
                ),
            );
            valid = false;
        }
        if !destination
            .region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            problems.add(
                line,
                "region",
                format!("`{}` is not a region code (letters, digits or `-`; empty for the country default)", field(1)),
            );
            valid = false;
        }
        let category = field(2);
        if category.is_empty() {
            problems.add(line, "category", "is empty");
            valid = false;
        }
        let rate_bp = match field(3).parse::<i64>() {
            Ok(n) if (0..=i64::from(MAX_RATE_BP)).contains(&n) => n as i32,
            Ok(n) => {
                problems.add(
                    line,
                    "rate_bp",
                    format!("{n} is outside 0..={MAX_RATE_BP} (0% to 100%)"),
                );
                valid = false;
                0
            }
            Err(_) => {
                problems.add(
                    line,
                    "rate_bp",
                    format!("`{}` is not a whole number of basis points", field(3)),
                );
                valid = false;
                0
            }
        };
        if !valid {
            continue;
        }
        match first_line.entry((destination.clone(), category.to_owned())) {
            Seen::Occupied(first) => {
                let what = format!("{destination} `{category}`");
                problems.add(
                    line,
                    "country/region/category",
                    format!("{what} is already on line {}", first.get()),
                );
            }
            Seen::Vacant(slot) => {
                slot.insert(line);
                rates.push(Rate {
                    destination,
                    category: category.to_owned(),
                    rate_bp,
                });
            }
        }
    }
    problems.into_result()?;
    Ok(rates)
}
