//! PostgreSQL pools: bounded, and patient with a database that is still
//! starting.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::Backoff;

/// Connects, retrying with backoff until the database answers or `stop` fires.
#[tracing::instrument(skip_all)]
pub async fn connect_with_backoff(
    url: &str,
    pool_size: u32,
    stop: &CancellationToken,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(error) if is_unreachable(&error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "PostgreSQL not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Err(error),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
        || error
            .as_database_error()
            .and_then(|e| e.code())
            // 57P03: the database system is starting up
            .is_some_and(|code| code == "57P03")
}
