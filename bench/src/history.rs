//! History: a year of finished checkouts loaded behind a running system, so
//! that the bench measures it as it runs after months in production rather
//! than on empty tables.
//!
//! The sagas a fresh bench run just finished are the templates: each is
//! copied K times into all four databases, every copy as a real run would
//! have left it, consistent across the databases without their exchanging
//! the copies' ids. Copy `k` of template saga `t` gets the id
//! `history_uuid(t, t, k, now_ms)`, computed by the same SQL function in
//! every database: a UUIDv7 drawn `now_ms - 1 day - (hash(t, k) mod 365
//! days)`, so the copies spread over the year before yesterday and none
//! looks recent. Every other id a saga left (message ids, the provider's
//! references) and every time is moved by the same shift, so a copy's
//! records keep their order and their distances.
//!
//! Copies are inserted oldest first, a slice of the year per transaction,
//! as a year of checkouts would have written them: every index keyed by a
//! saga id or a time then grows at its end, as in production, rather than
//! splitting pages all over the year (which would also cost the load a
//! full-page image in the WAL for most pages it touches after each
//! checkpoint).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::error::BenchError;

/// Rows a batch inserts in one statement per table and one transaction per
/// database: large enough that round trips do not count, small enough that
/// a batch commits in about a second and its progress shows.
pub const ROWS_PER_BATCH: u64 = 100_000;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The statuses a saga never leaves: only those are history.
pub const FINISHED: [&str; 3] = ["completed", "compensated", "cancelled"];

/// The id function, in the session's own schema so that nothing outlives
/// the load. Plain SQL expressions without FROM, and only immutable parts
/// (`k::text`, not `text || integer`, which is only stable), so that the
/// planner inlines them into the statements that call them: a call that
/// is not inlined costs ten times as much.
const FUNCTIONS: &str = r#"
-- The millisecond a UUIDv7 was drawn.
CREATE FUNCTION pg_temp.uuid_ms(id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
$$;

-- When copy k of a template saga was drawn: one day to a year and a day
-- before now, from a hash of the template and k (md5 digits 20 to 32,
-- which the id's random bits do not use).
CREATE FUNCTION pg_temp.history_ms(template uuid, k integer, now_ms bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT now_ms - 86400000
        - ('x' || substr(md5(template::text || '/' || k::text), 20, 13))::bit(52)::bigint % (365 * 86400000::bigint)
$$;

-- How far copy k of a template saga moves every time the template left.
CREATE FUNCTION pg_temp.history_shift(template uuid, k integer, now_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (pg_temp.history_ms(template, k, now_ms) - pg_temp.uuid_ms(template))
        * interval '1 millisecond'
$$;

-- Copy k of a UUIDv7 the template saga left (its own id, a message id, a
-- provider's reference): drawn as much earlier as the copy, version 7,
-- random bits from md5(old, k) with the RFC 4122 variant (8 to b). For the
-- saga's own id (old = template) the time is history_ms exactly.
CREATE FUNCTION pg_temp.history_uuid(old uuid, template uuid, k integer, now_ms bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(greatest(0, pg_temp.uuid_ms(old)
                + pg_temp.history_ms(template, k, now_ms) - pg_temp.uuid_ms(template))), 12, '0')
        || '7' || substr(md5(old::text || '/' || k::text), 1, 3)
        || substr('89ab', 1 + ('x' || substr(md5(old::text || '/' || k::text), 4, 1))::bit(4)::integer % 4, 1)
        || substr(md5(old::text || '/' || k::text), 5, 15))::uuid
$$;
"#;

/// Where the four services keep their data.
#[derive(Clone, Debug)]
pub struct Databases {
    pub orchestrator: String,
    pub inventory: String,
    pub tax: String,
    pub payment: String,
}

/// What to load.
#[derive(Clone, Copy, Debug)]
pub struct HistoryPlan {
    /// Sagas wanted; the load makes `copies * templates`, the first
    /// multiple of the templates at or above it.
    pub count: u64,
    /// The clock every database copies against, in ms since the epoch.
    pub now_ms: i64,
    /// Inbox rows older than this are pruned by the workers: copies of
    /// them are not made.
    pub inbox_days: u32,
}

/// K: copies of each template so that there are at least `count` sagas.
pub fn copies_per_template(count: u64, templates: u64) -> Result<u32, BenchError> {
    if templates == 0 {
        return Err(BenchError::Usage(
            "no finished saga in the last day to copy: run the bench first".into(),
        ));
    }
    u32::try_from(count.div_ceil(templates).max(1))
        .map_err(|_| BenchError::Usage(format!("{count} sagas is too many copies")))
}

/// Copies of sagas per batch, so that a batch inserts about
/// `rows_per_batch` rows when the templates have `template_rows` between
/// them: at least one.
pub fn sagas_per_batch(templates: u64, template_rows: u64, rows_per_batch: u64) -> u64 {
    if template_rows == 0 {
        return rows_per_batch.max(1);
    }
    (u128::from(rows_per_batch) * u128::from(templates) / u128::from(template_rows))
        .clamp(1, u128::from(u64::MAX)) as u64
}

/// A column of a table, as the catalogue describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    /// Generated, identity or filled from a sequence: left to the table.
    pub filled_by_table: bool,
}

/// The column list of a copy and the expressions that fill it, reading the
/// template row as `r` and the copy as `c` (`c.id`, `c.k`, `c.shift`,
/// `c.template`, `c.now_ms`, `c.inbox_days`): `overrides` by column name,
/// every other timestamp moved by the copy's shift, everything else as it
/// was.
pub fn copy_columns(columns: &[Column], overrides: &[(&str, &str)]) -> (String, String) {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in columns.iter().filter(|c| !c.filled_by_table) {
        let quoted = quote_ident(&column.name);
        let value = match overrides.iter().find(|(name, _)| *name == column.name) {
            Some((_, expression)) => (*expression).to_owned(),
            None if column.data_type.starts_with("timestamp") => {
                format!("r.{quoted} + c.shift")
            }
            None => format!("r.{quoted}"),
        };
        names.push(quoted);
        values.push(value);
    }
    (names.join(", "), values.join(", "))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every copy to make, with its batch (`$1`: copies per batch, `$2`: K,
/// `$3`: now_ms): ids computed once, in id order, so that batch 0 holds the
/// oldest.
const PLAN_COPIES: &str = "
CREATE TEMP TABLE history_copies AS
SELECT template, k, id, shift, (row_number() OVER (ORDER BY id) - 1) / $1::bigint AS batch
FROM (SELECT t.id AS template, k,
             pg_temp.history_uuid(t.id, t.id, k, $3::bigint) AS id,
             pg_temp.history_shift(t.id, k, $3::bigint) AS shift
      FROM history_templates t, generate_series(1, $2::integer) AS k) AS planned";

/// The copies of one batch (`$1`), with the clock (`$2`) and the inbox's
/// retention in days (`$3`) for the expressions that need them.
const COPIES: &str = "copy AS (
    SELECT template, k, id, shift, $2::bigint AS now_ms, $3::integer AS inbox_days
    FROM history_copies WHERE batch = $1::bigint)";

/// One table's copies: where its template rows are kept for the load, how
/// they join their saga, and what changes in a copy.
struct CopiedTable {
    table: &'static str,
    /// The template rows, saved once before the load starts (the table
    /// itself grows with every batch).
    saved: &'static str,
    saga_column: &'static str,
    overrides: &'static [(&'static str, &'static str)],
    /// A further condition on the copy (an inbox keeps only recent rows).
    only: Option<&'static str>,
    /// Order of insertion, where a sequence numbers the rows.
    order: Option<&'static str>,
}

/// A copy keeps its idempotency key unique (the saga's own id is in it, or
/// is appended).
const NEW_KEY: &str = "CASE WHEN strpos(r.idempotency_key, c.template::text) > 0 \
     THEN replace(r.idempotency_key, c.template::text, c.id::text) \
     ELSE r.idempotency_key || '-h' || c.id END";

/// The saga's state names the saga and the provider's reference of its
/// charge; both move to the copy's.
const NEW_STATE: &str = "CASE WHEN r.state->'charge'->>'payment_id' IS NULL \
     THEN replace(r.state::text, c.template::text, c.id::text)::jsonb \
     ELSE jsonb_set(replace(r.state::text, c.template::text, c.id::text)::jsonb, '{charge,payment_id}', \
         to_jsonb(pg_temp.history_uuid((r.state->'charge'->>'payment_id')::uuid, c.template, c.k, c.now_ms)::text)) END";

/// An inbox row's reply is only read again for a redelivered command, which
/// a copy never sees; its saga id is moved so a search by saga finds it.
const NEW_REPLY: &str = "replace(r.reply::text, c.template::text, c.id::text)::jsonb";

const NEW_MESSAGE_ID: &str = "pg_temp.history_uuid(r.message_id, c.template, c.k, c.now_ms)";

/// Only the inbox rows younger than the workers' inbox retention: older
/// ones would have been pruned.
const RECENT_INBOX: &str =
    "r.received_at + c.shift >= to_timestamp(c.now_ms / 1000.0) - c.inbox_days * interval '1 day'";

const ORCHESTRATOR_TABLES: &[CopiedTable] = &[
    CopiedTable {
        table: "sagas",
        saved: "history_sagas",
        saga_column: "id",
        overrides: &[
            ("id", "c.id"),
            ("idempotency_key", NEW_KEY),
            ("state", NEW_STATE),
        ],
        only: None,
        order: None,
    },
    CopiedTable {
        table: "saga_events",
        saved: "history_saga_events",
        saga_column: "saga_id",
        overrides: &[("saga_id", "c.id")],
        only: None,
        // A timeline is read in id order: each copy's events keep theirs.
        order: Some("c.id, r.id"),
    },
];

const INVENTORY_TABLES: &[CopiedTable] = &[
    CopiedTable {
        table: "reservations",
        saved: "history_reservations",
        saga_column: "saga_id",
        overrides: &[("saga_id", "c.id")],
        only: None,
        order: None,
    },
    CopiedTable {
        table: "reservation_lines",
        saved: "history_reservation_lines",
        saga_column: "saga_id",
        overrides: &[("saga_id", "c.id")],
        only: None,
        order: None,
    },
    INBOX,
];

const PAYMENT_TABLES: &[CopiedTable] = &[
    CopiedTable {
        table: "payments",
        saved: "history_payments",
        saga_column: "saga_id",
        overrides: &[
            ("saga_id", "c.id"),
            (
                "provider_reference",
                "pg_temp.history_uuid(r.provider_reference, c.template, c.k, c.now_ms)",
            ),
        ],
        only: None,
        order: None,
    },
    CopiedTable {
        table: "provider_ledger",
        saved: "history_provider_ledger",
        saga_column: "saga_id",
        overrides: &[
            ("saga_id", "c.id"),
            (
                "reference",
                "pg_temp.history_uuid(r.reference, c.template, c.k, c.now_ms)",
            ),
            ("idempotency_key", NEW_KEY),
        ],
        only: None,
        order: None,
    },
    INBOX,
];

const TAX_TABLES: &[CopiedTable] = &[INBOX];

const INBOX: CopiedTable = CopiedTable {
    table: "inbox",
    saved: "history_inbox",
    saga_column: "saga_id",
    overrides: &[
        ("message_id", NEW_MESSAGE_ID),
        ("saga_id", "c.id"),
        ("reply", NEW_REPLY),
    ],
    only: Some(RECENT_INBOX),
    order: None,
};

/// Active reservations hold stock: what a batch's copies hold goes onto
/// `on_hand` (not `available`) in the batch's transaction, so that
/// on_hand = available + held stays true at every commit (`$1`: the batch).
const HOLD_STOCK: &str = "
UPDATE products p SET on_hand = p.on_hand + h.held::integer
FROM (SELECT l.sku, sum(l.quantity)::bigint AS held
      FROM history_copies c
      JOIN history_reservations r ON r.saga_id = c.template
      JOIN history_reservation_lines l ON l.saga_id = r.saga_id
      WHERE c.batch = $1::bigint AND r.status = 'active'
      GROUP BY l.sku) h
WHERE p.sku = h.sku";

/// What one database received.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub database: &'static str,
    /// Rows inserted per table, in the order copied.
    pub rows: Vec<(&'static str, u64)>,
    pub took: Duration,
    pub vacuum: Duration,
    /// The database's size on disk before and after, in bytes.
    pub size: (i64, i64),
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.database)?;
        for (table, rows) in &self.rows {
            write!(f, " {table} {}", thousands(*rows))?;
        }
        write!(
            f,
            " in {:.1} s, then VACUUM ANALYZE {:.1} s; {} on disk, was {}",
            self.took.as_secs_f64(),
            self.vacuum.as_secs_f64(),
            mib(self.size.1),
            mib(self.size.0)
        )
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What the whole load made.
#[derive(Clone, Debug)]
pub struct HistoryReport {
    pub templates: u64,
    pub copies: u32,
    pub now_ms: i64,
    pub databases: Vec<Loaded>,
    pub took: Duration,
}

impl HistoryReport {
    pub fn sagas(&self) -> u64 {
        self.templates * u64::from(self.copies)
    }
}

impl std::fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map_or_else(|| "?".to_owned(), |t| t.format("%Y-%m-%d").to_string())
        };
        writeln!(
            f,
            "history: {} sagas ({} copies of {} finished sagas) from {} to {}, loaded in {:.1} s",
            thousands(self.sagas()),
            self.copies,
            self.templates,
            day(self.now_ms - 366 * DAY_MS),
            day(self.now_ms - DAY_MS),
            self.took.as_secs_f64()
        )?;
        for loaded in &self.databases {
            writeln!(f, "  {loaded}")?;
        }
        Ok(())
    }
}

/// 1234567 as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The current time in ms since the epoch, the `now_ms` of a plan.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn connect(url: &str) -> Result<PgConnection, BenchError> {
    let options = PgConnectOptions::from_str(url)?.application_name("checkout-bench history");
    let mut connection = PgConnection::connect_with(&options).await?;
    // A batch sorts a timeline's copies into id order: in memory, not on disk.
    connection
        .execute("SET work_mem = '256MB'; SET maintenance_work_mem = '256MB'")
        .await?;
    connection.execute(FUNCTIONS).await?;
    Ok(connection)
}

/// Loads the history: templates from the orchestrator, then the four
/// databases at once, each in batches of its own; then VACUUM ANALYZE of
/// every table written and a checkpoint, so that what is measured next is
/// the system with its history, not the load's aftermath.
pub async fn load(databases: &Databases, plan: HistoryPlan) -> Result<HistoryReport, BenchError> {
    let started = Instant::now();
    let mut orchestrator = connect(&databases.orchestrator).await?;
    // Copies are all older than a day: a second load copies only what ran
    // since, never the copies of the first.
    let templates: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM sagas WHERE status = ANY($1) AND id >= $2 ORDER BY id")
            .bind(FINISHED)
            .bind(uuid_v7_floor(plan.now_ms - DAY_MS))
            .fetch_all(&mut orchestrator)
            .await?;
    let copies = copies_per_template(plan.count, templates.len() as u64)?;
    eprintln!(
        "  [history] {} finished sagas to copy {copies} times each: {} sagas",
        templates.len(),
        thousands(templates.len() as u64 * u64::from(copies))
    );

    let load_one = |name: &'static str,
                    connection: Option<PgConnection>,
                    url: &str,
                    tables: &'static [CopiedTable]| {
        let url = url.to_owned();
        let templates = templates.clone();
        async move {
            let mut connection = match connection {
                Some(connection) => connection,
                None => connect(&url).await?,
            };
            load_database(&mut connection, name, tables, &templates, copies, plan).await
        }
    };
    let (o, i, t, p) = tokio::try_join!(
        load_one(
            "orchestrator",
            Some(orchestrator),
            &databases.orchestrator,
            ORCHESTRATOR_TABLES
        ),
        load_one("inventory", None, &databases.inventory, INVENTORY_TABLES),
        load_one("tax", None, &databases.tax, TAX_TABLES),
        load_one("payment", None, &databases.payment, PAYMENT_TABLES),
    )?;

    // The load's dirty pages written now, not while idle CPU is measured.
    let mut admin = PgConnection::connect(&databases.orchestrator).await?;
    if let Err(error) = admin.execute("CHECKPOINT").await {
        eprintln!("  [history] no checkpoint after the load ({error}): the next figures include writing it back");
    }
    Ok(HistoryReport {
        templates: templates.len() as u64,
        copies,
        now_ms: plan.now_ms,
        databases: vec![o, i, t, p],
        took: started.elapsed(),
    })
}

/// The smallest UUIDv7 of millisecond `ms` (epoch): every saga drawn since
/// is at or above it.
pub fn uuid_v7_floor(ms: i64) -> Uuid {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    saga_protocol::saga_id::uuid_v7_floor(at)
}

async fn load_database(
    connection: &mut PgConnection,
    database: &'static str,
    tables: &'static [CopiedTable],
    templates: &[Uuid],
    copies: u32,
    plan: HistoryPlan,
) -> Result<Loaded, BenchError> {
    let started = Instant::now();
    let size = || sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())");
    let size_before = size().fetch_one(&mut *connection).await?;
    sqlx::query("CREATE TEMP TABLE history_templates (id uuid PRIMARY KEY)")
        .execute(&mut *connection)
        .await?;
    sqlx::query("INSERT INTO history_templates SELECT unnest($1::uuid[])")
        .bind(templates)
        .execute(&mut *connection)
        .await?;
    let mut statements = Vec::new();
    let mut template_rows = 0u64;
    for table in tables {
        let saved = sqlx::query(&format!(
            "CREATE TEMP TABLE {saved} AS
             SELECT r.* FROM {table} r JOIN history_templates t ON t.id = r.{saga}",
            saved = table.saved,
            table = table.table,
            saga = table.saga_column,
        ))
        .execute(&mut *connection)
        .await?
        .rows_affected();
        // Batches are sized by the rows they insert: of a table whose
        // copies are filtered by time, about its window's share of a year.
        template_rows += match table.only {
            Some(_) => (saved * u64::from(plan.inbox_days)).div_ceil(365),
            None => saved,
        };
        let columns = table_columns(connection, table.table).await?;
        statements.push((table.table, copy_statement(table, &columns)));
    }
    // Temporary tables get no statistics of their own.
    connection
        .execute("ANALYZE pg_temp.history_templates")
        .await?;
    for table in tables {
        connection
            .execute(format!("ANALYZE pg_temp.{}", table.saved).as_str())
            .await?;
    }

    let per_batch = sagas_per_batch(templates.len() as u64, template_rows, ROWS_PER_BATCH);
    let planned = sqlx::query(PLAN_COPIES)
        .bind(per_batch as i64)
        .bind(copies as i32)
        .bind(plan.now_ms)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    connection
        .execute("CREATE INDEX ON pg_temp.history_copies (batch); ANALYZE pg_temp.history_copies")
        .await?;
    let batches = planned.div_ceil(per_batch);

    let mut inserted: HashMap<&'static str, u64> = HashMap::new();
    for batch in 0..batches {
        let batch_started = Instant::now();
        let mut tx = connection.begin().await?;
        let mut rows = 0;
        for (table, statement) in &statements {
            let n = sqlx::query(statement)
                .bind(batch as i64)
                .bind(plan.now_ms)
                .bind(plan.inbox_days as i32)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            *inserted.entry(table).or_default() += n;
            rows += n;
        }
        if database == "inventory" {
            sqlx::query(HOLD_STOCK)
                .bind(batch as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        eprintln!(
            "  [history] {database}: batch {} of {batches}, {} rows in {:.1} s",
            batch + 1,
            thousands(rows),
            batch_started.elapsed().as_secs_f64()
        );
    }
    let took = started.elapsed();

    let vacuum_started = Instant::now();
    let mut vacuumed: Vec<&str> = tables.iter().map(|t| t.table).collect();
    if database == "inventory" {
        vacuumed.push("products");
    }
    connection
        .execute(format!("VACUUM ANALYZE {}", vacuumed.join(", ")).as_str())
        .await?;
    Ok(Loaded {
        database,
        rows: tables
            .iter()
            .map(|t| (t.table, inserted.get(t.table).copied().unwrap_or(0)))
            .collect(),
        took,
        vacuum: vacuum_started.elapsed(),
        size: (size_before, size().fetch_one(&mut *connection).await?),
    })
}

/// The INSERT that makes batch `$1`'s copies of every template row of
/// `table` (`$2`: now_ms, `$3`: the inbox's retention in days).
fn copy_statement(table: &CopiedTable, columns: &[Column]) -> String {
    let (names, values) = copy_columns(columns, table.overrides);
    let mut sql = format!(
        "WITH {COPIES}\nINSERT INTO {table} ({names})\nSELECT {values}\nFROM {saved} r JOIN copy c ON c.template = r.{saga}",
        table = table.table,
        saved = table.saved,
        saga = table.saga_column,
    );
    if let Some(only) = table.only {
        let _ = write!(sql, "\nWHERE {only}");
    }
    if let Some(order) = table.order {
        let _ = write!(sql, "\nORDER BY {order}");
    }
    sql
}

async fn table_columns(
    connection: &mut PgConnection,
    table: &str,
) -> Result<Vec<Column>, BenchError> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text,
                is_generated = 'ALWAYS' OR is_identity = 'YES'
                    OR coalesce(column_default LIKE 'nextval(%', false)
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    if rows.is_empty() {
        return Err(BenchError::Usage(format!("no table {table} to copy into")));
    }
    Ok(rows
        .into_iter()
        .map(|(name, data_type, filled_by_table)| Column {
            name,
            data_type,
            filled_by_table,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str, filled_by_table: bool) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            filled_by_table,
        }
    }

    #[test]
    fn enough_copies_to_reach_the_count() {
        assert_eq!(copies_per_template(20_000, 170).unwrap(), 118);
        assert_eq!(copies_per_template(170, 170).unwrap(), 1);
        // Fewer wanted than there are templates: each once.
        assert_eq!(copies_per_template(10, 170).unwrap(), 1);
        assert!(copies_per_template(10, 0).is_err());
    }

    #[test]
    fn a_batch_inserts_about_the_rows_asked_for() {
        // 170 sagas leaving 1,700 rows: 10 a saga.
        assert_eq!(sagas_per_batch(170, 1_700, 100_000), 10_000);
        // A saga larger than a batch is a batch of its own.
        assert_eq!(sagas_per_batch(3, 750_000, 100_000), 1);
        // Sagas that left no rows at all: one batch for any number.
        assert_eq!(sagas_per_batch(5, 0, 100_000), 100_000);
    }

    #[test]
    fn a_copy_moves_its_times_and_leaves_generated_columns_to_the_table() {
        let columns = [
            column("id", "uuid", false),
            column("status", "text", false),
            column("created_at", "timestamp with time zone", false),
            column("deadline_at", "timestamp with time zone", false),
            column("customer_id", "text", true),
        ];
        let (names, values) = copy_columns(&columns, &[("id", "c.id")]);
        assert_eq!(names, "\"id\", \"status\", \"created_at\", \"deadline_at\"");
        assert_eq!(
            values,
            "c.id, r.\"status\", r.\"created_at\" + c.shift, r.\"deadline_at\" + c.shift"
        );
    }

    #[test]
    fn the_timeline_keeps_its_order_and_takes_ids_from_its_sequence() {
        let columns = [
            column("id", "bigint", true),
            column("saga_id", "uuid", false),
            column("at", "timestamp with time zone", false),
        ];
        let statement = copy_statement(&ORCHESTRATOR_TABLES[1], &columns);
        assert!(
            statement.contains("INSERT INTO saga_events (\"saga_id\", \"at\")"),
            "{statement}"
        );
        assert!(
            statement.contains("SELECT c.id, r.\"at\" + c.shift"),
            "{statement}"
        );
        assert!(statement.ends_with("ORDER BY c.id, r.id"), "{statement}");
        assert!(
            statement.contains("WHERE batch = $1::bigint"),
            "{statement}"
        );
    }

    #[test]
    fn only_recent_inbox_rows_are_copied() {
        let columns = [
            column("message_id", "uuid", false),
            column("received_at", "timestamp with time zone", false),
        ];
        let statement = copy_statement(&INBOX, &columns);
        assert!(statement.contains(RECENT_INBOX), "{statement}");
        assert!(statement.contains(NEW_MESSAGE_ID), "{statement}");
    }

    #[test]
    fn the_floor_of_a_millisecond_is_a_v7_id_below_every_id_of_it() {
        let ms = 1_796_670_000_000;
        let floor = uuid_v7_floor(ms);
        assert_eq!(floor.get_version_num(), 7);
        let (seconds, nanos) = floor.get_timestamp().unwrap().to_unix();
        assert_eq!(seconds as i64 * 1000 + i64::from(nanos / 1_000_000), ms);
        assert!(uuid_v7_floor(ms - 1) < floor);
    }

    #[test]
    fn the_id_functions_stay_inlinable() {
        // `text || integer` is only STABLE: an IMMUTABLE function holding
        // it is no longer inlined, and the load gets ten times slower.
        assert!(!FUNCTIONS.contains("|| k)"), "{FUNCTIONS}");
        assert_eq!(FUNCTIONS.matches("LANGUAGE sql IMMUTABLE").count(), 4);
    }

    #[test]
    fn large_counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
