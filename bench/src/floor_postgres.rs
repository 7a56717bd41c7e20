//! The PostgreSQL half of the floor: a saga step written as one statement
//! (inbox claim, stock effect, reply record) on a scratch database.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::error::BenchError;
use crate::floor::ProbeFigures;
use crate::latency::Latencies;

/// As many stock rows as the bench catalogue has SKUs, so row contention
/// is that of the checkouts the system runs.
const STOCK_ROWS: u32 = 50;

const SCHEMA: &str = "
CREATE TABLE inbox (message_id uuid PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE stock (sku text PRIMARY KEY, available bigint NOT NULL);
CREATE TABLE replies (message_id uuid PRIMARY KEY, body jsonb NOT NULL,
                      created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO stock SELECT 'SKU-' || i, 1000000000000 FROM generate_series(1, 50) AS i;
";

/// Claims the message, takes stock only if the claim is new and the stock
/// suffices, and records the reply, in one statement: one round trip, one
/// durable commit.
const STEP: &str = "
WITH claim AS (
    INSERT INTO inbox (message_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING message_id
), taken AS (
    UPDATE stock SET available = available - $3
    WHERE sku = $2 AND available >= $3 AND EXISTS (SELECT 1 FROM claim)
    RETURNING sku, available
)
INSERT INTO replies (message_id, body)
SELECT claim.message_id, jsonb_build_object('sku', taken.sku, 'available', taken.available)
FROM claim, taken
";

/// Runs the probe on a scratch database it creates from `admin_url` and
/// drops at the end, whatever happened.
pub async fn probe(
    admin_url: &str,
    clients: usize,
    length: Duration,
) -> Result<ProbeFigures, BenchError> {
    let admin = PgConnectOptions::from_str(admin_url)?;
    let name = format!("bench_floor_{:08x}", rand::random::<u32>());
    let mut connection = PgConnection::connect_with(&admin).await?;
    connection
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await?;
    let result = measure(admin.clone().database(&name), clients, length).await;
    connection
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await?;
    result
}

async fn measure(
    options: PgConnectOptions,
    clients: usize,
    length: Duration,
) -> Result<ProbeFigures, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .min_connections(clients as u32)
        .connect_with(options)
        .await?;
    pool.execute(SCHEMA).await?;

    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let pool = pool.clone();
        tasks.spawn(async move { run_client(&pool, deadline).await });
    }
    let mut loaded = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        let client = joined.expect("a probe client does not panic")?;
        for latency in client {
            loaded.record(latency);
        }
    }
    let loaded_rate = loaded.len() as f64 / started.elapsed().as_secs_f64();

    let alone = run_client(&pool, Instant::now() + length).await?;
    let mut alone_latencies = Latencies::default();
    alone.into_iter().for_each(|l| alone_latencies.record(l));
    pool.close().await;
    Ok(ProbeFigures {
        clients,
        loaded_rate,
        loaded: loaded.summary(),
        alone: alone_latencies.summary(),
    })
}

async fn run_client(pool: &PgPool, deadline: Instant) -> Result<Vec<Duration>, BenchError> {
    let mut connection = pool.acquire().await?;
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let sku = format!("SKU-{}", rand::random_range(1..=STOCK_ROWS));
        let started = Instant::now();
        sqlx::query(STEP)
            .bind(uuid::Uuid::new_v4())
            .bind(sku)
            .bind(1_i64)
            .execute(&mut *connection)
            .await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}
