//! The inventory's tables: reservations (one per saga), their lines, and
//! the stock of products. A hot product row is locked by one statement
//! only, the one that takes its stock, and always in SKU order.

use saga_protocol::messages::{reason, Command, Outcome, PricedLine, Reserved};
use saga_protocol::values::{Cents, Sku};
use saga_protocol::Envelope;
use saga_shared::stored;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::rules::{Stock, Take};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
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

    /// The status stored as `text`, read back through [`Status::as_str`].
    fn parse(text: &str) -> Result<Status, sqlx::Error> {
        [Status::Active, Status::Released, Status::Refused]
            .into_iter()
            .find(|status| status.as_str() == text)
            // A state this build cannot read: permanent, the command is
            // dead-lettered rather than retried.
            .ok_or_else(|| {
                sqlx::Error::Decode(
                    format!("reservation status `{text}` is not one this worker knows").into(),
                )
            })
    }
}

pub enum Claim {
    /// This transaction created the saga's reservation row.
    Created,
    /// The row existed; it is now locked by this transaction.
    Existing(Status),
}

/// Rows are never deleted; one that is gone (an operator's hand) can never
/// come back by retrying, so the command is dead-lettered.
fn gone(saga_id: Uuid) -> sqlx::Error {
    sqlx::Error::Decode(format!("the reservation of saga {saga_id} is gone").into())
}

/// Creates the saga's reservation row with `new` status, or locks the
/// existing one. A concurrent first command for the same saga waits on the
/// insert until this transaction ends.
pub async fn claim(
    conn: &mut PgConnection,
    saga_id: Uuid,
    new: Status,
) -> Result<Claim, sqlx::Error> {
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
    locked_status(conn, saga_id).await.map(Claim::Existing)
}

async fn locked_status(conn: &mut PgConnection, saga_id: Uuid) -> Result<Status, sqlx::Error> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reservations WHERE saga_id = $1 FOR UPDATE")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    Status::parse(&status.ok_or_else(|| gone(saga_id))?)
}

#[derive(sqlx::FromRow)]
struct ClaimedStock {
    created: bool,
    sku: Option<String>,
    available: Option<i32>,
    unit_price_cents: Option<i64>,
    currency: Option<String>,
    tax_category: Option<String>,
}

/// Claims the saga's reservation row as `active` and, in the same
/// statement, reads the stock of `skus` without locking it. The stock is
/// only for deciding: [`take`] checks it again under lock. For an existing
/// row, no stock is read.
pub async fn claim_reading_stock(
    conn: &mut PgConnection,
    saga_id: Uuid,
    skus: &[&Sku],
) -> Result<(Claim, Vec<Stock>), sqlx::Error> {
    // The one-row left join keeps the `created` flag when no SKU is known.
    let rows: Vec<ClaimedStock> = sqlx::query_as(
        "WITH created AS (
             INSERT INTO reservations (saga_id, status) VALUES ($1, 'active')
             ON CONFLICT (saga_id) DO NOTHING
             RETURNING saga_id
         )
         SELECT EXISTS (SELECT 1 FROM created) AS created,
                p.sku, p.available, p.unit_price_cents, p.currency, p.tax_category
         FROM (SELECT 1) AS one
         LEFT JOIN products p ON p.sku = ANY($2)",
    )
    .bind(saga_id)
    .bind(texts(skus))
    .fetch_all(&mut *conn)
    .await?;
    if !rows.first().is_some_and(|r| r.created) {
        return Ok((Claim::Existing(locked_status(conn, saga_id).await?), vec![]));
    }
    let mut stock = Vec::with_capacity(rows.len());
    for r in rows {
        // Only the one row of a left join that matched no product has nulls.
        if let (Some(sku), Some(available), Some(price), Some(currency), Some(category)) = (
            r.sku,
            r.available,
            r.unit_price_cents,
            r.currency,
            r.tax_category,
        ) {
            stock.push(stock_row((sku, available, price, currency, category))?);
        }
    }
    Ok((Claim::Created, stock))
}

/// `skus` as the `text[]` the statements bind.
fn texts<'a>(skus: &[&'a Sku]) -> Vec<&'a str> {
    skus.iter().map(|sku| sku.as_str()).collect()
}

/// A product's stock columns: sku, available, unit price, currency, tax
/// category.
type StockRow = (String, i32, i64, String, String);

fn stock_row(
    (sku, available, unit_price_cents, currency, tax_category): StockRow,
) -> Result<Stock, sqlx::Error> {
    Ok(Stock {
        sku: stored::sku(sku)?,
        available,
        unit_price_cents: Cents::new(unit_price_cents),
        currency: stored::currency(currency)?,
        tax_category,
    })
}

/// The stock of `skus`, locked in SKU order until the transaction ends.
pub async fn locked_stock(
    conn: &mut PgConnection,
    skus: &[&Sku],
) -> Result<Vec<Stock>, sqlx::Error> {
    read_stock(
        conn,
        "SELECT sku, available, unit_price_cents, currency, tax_category
         FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        skus,
    )
    .await
}

/// The rows `sql` (a select of `skus`' stock columns) reads.
async fn read_stock(
    conn: &mut PgConnection,
    sql: &'static str,
    skus: &[&Sku],
) -> Result<Vec<Stock>, sqlx::Error> {
    let rows: Vec<StockRow> = sqlx::query_as(sql)
        .bind(texts(skus))
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(stock_row).collect()
}

/// A take as the statements that write it bind it, one array per column:
/// the stock wanted per SKU and the reservation lines.
struct TakeColumns<'a> {
    skus: Vec<&'a str>,
    unit_prices: Vec<i64>,
    positions: Vec<i32>,
    line_skus: Vec<&'a str>,
    quantities: Vec<i32>,
    prices: Vec<i64>,
    categories: Vec<&'a str>,
}

impl<'a> TakeColumns<'a> {
    fn of(take: &'a Take) -> Self {
        TakeColumns {
            skus: take.skus.iter().map(Sku::as_str).collect(),
            unit_prices: take.unit_prices_cents.iter().map(|c| c.get()).collect(),
            positions: (0..).take(take.lines.len()).collect(),
            line_skus: take.lines.iter().map(|l| l.sku.as_str()).collect(),
            // Each line is at most the stock it took, so it fits an integer.
            quantities: take.lines.iter().map(|l| l.quantity.get() as i32).collect(),
            prices: take
                .lines
                .iter()
                .map(|l| l.unit_price_cents.get())
                .collect(),
            categories: take.lines.iter().map(|l| l.tax_category.as_str()).collect(),
        }
    }
}

/// The start of a statement that takes stock: `wanted`, the take's SKUs,
/// quantities, prices and categories ($2 to $5); `$before` (CTEs ending in a
/// comma, or nothing); `locked`, the newest versions of those product rows,
/// locked in SKU order, where `$only` (an ` AND` condition, or nothing)
/// allows; and `enough`, whether every one still has the stock, price,
/// category and currency ($6) the take was decided on. Ends with a comma.
macro_rules! stock_checked {
    ($before:literal, $only:literal) => {
        concat!(
            "WITH wanted AS (
             SELECT * FROM unnest($2::text[], $3::int4[], $4::int8[], $5::text[])
                 AS w (sku, quantity, unit_price_cents, tax_category)
         ),",
            $before,
            "
         locked AS (
             SELECT p.sku, p.available, p.unit_price_cents, p.currency, p.tax_category
             FROM products p
             WHERE p.sku IN (SELECT sku FROM wanted)",
            $only,
            "
             ORDER BY p.sku FOR UPDATE
         ),
         enough AS (
             SELECT count(*) = (SELECT count(*) FROM wanted)
                    AND coalesce(bool_and(
                        l.available >= w.quantity
                        AND l.unit_price_cents = w.unit_price_cents
                        AND l.tax_category = w.tax_category
                        AND l.currency = $6), false) AS ok
             FROM wanted w JOIN locked l USING (sku)
         ),"
        )
    };
}

/// The writes of a take, each only if `$when`: `taken`, the wanted stock
/// out of `available`, and `lines`, the reservation's lines in request
/// order ($7 to $11: positions, SKUs, quantities, prices, categories).
macro_rules! stock_taken {
    ($when:literal) => {
        concat!(
            "
         taken AS (
             UPDATE products p SET available = p.available - w.quantity
             FROM wanted w
             WHERE p.sku = w.sku AND ",
            $when,
            "
             RETURNING p.sku
         ),
         lines AS (
             INSERT INTO reservation_lines
                 (saga_id, position, sku, quantity, unit_price_cents, tax_category)
             SELECT $1, l.position, l.sku, l.quantity, l.unit_price_cents, l.tax_category
             FROM unnest($7::int4[], $8::text[], $9::int4[], $10::int8[], $11::text[])
                 AS l (position, sku, quantity, unit_price_cents, tax_category)
             WHERE ",
            $when,
            "
             RETURNING position
         )"
        )
    };
}

/// `statement` ([`stock_checked`], [`stock_taken`]) with the binds of a
/// take for `saga_id` ($1 to $11).
fn take_statement<'q>(
    statement: &'q str,
    saga_id: Uuid,
    take: &'q Take,
    columns: &'q TakeColumns<'q>,
) -> QueryScalar<'q, Postgres, bool, PgArguments> {
    sqlx::query_scalar(statement)
        .bind(saga_id)
        .bind(&columns.skus)
        .bind(&take.quantities)
        .bind(&columns.unit_prices)
        .bind(&take.tax_categories)
        .bind(take.currency.as_str())
        .bind(&columns.positions)
        .bind(&columns.line_skus)
        .bind(&columns.quantities)
        .bind(&columns.prices)
        .bind(&columns.categories)
}

/// Takes `take`'s stock and records the reservation, in one statement:
/// all of it, if every SKU still has the stock, price and category it was
/// decided on; otherwise nothing (`false`). The product rows are locked in
/// SKU order by this statement, and by nothing before it.
pub async fn take(
    conn: &mut PgConnection,
    saga_id: Uuid,
    take: &Take,
) -> Result<bool, sqlx::Error> {
    let columns = TakeColumns::of(take);
    // `locked` waits for and reads each row's newest version; the UPDATE
    // below then finds the same versions, so it decrements what was checked.
    let statement = concat!(
        stock_checked!("", ""),
        "
         reserved AS (
             UPDATE reservations SET currency = $6
             WHERE saga_id = $1 AND (SELECT ok FROM enough)
             RETURNING saga_id
         ),",
        stock_taken!("(SELECT ok FROM enough)"),
        "
         SELECT ok FROM enough"
    );
    take_statement(statement, saga_id, take, &columns)
        .fetch_one(&mut *conn)
        .await
}

/// The stock of `skus` as committed, locking nothing: for pricing only.
pub async fn stock(conn: &mut PgConnection, skus: &[&Sku]) -> Result<Vec<Stock>, sqlx::Error> {
    read_stock(
        conn,
        "SELECT sku, available, unit_price_cents, currency, tax_category
         FROM products WHERE sku = ANY($1)",
        skus,
    )
    .await
}

/// A first reserve of a saga, whole, in one statement: claims `command` in
/// the inbox with `reply`, creates the saga's reservation, takes `take`'s
/// stock and records its lines; `true` when it did. It does all of it only
/// if the message and the saga are new and every SKU, under lock, has the
/// stock, price, category and currency `take` (and so `reply`) was decided
/// on; otherwise it writes nothing and returns `false`.
///
/// The product rows are locked first, in SKU order, by the statement's
/// first step and held for this statement alone. A concurrent command of
/// the same saga that creates its reservation first makes the plain insert
/// below fail with a unique violation: the whole statement then fails and
/// nothing of it stays (outside a transaction). The reservation key is
/// taken after the product rows here, before them on the general path: a
/// general-path reserve of the same saga that holds its new key and waits
/// for a row this statement holds is a deadlock, which PostgreSQL breaks
/// by failing one of the two (transient, retried). Both would have to be
/// first reserves of one saga at the same instant, and the general one
/// past its own failed try of this statement.
pub async fn reserve_at_once(
    conn: &mut PgConnection,
    command: &Envelope<Command>,
    take: &Take,
    reply: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let columns = TakeColumns::of(take);
    // `fresh` skips the locks when a committed row already says the case
    // does not apply. `locked` waits for and reads each row's newest
    // version; `enough` decides on those; the UPDATE then finds the same
    // versions (the rows stay locked), so it decrements what was checked.
    // Each write depends on the one before it through RETURNING, so none
    // happens unless every one before it did.
    let statement = concat!(
        stock_checked!(
            "
         fresh AS (
             SELECT NOT EXISTS (SELECT 1 FROM inbox WHERE message_id = $12)
                    AND NOT EXISTS (SELECT 1 FROM reservations WHERE saga_id = $1) AS ok
         ),",
            " AND (SELECT ok FROM fresh)"
        ),
        "
         claimed AS (
             INSERT INTO inbox (message_id, saga_id, step, attempt, reply)
             SELECT $12, $1, $13, $14, $15 WHERE (SELECT ok FROM enough)
             ON CONFLICT (message_id) DO NOTHING
             RETURNING message_id
         ),
         reserved AS (
             INSERT INTO reservations (saga_id, status, currency)
             SELECT $1, 'active', $6 FROM claimed
             RETURNING saga_id
         ),",
        stock_taken!("EXISTS (SELECT 1 FROM reserved)"),
        "
         SELECT EXISTS (SELECT 1 FROM reserved)"
    );
    take_statement(statement, command.saga_id, take, &columns)
        .bind(command.message_id)
        .bind(command.step.routing_key())
        .bind(command.attempt as i32)
        .bind(reply)
        .fetch_one(&mut *conn)
        .await
}

/// Leaves the saga's row as a refusal: a late earlier attempt must not
/// reserve once stock is back.
pub async fn refuse(
    conn: &mut PgConnection,
    saga_id: Uuid,
    reason: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
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
    Ok(())
}

/// The refusal a reserve of this saga was first answered with.
pub async fn refusal(conn: &mut PgConnection, saga_id: Uuid) -> Result<Outcome, sqlx::Error> {
    let (reason, detail): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT rejection_reason, rejection_detail FROM reservations WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| gone(saga_id))?;
    Ok(Outcome::Rejected {
        reason: reason.unwrap_or_else(|| reason::OUT_OF_STOCK.to_owned()),
        detail: detail.unwrap_or_default(),
    })
}

/// The reservation as first reserved, lines in the request's order.
pub async fn recorded(conn: &mut PgConnection, saga_id: Uuid) -> Result<Reserved, sqlx::Error> {
    let currency: Option<String> =
        sqlx::query_scalar("SELECT currency FROM reservations WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| gone(saga_id))?;
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
        .map(|(sku, quantity, unit_price_cents, tax_category)| {
            Ok(PricedLine {
                sku: stored::sku(sku)?,
                quantity: stored::quantity(quantity)?,
                unit_price_cents: Cents::new(unit_price_cents),
                tax_category,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Reserved {
        currency: stored::currency(currency)?,
        lines,
    })
}

/// Puts the saga's held stock back into `available` and marks the
/// reservation released. Compensations are rare: the three round trips
/// holding the rows are not on the checkout's path.
pub async fn give_back(conn: &mut PgConnection, saga_id: Uuid) -> Result<(), sqlx::Error> {
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
