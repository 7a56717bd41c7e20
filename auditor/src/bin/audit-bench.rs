//! `audit-bench`: fills three fresh databases with consistent sagas (a few
//! bulk `INSERT ... SELECT generate_series` statements, not one per saga),
//! then times `auditor::audit` over them. Every figure is generated from the
//! saga's number, so each database derives the same sagas on its own.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use auditor::config::Args;
use auditor::{audit, Config, Scope, Sources};
use clap::Parser;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};

static ORCHESTRATOR: Migrator = sqlx::migrate!("../migrations/orchestrator");
static INVENTORY: Migrator = sqlx::migrate!("../migrations/inventory");
static PAYMENT: Migrator = sqlx::migrate!("../migrations/payment");

/// Times the auditor over fresh databases filled with consistent sagas.
#[derive(Debug, Parser)]
#[command(name = "audit-bench")]
struct BenchArgs {
    /// Sagas to generate.
    #[arg(long, default_value_t = 100_000)]
    sagas: i32,
    /// Audits to time.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// A server URL with rights to create databases.
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    admin_url: String,
    /// How many of the sagas were made in the last day (the rest over the
    /// year before): what an incremental audit over a day reads.
    #[arg(long, default_value_t = 10_000)]
    last_day: i32,
    /// Leave the databases in place and print their URLs, to run `auditor`
    /// on them by hand.
    #[arg(long)]
    keep: bool,
}

/// Saga `i` of `$1`, made at `at_ms` (`$2` is now, in epoch milliseconds):
/// the `$3` newest over the last day, the rest over the year before it, as
/// a store with a year of history holds them; ids are UUIDv7 of that time.
/// 70% completed, 15% compensated (payment declined), 5% cancelled
/// (refunded), and among the last day's 5% suspended at the charge and 5%
/// running with a live deadline (older ones finished long ago: completed).
/// Two lines over 1000 SKUs; tax is 10% per line, rounded down.
const SAGAS: &str = "(
    SELECT *, q1 * p1 / 10 AS t1, q2 * p2 / 10 AS t2,
           q1 * p1 + q2 * p2 + q1 * p1 / 10 + q2 * p2 / 10 AS total,
           to_timestamp(at_ms / 1000.0) AS at
    FROM (
        SELECT *, (lpad(to_hex(at_ms), 12, '0') || '7' || substr(md5('bench-saga-' || i), 1, 3)
                   || '8' || substr(md5('bench-saga-' || i), 4, 15))::uuid AS saga_id
        FROM (
        SELECT i, CASE WHEN i <= $3 THEN $2::int8 - i::int8 * 86400000 / greatest($3, 1)
                       ELSE $2::int8 - 86400000 - (i - $3)::int8 * 31536000000 / greatest($1 - $3, 1)
                  END AS at_ms,
               CASE WHEN i % 20 < 14 THEN 'completed' WHEN i % 20 < 17 THEN 'compensated'
                    WHEN i % 20 < 18 THEN 'cancelled' WHEN i > $3 THEN 'completed'
                    WHEN i % 20 < 19 THEN 'suspended'
                    ELSE 'running' END AS status,
               'sku-' || lpad((i % 1000)::text, 4, '0') AS sku1, 1 + i % 3 AS q1,
               100 + (i % 1000 % 50) * 10 AS p1,
               'sku-' || lpad(((i * 7 + 1) % 1000)::text, 4, '0') AS sku2, 1 + i % 2 AS q2,
               100 + ((i * 7 + 1) % 1000 % 50) * 10 AS p2
        FROM generate_series(1, $1) AS i
        ) AS t
    ) AS g
) AS s";

/// What every database derives its sagas from.
#[derive(Clone, Copy)]
struct Fill {
    sagas: i32,
    now_ms: i64,
    recent: i32,
}

fn bound<'q>(
    sql: &'q str,
    fill: Fill,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(fill.sagas)
        .bind(fill.now_ms)
        .bind(fill.recent)
}

async fn fill_orchestrator(pool: &PgPool, fill: Fill) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO sagas (id, status, current_step, attempt, state, idempotency_key,
                            request_hash, deadline_at, created_at, updated_at)
         SELECT saga_id, status, current, 1, jsonb_build_object(
                    'id', saga_id, 'status', status,
                    'request', jsonb_build_object(
                        'customer_id', 'c-' || i % 5000,
                        'items', jsonb_build_array(
                            jsonb_build_object('sku', sku1, 'quantity', q1),
                            jsonb_build_object('sku', sku2, 'quantity', q2)),
                        'ship_to', jsonb_build_object('country', 'US', 'region', 'CA'),
                        'payment_method', 'sim_approve'),
                    'current', current, 'attempt', 1, 'series_start', 1,
                    'cancelled', status = 'cancelled',
                    'completed', CASE WHEN status = 'completed'
                        THEN '[\"inventory.reserve\", \"tax.calculate\", \"payment.charge\"]'::jsonb
                        ELSE '[\"inventory.reserve\", \"tax.calculate\"]'::jsonb END,
                    'compensations', '[]'::jsonb,
                    'reserved', jsonb_build_object('currency', 'USD', 'lines', jsonb_build_array(
                        jsonb_build_object('sku', sku1, 'quantity', q1, 'unit_price_cents', p1,
                                           'tax_category', 'standard'),
                        jsonb_build_object('sku', sku2, 'quantity', q2, 'unit_price_cents', p2,
                                           'tax_category', 'standard'))),
                    'tax', jsonb_build_object('tax_cents', t1 + t2, 'lines', jsonb_build_array(
                        jsonb_build_object('sku', sku1, 'rate_bp', 1000, 'tax_cents', t1),
                        jsonb_build_object('sku', sku2, 'rate_bp', 1000, 'tax_cents', t2))),
                    'charge', CASE WHEN status = 'completed' THEN jsonb_build_object(
                        'payment_id', md5('bench-payment-' || i)::uuid, 'amount_cents', total) END,
                    'reason', CASE WHEN status = 'compensated' THEN 'payment_declined' END,
                    'detail', NULL, 'last_error', NULL),
                'bench-' || i, 'hash',
                CASE WHEN status = 'running' THEN now() + interval '1 hour' END, at, at
         FROM {SAGAS},
              LATERAL (SELECT CASE WHEN status IN ('running', 'suspended')
                                   THEN 'payment.charge' END AS current) AS c"
    );
    bound(&sql, fill).execute(pool).await?;
    Ok(())
}

async fn fill_inventory(pool: &PgPool, fill: Fill) -> sqlx::Result<()> {
    // Plenty of stock, then on hand raised by what active reservations hold.
    sqlx::query(
        "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency,
                               tax_category)
         SELECT 'sku-' || lpad(k::text, 4, '0'), 'product ' || k, 1000000, 1000000,
                100 + (k % 50) * 10, 'USD', 'standard'
         FROM generate_series(0, 999) AS k",
    )
    .execute(pool)
    .await?;
    let reservations = format!(
        "INSERT INTO reservations (saga_id, status, currency)
         SELECT saga_id, CASE WHEN status IN ('compensated', 'cancelled') THEN 'released'
                              ELSE 'active' END, 'USD'
         FROM {SAGAS}"
    );
    bound(&reservations, fill).execute(pool).await?;
    let lines = format!(
        "INSERT INTO reservation_lines (saga_id, position, sku, quantity, unit_price_cents,
                                        tax_category)
         SELECT saga_id, l.position, l.sku, l.quantity, l.price, 'standard'
         FROM {SAGAS},
              LATERAL (VALUES (0, sku1, q1, p1), (1, sku2, q2, p2))
                  AS l(position, sku, quantity, price)"
    );
    bound(&lines, fill).execute(pool).await?;
    sqlx::query(
        "UPDATE products AS p SET on_hand = p.on_hand + h.quantity
         FROM (SELECT sku, sum(quantity)::int4 AS quantity
               FROM reservation_lines JOIN reservations USING (saga_id)
               WHERE status = 'active' GROUP BY sku) AS h
         WHERE p.sku = h.sku",
    )
    .execute(pool)
    .await?;
    Ok(())
}

async fn fill_payment(pool: &PgPool, fill: Fill) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO payments (saga_id, status, amount_cents, refunded_cents, currency,
                               payment_method, customer_id, provider_reference,
                               rejection_reason)
         SELECT saga_id,
                CASE status WHEN 'completed' THEN 'charged' WHEN 'compensated' THEN 'declined'
                            WHEN 'cancelled' THEN 'refunded' ELSE 'charging' END,
                CASE WHEN status IN ('completed', 'cancelled') THEN total ELSE 0 END,
                CASE WHEN status = 'cancelled' THEN total ELSE 0 END,
                'USD', 'sim_approve', 'c-' || i % 5000,
                CASE WHEN status IN ('completed', 'cancelled')
                     THEN md5('bench-payment-' || i)::uuid END,
                CASE WHEN status = 'compensated' THEN 'payment_declined' END
         FROM {SAGAS}
         WHERE status <> 'running'"
    );
    bound(&sql, fill).execute(pool).await?;
    // The provider's ledger: a charge per completed or cancelled saga, and
    // the refund of each cancelled one.
    let ledger = format!(
        "INSERT INTO provider_ledger (reference, idempotency_key, saga_id, operation, outcome,
                                      amount_cents, currency, payment_method)
         SELECT md5(o.operation || '-' || saga_id)::uuid, o.operation || ':' || saga_id, saga_id,
                o.operation, 'approved', total, 'USD', 'sim_approve'
         FROM {SAGAS},
              LATERAL (VALUES ('charge'), ('refund')) AS o(operation)
         WHERE status = 'completed' AND o.operation = 'charge' OR status = 'cancelled'"
    );
    bound(&ledger, fill).execute(pool).await?;
    Ok(())
}

/// The most memory this process has held (VmHWM), as the kernel counts it.
fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} MiB", kib as f64 / 1024.0))
        })
        .unwrap_or_else(|| "unknown (no /proc)".to_owned())
}

/// `admin` with its database name replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{name}{query}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let names: Vec<String> = ["orchestrator", "inventory", "payment"]
        .iter()
        .map(|service| format!("audit_bench_{}_{service}", std::process::id()))
        .collect();
    let mut admin = PgConnection::connect(&args.admin_url)
        .await
        .context("connect to the admin database")?;
    for name in &names {
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .with_context(|| format!("create database {name}"))?;
    }
    let result = run(&args, &names).await;
    if !args.keep {
        for name in &names {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("drop database {name}"))?;
        }
    }
    result
}

async fn run(args: &BenchArgs, names: &[String]) -> anyhow::Result<()> {
    let urls: Vec<String> = names
        .iter()
        .map(|name| database_url(&args.admin_url, name))
        .collect();
    let started = Instant::now();
    let mut pools = Vec::new();
    for (url, migrator) in urls.iter().zip([&ORCHESTRATOR, &INVENTORY, &PAYMENT]) {
        let pool = PgPool::connect(url).await?;
        migrator.run(&pool).await?;
        pools.push(pool);
    }
    let fill = Fill {
        sagas: args.sagas,
        now_ms: chrono::Utc::now().timestamp_millis(),
        recent: args.last_day.min(args.sagas),
    };
    tokio::try_join!(
        fill_orchestrator(&pools[0], fill),
        fill_inventory(&pools[1], fill),
        fill_payment(&pools[2], fill),
    )
    .context("fill the databases")?;
    for pool in &pools {
        // Fresh statistics, as a long-running database would have.
        sqlx::query("VACUUM ANALYZE").execute(pool).await?;
        pool.close().await;
    }
    println!(
        "filled {} sagas in {:.1} s",
        args.sagas,
        started.elapsed().as_secs_f64()
    );

    // Through the same configuration and read-only pools as the binary.
    let config = Config::from_args(Args {
        orchestrator_database_url: Some(urls[0].clone()),
        inventory_database_url: Some(urls[1].clone()),
        payment_database_url: Some(urls[2].clone()),
        ..Args::default()
    })?;
    let sources = Sources::connect(&config).await?;
    let mut timings = Vec::new();
    for run in 1..=args.runs {
        let started = Instant::now();
        let report = audit(&sources).await?;
        let took = started.elapsed();
        timings.push(took);
        print!("run {run}: {:.3} s, {}", took.as_secs_f64(), report);
        anyhow::ensure!(
            report.is_clean(),
            "the generated sagas should be consistent"
        );
    }
    let best = timings.iter().min().copied().unwrap_or(Duration::ZERO);
    println!(
        "full audit of {} sagas: best {:.3} s over {} runs, peak memory {}",
        args.sagas,
        best.as_secs_f64(),
        args.runs,
        peak_memory()
    );
    // Incremental, over the last day, as a cron every minute would after a
    // day's outage (the most it ever reads).
    let since = Scope::Since(chrono::Utc::now() - chrono::Duration::days(1));
    let started = Instant::now();
    let report = auditor::audit::run(&sources, None, since).await?;
    print!(
        "incremental audit over the last day: {:.3} s, {}",
        started.elapsed().as_secs_f64(),
        report
    );
    anyhow::ensure!(
        report.is_clean(),
        "the generated sagas should be consistent"
    );
    if args.keep {
        println!(
            "kept: ORCHESTRATOR_DATABASE_URL={} INVENTORY_DATABASE_URL={} PAYMENT_DATABASE_URL={}",
            urls[0], urls[1], urls[2]
        );
    }
    Ok(())
}
