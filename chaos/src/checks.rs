//! After the chaos: wait for every saga to settle, then look for what a
//! crash could have lost or doubled, through the API (is every accepted
//! checkout there?), the orchestrator's database (is any saga stuck? did one
//! key make two sagas?) and the auditor (do the services' databases agree?).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::api::{Api, Lookup};
use crate::environment::Environment;

/// Sagas that are neither final nor parked.
const IN_FLIGHT: &str = "status IN ('running', 'compensating')";

#[derive(Debug, Clone)]
pub struct Drain {
    pub took: Duration,
    /// Sagas still in flight when the drain gave up (0 if it did not).
    pub left: i64,
}

/// Waits until no saga is running or compensating, at most `bound`.
pub async fn drain(pool: &PgPool, bound: Duration) -> Drain {
    let started = Instant::now();
    let mut left = -1;
    loop {
        match sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM sagas WHERE {IN_FLIGHT}"))
            .fetch_one(pool)
            .await
        {
            Ok(0) => {
                return Drain {
                    took: started.elapsed(),
                    left: 0,
                }
            }
            Ok(count) => left = count,
            // The database may still be coming back: ask again.
            Err(_) => {}
        }
        if started.elapsed() >= bound {
            return Drain {
                took: started.elapsed(),
                left,
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub status: String,
    pub current_step: Option<String>,
    pub attempt: i32,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
}

/// Every saga of the run, read straight from the orchestrator's database.
pub async fn sagas(pool: &PgPool) -> anyhow::Result<Vec<SagaRow>> {
    sqlx::query_as(
        // The key as the client sent it: stored scoped by its client
        // (`client:key`) since checkout clients, bare before.
        "SELECT id, status, current_step, attempt,
                CASE WHEN client IS NULL THEN idempotency_key
                     ELSE substr(idempotency_key, length(client) + 2) END AS idempotency_key,
                last_error
         FROM sagas ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .context("cannot read the sagas from the orchestrator's database")
}

impl SagaRow {
    pub fn is_in_flight(&self) -> bool {
        self.status == "running" || self.status == "compensating"
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} at {} attempt {}{}",
            self.id,
            self.status,
            self.current_step.as_deref().unwrap_or("-"),
            self.attempt,
            self.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
    }
}

/// How much recovering the sagas did, from their timelines: events by kind
/// (`deadline_missed`, `late_ok`, ...) and commands sent again.
pub async fn timeline(pool: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    let mut counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT event, count(*) FROM saga_events GROUP BY event ORDER BY event")
            .fetch_all(pool)
            .await
            .context("cannot read the saga timelines")?;
    let resent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_events WHERE event = 'sent' AND attempt > 1")
            .fetch_one(pool)
            .await?;
    counts.push(("sent again (attempt > 1)".to_owned(), resent));
    Ok(counts)
}

/// Dead-lettered messages by reason; `None` where the orchestrator keeps no
/// such table.
pub async fn dead_letters(pool: &PgPool) -> Option<Vec<(String, i64)>> {
    sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC")
        .fetch_all(pool)
        .await
        .ok()
}

/// GET /v1/checkouts/{id} for every id, a few at a time.
pub async fn lookups(api: Arc<Api>, ids: Vec<Uuid>) -> HashMap<Uuid, Lookup> {
    const AT_ONCE: usize = 16;
    let mut results = HashMap::new();
    let mut pending = ids.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < AT_ONCE {
            let Some(id) = pending.next() else { break };
            let api = api.clone();
            tasks.spawn(async move { (id, api.lookup(id, Duration::from_secs(30)).await) });
        }
        match tasks.join_next().await {
            Some(Ok((id, lookup))) => {
                results.insert(id, lookup);
            }
            Some(Err(error)) => panic!("a lookup task failed: {error}"),
            None => return results,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// The auditor's exit code (0 clean, 1 violations, 2 or 3 it could not
    /// check); `None` if it could not be run or was killed.
    pub exit_code: Option<i32>,
    pub violations: Vec<String>,
    /// Its summary line, or why there is none.
    pub summary: String,
}

impl Audit {
    pub fn ran(&self) -> bool {
        matches!(self.exit_code, Some(0 | 1))
    }
}

/// Runs the auditor binary on the orchestrator, inventory and payment
/// databases; its whole output is kept in `output`.
pub async fn audit(
    bin_dir: &Path,
    env: &Environment,
    stripe: Option<&crate::stripe::StripeRun>,
    output: &Path,
) -> Audit {
    let mut urls = Vec::new();
    for service in ["orchestrator", "inventory", "payment"] {
        match env.primary_database_url(service).await {
            Ok(url) => urls.push(url),
            Err(error) => {
                return Audit {
                    exit_code: None,
                    violations: Vec::new(),
                    summary: format!("could not run the auditor: {error:#}"),
                }
            }
        }
    }
    let run = tokio::process::Command::new(bin_dir.join("auditor"))
        .env("ORCHESTRATOR_DATABASE_URL", &urls[0])
        .env("INVENTORY_DATABASE_URL", &urls[1])
        .env("PAYMENT_DATABASE_URL", &urls[2])
        .envs(stripe.map(|s| s.auditor_env()).unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let result = match tokio::time::timeout(Duration::from_secs(300), run).await {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => {
            return Audit {
                exit_code: None,
                violations: Vec::new(),
                summary: format!("could not run the auditor: {error}"),
            }
        }
        Err(_) => {
            return Audit {
                exit_code: None,
                violations: Vec::new(),
                summary: "the auditor did not finish within 300 s".to_owned(),
            }
        }
    };
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    let _ = std::fs::write(output, format!("{stdout}{stderr}"));
    let violations = stdout
        .lines()
        .filter(|line| line.starts_with("VIOLATION"))
        .map(str::to_owned)
        .collect();
    let summary = stdout
        .lines()
        .rfind(|line| line.starts_with("audited"))
        .or_else(|| stderr.lines().last())
        .unwrap_or("(no output)")
        .to_owned();
    Audit {
        exit_code: result.status.code(),
        violations,
        summary,
    }
}
