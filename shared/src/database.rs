//! PostgreSQL pools: bounded, sized to what the process does at once,
//! quick to give idle connections back, and patient with a database that is
//! still starting. The connection budget the README states lives here, and
//! so does following a primary across hosts (a failover).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, PgPool};
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

/// How long a one-shot operator command waits for its database: an operator
/// at a terminal wants an error, not a silent wait for ever.
pub const COMMAND_CONNECT_PATIENCE: Duration = Duration::from_secs(15);

/// [`connect_with_backoff`] for a one-shot operator command (`migrate`,
/// `inventory import`): gives up after [`COMMAND_CONNECT_PATIENCE`].
pub async fn connect_for_command(url: &str, pool_size: u32) -> Result<PgPool, sqlx::Error> {
    let give_up = CancellationToken::new();
    let timer = tokio::spawn({
        let give_up = give_up.clone();
        async move {
            tokio::time::sleep(COMMAND_CONNECT_PATIENCE).await;
            give_up.cancel();
        }
    });
    let pool = connect_with_backoff(url, pool_size, &give_up).await;
    timer.abort();
    pool
}

/// How often a pool over several hosts checks that its host is still the
/// primary, and so about how long after a promotion it moves to the new one.
pub const PRIMARY_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long one host may take to answer whether it is the primary.
const PRIMARY_ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The hosts of a `DATABASE_URL`, each as a URL of its own. libpq reads
/// `postgres://user@host1:5441,host2:5442/db` as "the same database on any
/// of these hosts"; sqlx takes one host only (its issue 2290), so the split
/// is ours. `target_session_attrs` is libpq's and not sqlx's: it is dropped,
/// and with several hosts the primary (`read-write`) is what is looked for,
/// since every service writes.
pub fn host_urls(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let tail = without_parameter(tail, "target_session_attrs");
    hosts
        .split(',')
        .map(|host| format!("{scheme}://{credentials}{host}{tail}"))
        .collect()
}

/// `url` with its database name replaced by `name`, every host and
/// parameter kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    format!("{base}/{name}{query}")
}

fn without_parameter(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Connects, retrying with backoff until the database answers or `stop`
/// fires. A URL with several hosts gets a pool on the primary, which
/// follows the primary to another host when it changes (see
/// [`follow_primary`]).
/// A refused TLS handshake is not retried: it is a [`TlsRefused`] (inside
/// `sqlx::Error::Tls`) naming `DATABASE_URL`.
#[tracing::instrument(skip_all, fields(pool_size))]
pub async fn connect_with_backoff(
    url: &str,
    pool_size: u32,
    stop: &CancellationToken,
) -> Result<PgPool, sqlx::Error> {
    tls::install_crypto_provider();
    let hosts = host_urls(url)
        .iter()
        .map(|u| host_options(url, u))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.len() > 1 {
        return connect_to_primary(hosts, pool_size, stop).await;
    }
    let options = hosts.into_iter().next().expect("at least one host");
    let mut backoff = Backoff::reconnecting();
    loop {
        let attempt = pool_options(pool_size).connect_with(options.clone()).await;
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

/// A pooled connection idle for longer than this is pinged before use. One
/// used more recently is handed out as it is: on the hot path every
/// checkout would otherwise pay a round trip before its first statement.
/// Should it be broken all the same (the server restarted within the
/// second), its statement fails as any statement does in an outage (a
/// transient error, retried), and the pool drops it on release.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

fn pool_options(pool_size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(0)
        .idle_timeout(IDLE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// One host's connect options. TLS follows the whole URL's `sslmode`:
/// plain unless the URL asks for TLS, as before TLS was built in (libpq's
/// default, `prefer`, would encrypt without verifying anything, at a CPU
/// cost, wherever the server happens to have `ssl = on`); and, as libpq
/// does, `require` verifies the CA once a root certificate is given, which
/// sqlx alone would not.
fn host_options(url: &str, host_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = host_url.parse()?;
    Ok(if !tls::database_url_sets_ssl_mode(url) {
        options.ssl_mode(PgSslMode::Disable)
    } else if matches!(options.get_ssl_mode(), PgSslMode::Require)
        && tls::database_root_cert(url).is_some()
    {
        options.ssl_mode(PgSslMode::VerifyCa)
    } else {
        options
    })
}

fn host_name(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Waits (with backoff) for one of `hosts` to be a primary, and returns a
/// pool on it that follows the primary from then on.
async fn connect_to_primary(
    hosts: Vec<PgConnectOptions>,
    pool_size: u32,
    stop: &CancellationToken,
) -> Result<PgPool, sqlx::Error> {
    let mut backoff = Backoff::reconnecting();
    let primary = loop {
        if let Some(primary) = find_primary(&hosts).await {
            break primary;
        }
        let wait = backoff.next_delay();
        tracing::warn!(
            hosts = hosts.len(),
            ?wait,
            "no PostgreSQL primary reachable yet; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Err(sqlx::Error::PoolClosed),
        }
    };
    tracing::info!(primary = %host_name(&hosts[primary]), "PostgreSQL primary found");
    let pool = pool_options(pool_size).connect_lazy_with(hosts[primary].clone());
    tokio::spawn(follow_primary(pool.clone(), hosts, primary, stop.clone()));
    Ok(pool)
}

/// The first of `hosts` that answers and is not in recovery (a standby is).
async fn find_primary(hosts: &[PgConnectOptions]) -> Option<usize> {
    for (at, host) in hosts.iter().enumerate() {
        let answer = tokio::time::timeout(PRIMARY_ANSWER_WITHIN, async {
            let mut connection = PgConnection::connect_with(host).await?;
            let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut connection)
                .await?;
            let _ = connection.close().await;
            Ok::<_, sqlx::Error>(standby)
        })
        .await;
        match answer {
            Ok(Ok(false)) => return Some(at),
            Ok(Ok(true)) => tracing::debug!(host = %host_name(host), "a standby; not used"),
            Ok(Err(error)) => tracing::debug!(host = %host_name(host), %error, "not reachable"),
            Err(_) => tracing::debug!(host = %host_name(host), "no answer in time"),
        }
    }
    None
}

/// A single session on the primary among `url`'s hosts, and that host's own
/// URL: for a tool that connects once (creating databases, an audit)
/// rather than keeping a pool that follows the primary.
pub async fn primary_connection(url: &str) -> Result<(String, PgConnection), sqlx::Error> {
    let mut last = None;
    for host in host_urls(url) {
        let mut connection = match PgConnection::connect(&host).await {
            Ok(connection) => connection,
            Err(error) => {
                last = Some(error);
                continue;
            }
        };
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut connection)
            .await?;
        if !standby {
            return Ok((host, connection));
        }
        let _ = connection.close().await;
    }
    Err(last
        .unwrap_or_else(|| sqlx::Error::Configuration("every host of the URL is a standby".into())))
}

/// Keeps `pool` on the primary: while its host answers as a primary
/// nothing changes; once it does not (killed, or demoted), the hosts are
/// asked again and new connections go to the one that is now the primary.
/// Until one is found every query fails, and the API answers 503.
async fn follow_primary(
    pool: PgPool,
    hosts: Vec<PgConnectOptions>,
    mut current: usize,
    stop: CancellationToken,
) {
    let mut lost_since: Option<std::time::Instant> = None;
    while !pool.is_closed() {
        tokio::select! {
            _ = tokio::time::sleep(PRIMARY_CHECK_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let still_primary = tokio::time::timeout(
            PRIMARY_ANSWER_WITHIN,
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&pool),
        )
        .await
        .is_ok_and(|answer| matches!(answer, Ok(false)));
        if still_primary {
            lost_since = None;
            continue;
        }
        let since = *lost_since.get_or_insert_with(|| {
            tracing::warn!(host = %host_name(&hosts[current]), "the PostgreSQL primary does not answer as one; looking for the primary");
            std::time::Instant::now()
        });
        match find_primary(&hosts).await {
            Some(found) if found != current => {
                current = found;
                pool.set_connect_options(hosts[current].clone());
                tracing::warn!(
                    primary = %host_name(&hosts[current]),
                    after_ms = since.elapsed().as_millis() as u64,
                    "PostgreSQL primary moved; new connections go there"
                );
                lost_since = None;
            }
            Some(_) => lost_since = None,
            None => {}
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

/// `DATABASE_URL`: a PostgreSQL URL whose TLS parameters make sense. All a
/// one-shot command (`migrate`, `inventory import`) needs.
pub fn url(
    source: &dyn crate::config::Source,
) -> Result<secrecy::SecretString, crate::config::ConfigError> {
    use secrecy::ExposeSecret;
    let database_url = crate::config::url(
        source,
        "DATABASE_URL",
        &["postgres", "postgresql"],
        "set it to this service's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/inventory",
    )?;
    tls::check_database_url(database_url.expose_secret())?;
    Ok(database_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_several_hosts_is_one_url_per_host() {
        assert_eq!(
            host_urls(
                "postgres://app:s3cret@10.0.0.1:5441,10.0.0.2:5442/orders?target_session_attrs=read-write&sslmode=disable"
            ),
            [
                "postgres://app:s3cret@10.0.0.1:5441/orders?sslmode=disable",
                "postgres://app:s3cret@10.0.0.2:5442/orders?sslmode=disable",
            ]
        );
        assert_eq!(
            host_urls("postgresql://h1,h2:5433/db?target_session_attrs=read-write"),
            ["postgresql://h1/db", "postgresql://h2:5433/db"]
        );
        assert_eq!(
            host_urls("postgres://u@127.0.0.1:5432/db"),
            ["postgres://u@127.0.0.1:5432/db"]
        );
        // A password may hold an `@`; the hosts come after the last one.
        assert_eq!(
            host_urls("postgres://u:p@ss@a:1,b:2"),
            ["postgres://u:p@ss@a:1", "postgres://u:p@ss@b:2"]
        );
        for url in host_urls("postgres://u@a:5441,b:5442/db?target_session_attrs=read-write") {
            let options: PgConnectOptions = url.parse().unwrap();
            assert_eq!(options.get_database(), Some("db"));
        }
    }

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
