//! One reservation of stock per saga. The saga's reservation row is its key:
//! it is claimed (created, or locked) before any product row, so commands
//! for one saga serialize on it and never both hold stock, and product rows
//! are always locked in SKU order, so two sagas never deadlock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use saga_shared::messages::{
    reason, LineRequest, Outcome, PricedLine, Released, ReserveStock, Reserved, StepResult,
};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Released,
    /// A tombstone: the saga's reserve was refused, so no attempt of it
    /// ever holds stock.
    Refused,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Released => "released",
            Status::Refused => "refused",
        }
    }

    fn parse(text: &str) -> Result<Status, sqlx::Error> {
        match text {
            "active" => Ok(Status::Active),
            "released" => Ok(Status::Released),
            "refused" => Ok(Status::Refused),
            // A state this build cannot read: permanent, the command is
            // dead-lettered rather than retried.
            other => Err(sqlx::Error::Decode(
                format!("reservation status `{other}` is not one this worker knows").into(),
            )),
        }
    }
}

enum Claim {
    /// This transaction created the saga's reservation row.
    Created,
    /// The row existed; it is now locked by this transaction.
    Existing(Status),
}

/// Creates the saga's reservation row with `new` status, or locks the
/// existing one. A concurrent first command for the same saga waits on the
/// insert until this transaction ends.
async fn claim(conn: &mut PgConnection, saga_id: Uuid, new: Status) -> Result<Claim, sqlx::Error> {
    let created = sqlx::query(
        "INSERT INTO reservations (saga_id, status, released_at)
         VALUES ($1, $2, CASE WHEN $2 = 'released' THEN now() END)
         ON CONFLICT (saga_id) DO NOTHING",
    )
    .bind(saga_id)
    .bind(new.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if created {
        return Ok(Claim::Created);
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reservations WHERE saga_id = $1 FOR UPDATE")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    match status {
        Some(status) => Ok(Claim::Existing(Status::parse(&status)?)),
        // Rows are never deleted; should one be gone (an operator's hand),
        // fail: the runtime runs the command again.
        None => Err(sqlx::Error::RowNotFound),
    }
}

/// Reserves every line's stock, or none of it.
pub async fn reserve(
    conn: &mut PgConnection,
    saga_id: Uuid,
    request: &ReserveStock,
) -> Result<Outcome, sqlx::Error> {
    if let Some(problem) = invalid_lines(&request.lines) {
        return Ok(Outcome::rejected(reason::INVALID_COMMAND, problem));
    }
    match claim(conn, saga_id, Status::Active).await? {
        Claim::Created => {}
        Claim::Existing(Status::Active) => {
            let reserved = recorded(conn, saga_id).await?;
            return Ok(Outcome::Ok(StepResult::Reserved(reserved)));
        }
        Claim::Existing(Status::Released) => {
            return Ok(Outcome::rejected(
                reason::ALREADY_COMPENSATED,
                format!("the stock of saga {saga_id} was already released; nothing is reserved"),
            ));
        }
        Claim::Existing(Status::Refused) => return refusal(conn, saga_id).await,
    }
    let outcome = hold(conn, saga_id, &request.lines).await?;
    if let Outcome::Rejected { reason, detail } = &outcome {
        // A refused reserve holds nothing, and its row stays as the saga's
        // answer: a late earlier attempt must not reserve once stock is back.
        sqlx::query(
            "UPDATE reservations SET status = 'refused', rejection_reason = $2,
                 rejection_detail = $3
             WHERE saga_id = $1",
        )
        .bind(saga_id)
        .bind(reason)
        .bind(detail)
        .execute(&mut *conn)
        .await?;
    }
    Ok(outcome)
}

/// The refusal a reserve of this saga was first answered with.
async fn refusal(conn: &mut PgConnection, saga_id: Uuid) -> Result<Outcome, sqlx::Error> {
    let (reason, detail): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT rejection_reason, rejection_detail FROM reservations WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Outcome::Rejected {
        reason: reason.unwrap_or_else(|| reason::OUT_OF_STOCK.to_owned()),
        detail: detail.unwrap_or_default(),
    })
}

/// Gives the saga's stock back. A no-op when nothing is held; when no
/// reservation exists yet, it leaves a `released` tombstone so that a late
/// reserve holds nothing.
pub async fn release(conn: &mut PgConnection, saga_id: Uuid) -> Result<Outcome, sqlx::Error> {
    let released = match claim(conn, saga_id, Status::Released).await? {
        Claim::Created | Claim::Existing(Status::Released | Status::Refused) => false,
        Claim::Existing(Status::Active) => {
            give_back(conn, saga_id).await?;
            true
        }
    };
    Ok(Outcome::Ok(StepResult::Released(Released { released })))
}

fn invalid_lines(lines: &[LineRequest]) -> Option<String> {
    if lines.is_empty() {
        return Some("a reservation needs at least one line".to_owned());
    }
    let zero: Vec<&str> = lines
        .iter()
        .filter(|l| l.quantity == 0)
        .map(|l| l.sku.as_str())
        .collect();
    (!zero.is_empty()).then(|| format!("quantity must be at least 1 for: {}", zero.join(", ")))
}

#[derive(sqlx::FromRow)]
struct Product {
    sku: String,
    available: i32,
    unit_price_cents: i64,
    currency: String,
    tax_category: String,
}

/// Locks the lines' products and takes their stock, or refuses and takes
/// nothing. Called with the saga's fresh reservation row claimed.
async fn hold(
    conn: &mut PgConnection,
    saga_id: Uuid,
    lines: &[LineRequest],
) -> Result<Outcome, sqlx::Error> {
    // A SKU may be on several lines: stock is checked against their sum.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for line in lines {
        *wanted.entry(line.sku.as_str()).or_default() += i64::from(line.quantity);
    }
    let skus: Vec<&str> = wanted.keys().copied().collect();
    let products: HashMap<String, Product> = sqlx::query_as::<_, Product>(
        "SELECT sku, available, unit_price_cents, currency, tax_category
         FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|p| (p.sku.clone(), p))
    .collect();

    let unknown: Vec<&str> = skus
        .iter()
        .copied()
        .filter(|sku| !products.contains_key(*sku))
        .collect();
    if !unknown.is_empty() {
        return Ok(Outcome::rejected(
            reason::UNKNOWN_SKU,
            format!("unknown SKU: {}", unknown.join(", ")),
        ));
    }

    let currencies: BTreeSet<&str> = products.values().map(|p| p.currency.as_str()).collect();
    if currencies.len() > 1 {
        let priced: Vec<String> = skus
            .iter()
            .map(|sku| format!("{sku} in {}", products[*sku].currency))
            .collect();
        return Ok(Outcome::rejected(
            reason::CURRENCY_MISMATCH,
            format!(
                "the lines are priced in more than one currency: {}",
                priced.join(", ")
            ),
        ));
    }

    let short: Vec<String> = wanted
        .iter()
        .filter_map(|(sku, quantity)| {
            let available = products[*sku].available;
            (*quantity > i64::from(available))
                .then(|| format!("{sku} (wanted {quantity}, available {available})"))
        })
        .collect();
    if !short.is_empty() {
        return Ok(Outcome::rejected(
            reason::OUT_OF_STOCK,
            format!("not enough stock for: {}", short.join(", ")),
        ));
    }

    // Every quantity is now at most an `available`, so it fits an integer.
    let quantities: Vec<i32> = wanted.values().map(|q| *q as i32).collect();
    sqlx::query(
        "UPDATE products AS p SET available = p.available - taken.quantity
         FROM unnest($1::text[], $2::int4[]) AS taken (sku, quantity)
         WHERE p.sku = taken.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;

    // Lines are never empty here, so there is exactly one currency.
    let currency = currencies.first().copied().unwrap_or_default().to_owned();
    let priced: Vec<PricedLine> = lines
        .iter()
        .map(|line| {
            let product = &products[&line.sku];
            PricedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_cents: product.unit_price_cents,
                tax_category: product.tax_category.clone(),
            }
        })
        .collect();
    record(conn, saga_id, &currency, &priced).await?;
    Ok(Outcome::Ok(StepResult::Reserved(Reserved {
        currency,
        lines: priced,
    })))
}

/// Stores what was reserved, at the prices of now: a replay answers with
/// these, whatever the catalogue says by then.
async fn record(
    conn: &mut PgConnection,
    saga_id: Uuid,
    currency: &str,
    lines: &[PricedLine],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET currency = $2 WHERE saga_id = $1")
        .bind(saga_id)
        .bind(currency)
        .execute(&mut *conn)
        .await?;
    let positions: Vec<i32> = (0..).take(lines.len()).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    // Each line is at most the stock it took, so it fits an integer.
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity as i32).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_cents).collect();
    let categories: Vec<&str> = lines.iter().map(|l| l.tax_category.as_str()).collect();
    sqlx::query(
        "INSERT INTO reservation_lines
             (saga_id, position, sku, quantity, unit_price_cents, tax_category)
         SELECT $1, l.position, l.sku, l.quantity, l.unit_price_cents, l.tax_category
         FROM unnest($2::int4[], $3::text[], $4::int4[], $5::int8[], $6::text[])
             AS l (position, sku, quantity, unit_price_cents, tax_category)",
    )
    .bind(saga_id)
    .bind(&positions)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .bind(&categories)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The reservation as first reserved, lines in the request's order.
async fn recorded(conn: &mut PgConnection, saga_id: Uuid) -> Result<Reserved, sqlx::Error> {
    let currency: Option<String> =
        sqlx::query_scalar("SELECT currency FROM reservations WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(&mut *conn)
            .await?;
    let currency = currency.ok_or_else(|| {
        sqlx::Error::Decode(format!("active reservation of saga {saga_id} has no currency").into())
    })?;
    let rows: Vec<(String, i32, i64, String)> = sqlx::query_as(
        "SELECT sku, quantity, unit_price_cents, tax_category
         FROM reservation_lines WHERE saga_id = $1 ORDER BY position",
    )
    .bind(saga_id)
    .fetch_all(&mut *conn)
    .await?;
    let lines = rows
        .into_iter()
        .map(
            |(sku, quantity, unit_price_cents, tax_category)| PricedLine {
                sku,
                // The table only holds positive quantities.
                quantity: quantity.unsigned_abs(),
                unit_price_cents,
                tax_category,
            },
        )
        .collect();
    Ok(Reserved { currency, lines })
}

/// Puts the saga's held stock back into `available` and marks the
/// reservation released.
async fn give_back(conn: &mut PgConnection, saga_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT sku FROM products
         WHERE sku IN (SELECT sku FROM reservation_lines WHERE saga_id = $1)
         ORDER BY sku FOR UPDATE",
    )
    .bind(saga_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE products AS p SET available = p.available + held.quantity
         FROM (SELECT sku, sum(quantity)::int4 AS quantity
               FROM reservation_lines WHERE saga_id = $1 GROUP BY sku) AS held
         WHERE p.sku = held.sku",
    )
    .bind(saga_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE reservations SET status = 'released', released_at = now() WHERE saga_id = $1",
    )
    .bind(saga_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
