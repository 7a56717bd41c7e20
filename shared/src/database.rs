//! PostgreSQL pools: bounded, sized to what the process does at once,
//! quick to give idle connections back, and patient with a database that is
//! still starting. The connection budget the README states lives here.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::Backoff;
use crate::tls::{self, TlsRefused};

/// The most connections a pool opens by default, whatever its concurrency:
/// PostgreSQL runs only a few statements per core at a time, so past this a
/// larger pool moves the queue into the server without adding throughput,
/// and eats the budget every other process and operator shares.
pub const DEFAULT_POOL_CAP: u32 = 8;

/// A pooled connection unused this long is closed, so that a burst's
/// connections go back to the server soon after it, for the other
/// processes and for operators.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the budget leaves to operators beside the services: the
/// auditor, one-shot commands (`inventory export`), `psql`, monitoring.
pub const OPERATOR_RESERVE: u32 = 10;

/// How long a caller waits for a pooled connection before the pool reports
/// a timeout (the API then answers `503 overloaded`).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default pool of a process that handles `concurrency` things at once,
/// each holding one connection at a time.
pub fn pool_for_concurrency(concurrency: u16) -> u32 {
    u32::from(concurrency).clamp(1, DEFAULT_POOL_CAP)
}

/// Connects, retrying with backoff until the database answers or `stop` fires.
/// A refused TLS handshake is not retried: it is a [`TlsRefused`] (inside
/// `sqlx::Error::Tls`) naming `DATABASE_URL`.
#[tracing::instrument(skip_all, fields(pool_size))]
pub async fn connect_with_backoff(
    url: &str,
    pool_size: u32,
    stop: &CancellationToken,
) -> Result<PgPool, sqlx::Error> {
    tls::install_crypto_provider();
    let mut options: PgConnectOptions = url.parse()?;
    if !tls::database_url_sets_ssl_mode(url) {
        // Plain unless the URL asks for TLS, as before TLS was built in:
        // libpq's default, `prefer`, would encrypt without verifying
        // anything (no protection from an active attacker) at a CPU cost,
        // wherever the server happens to have `ssl = on`.
        options = options.ssl_mode(PgSslMode::Disable);
    } else if matches!(options.get_ssl_mode(), PgSslMode::Require)
        && tls::database_root_cert(url).is_some()
    {
        // libpq verifies the CA under `require` once a root certificate is
        // given; sqlx would not, and a libpq user would believe it did.
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    let mut backoff = Backoff::reconnecting();
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(0)
            .idle_timeout(IDLE_TIMEOUT)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        let error = match attempt {
            Ok(pool) => return Ok(pool),
            Err(error) => error,
        };
        if let Some(refused) = tls_refusal(&error) {
            return Err(sqlx::Error::Tls(Box::new(refused)));
        }
        if !is_unreachable(&error) {
            return Err(error);
        }
        let wait = backoff.next_delay();
        tracing::warn!(%error, ?wait, "PostgreSQL not reachable yet; retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Err(error),
        }
    }
}

/// A handshake refused on the certificate, or sqlx's own TLS errors (a
/// server without TLS under `sslmode=require`, an unusable root file).
fn tls_refusal(error: &sqlx::Error) -> Option<TlsRefused> {
    match (tls::handshake_failure(error), error) {
        (Some(reason), _) => Some(TlsRefused::database(reason)),
        (None, sqlx::Error::Tls(inner)) => Some(TlsRefused::database(inner.to_string())),
        (None, _) => None,
    }
}

fn is_unreachable(error: &sqlx::Error) -> bool {
    // A connection closed before the server answered its TLS request is a
    // protocol error to sqlx (`unexpected response from SSLRequest`).
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_)
    ) || error
        .as_database_error()
        .and_then(|e| e.code())
        // 57P03: the database system is starting up
        .is_some_and(|code| code == "57P03")
}

/// The server's connection slots as one session sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ServerSlots {
    /// `max_connections`.
    pub max_connections: i64,
    /// Slots this session's role may not use (`superuser_reserved_connections`
    /// and `reserved_connections`, for a role that is not a superuser).
    pub reserved: i64,
    /// Client sessions open now, other than the one asking.
    pub in_use: i64,
}

impl ServerSlots {
    /// Slots left for this process beside what is open now.
    pub fn free(&self) -> i64 {
        self.max_connections - self.reserved - self.in_use
    }

    /// Whether a pool of `pool` connections (with this asking session among
    /// them) and the operators' reserve no longer fit in what is free.
    pub fn too_tight_for(&self, pool: u32) -> bool {
        self.free() < i64::from(pool) + i64::from(OPERATOR_RESERVE)
    }
}

#[tracing::instrument(skip_all)]
pub async fn server_slots(pool: &PgPool) -> Result<ServerSlots, sqlx::Error> {
    sqlx::query_as(
        "SELECT current_setting('max_connections')::int8 AS max_connections,
                CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN 0
                     ELSE current_setting('superuser_reserved_connections')::int8
                          + COALESCE(current_setting('reserved_connections', true), '0')::int8
                END AS reserved,
                (SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS in_use",
    )
    .fetch_one(pool)
    .await
}

/// Reads the server's `max_connections` and what is in use, and warns in
/// one line when this process's pool and the operators' reserve do not fit
/// in what is left: the processes started after it, or a burst, would then
/// leave the auditor or `psql` refused. A warning only: the operator may
/// know better (other processes may be about to stop).
#[tracing::instrument(skip_all, fields(pool = pool_size))]
pub async fn warn_if_budget_tight(pool: &PgPool, pool_size: u32) {
    match server_slots(pool).await {
        Ok(slots) if slots.too_tight_for(pool_size) => tracing::warn!(
            max_connections = slots.max_connections,
            reserved = slots.reserved,
            in_use = slots.in_use,
            pool = pool_size,
            operator_reserve = OPERATOR_RESERVE,
            "the database connection budget looks too tight: {} of max_connections {} are free, \
             fewer than this pool of {pool_size} plus {OPERATOR_RESERVE} kept for operators; \
             lower DATABASE_POOL_SIZE (or PREFETCH), run fewer processes, or raise max_connections",
            slots.free(),
            slots.max_connections,
        ),
        Ok(slots) => tracing::debug!(?slots, "database connection budget fits"),
        Err(error) => tracing::debug!(%error, "cannot read max_connections; budget not checked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_follows_concurrency_up_to_the_cap() {
        assert_eq!(pool_for_concurrency(0), 1);
        assert_eq!(pool_for_concurrency(2), 2);
        assert_eq!(pool_for_concurrency(32), DEFAULT_POOL_CAP);
    }

    #[test]
    fn the_budget_is_tight_when_the_pool_and_the_reserve_do_not_fit() {
        let slots = |in_use| ServerSlots {
            max_connections: 100,
            reserved: 3,
            in_use,
        };
        // 97 usable: 70 in use leaves 27, room for 8 + 10.
        assert!(!slots(70).too_tight_for(8));
        // 80 in use leaves 17 < 8 + 10.
        assert!(slots(80).too_tight_for(8));
        assert!(slots(0).too_tight_for(1000));
    }
}
