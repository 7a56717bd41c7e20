//! The checkout clients' rows, and the instances' heartbeats that share
//! their rates.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::Store;
use crate::clients::{ClientLimits, KeyDigest, LimitOverrides, SeededKeys};

/// The statuses of a saga in flight; `sagas_client_in_flight` indexes
/// exactly these.
pub const IN_FLIGHT: &str = "('running', 'compensating', 'suspended')";

/// A client as support sees it (never its key).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub name: String,
    #[sqlx(flatten)]
    pub limits: LimitColumns,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub in_flight: i64,
}

/// A client's own limits as its row holds them (`NULL`: the default).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LimitColumns {
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i64>,
    pub max_in_flight: Option<i64>,
}

impl LimitColumns {
    pub fn overrides(&self) -> LimitOverrides {
        LimitOverrides {
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst.and_then(|n| u32::try_from(n).ok()),
            max_in_flight: self.max_in_flight.and_then(|n| u32::try_from(n).ok()),
        }
    }
}

impl ClientRow {
    pub fn overrides(&self) -> LimitOverrides {
        self.limits.overrides()
    }

    pub fn limits(&self, defaults: &ClientLimits) -> ClientLimits {
        self.overrides().over(defaults)
    }
}

/// An active client as an instance keeps it to authenticate requests.
#[derive(sqlx::FromRow)]
pub struct ActiveRow {
    pub name: String,
    pub key_sha256: Vec<u8>,
    #[sqlx(flatten)]
    pub limits: LimitColumns,
}

const COLUMNS: &str = "c.name, c.rate_per_second, c.rate_burst, c.max_in_flight, c.created_at, \
                       c.revoked_at";

fn in_flight_of(alias: &str) -> String {
    format!(
        "(SELECT count(*) FROM sagas s WHERE s.client = {alias}.name AND s.status IN {IN_FLIGHT})"
    )
}

/// How long an instance counts as running after its last heartbeat.
pub const INSTANCE_TTL_SECONDS: i64 = 5;

/// The `checkout_clients` and `orchestrator_instances` tables.
#[derive(Clone)]
pub struct ClientTable {
    pool: PgPool,
}

impl Store {
    pub fn client_table(&self) -> ClientTable {
        ClientTable {
            pool: self.pool.clone(),
        }
    }
}

impl ClientTable {
    /// Creates each seeded client, or gives it the seeded key. A revoked
    /// client stays revoked: the environment does not bring it back.
    pub async fn seed(&self, keys: &SeededKeys) -> Result<(), sqlx::Error> {
        for (name, digest) in keys.entries() {
            let revoked: Option<bool> = sqlx::query_scalar(
                "INSERT INTO checkout_clients (name, key_sha256) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET key_sha256 = EXCLUDED.key_sha256
                     WHERE checkout_clients.revoked_at IS NULL
                 RETURNING false",
            )
            .bind(name)
            .bind(&digest[..])
            .fetch_optional(&self.pool)
            .await?;
            if revoked.is_none() {
                tracing::warn!(client = %name, "CHECKOUT_CLIENT_KEYS names a revoked client; it stays revoked");
            }
        }
        Ok(())
    }

    pub async fn active(&self) -> Result<Vec<ActiveRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT name, key_sha256, rate_per_second, rate_burst, max_in_flight
             FROM checkout_clients WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Every client, revoked ones too, by name.
    pub async fn list(&self) -> Result<Vec<ClientRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS}, {} AS in_flight FROM checkout_clients c ORDER BY c.name",
            in_flight_of("c")
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// `None` when the name is taken (a revoked client's too: its name stays
    /// on its sagas).
    pub async fn add(
        &self,
        name: &str,
        key: &KeyDigest,
        limits: &LimitOverrides,
    ) -> Result<Option<ClientRow>, sqlx::Error> {
        let statement = format!(
            "INSERT INTO checkout_clients AS c (name, key_sha256, rate_per_second, rate_burst, max_in_flight)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING
             RETURNING {COLUMNS}, 0::int8 AS in_flight"
        );
        let query = sqlx::query_as(&statement).bind(name).bind(&key[..]);
        bind_limits(query, limits).fetch_optional(&self.pool).await
    }

    /// Sets the limits given, leaving the others as they are.
    pub async fn set_limits(
        &self,
        name: &str,
        limits: &LimitOverrides,
    ) -> Result<Option<ClientRow>, sqlx::Error> {
        let statement = format!(
            "UPDATE checkout_clients c SET rate_per_second = coalesce($2, rate_per_second),
                    rate_burst = coalesce($3, rate_burst), max_in_flight = coalesce($4, max_in_flight)
             WHERE name = $1
             RETURNING {COLUMNS}, {} AS in_flight",
            in_flight_of("c")
        );
        bind_limits(sqlx::query_as(&statement).bind(name), limits)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn revoke(&self, name: &str) -> Result<Option<ClientRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE checkout_clients c SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1
             RETURNING {COLUMNS}, {} AS in_flight",
            in_flight_of("c")
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records that `instance` runs, forgets long-gone ones, and says how many
    /// run (this one included).
    pub async fn heartbeat(&self, instance: Uuid) -> Result<usize, sqlx::Error> {
        let others: i64 = sqlx::query_scalar(
            "WITH beat AS (
                 INSERT INTO orchestrator_instances (id, seen_at) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()
             ), gone AS (
                 DELETE FROM orchestrator_instances WHERE seen_at < now() - interval '1 hour'
             )
             SELECT count(*) FROM orchestrator_instances
             WHERE id <> $1 AND seen_at > now() - $2 * interval '1 second'",
        )
        .bind(instance)
        .bind(INSTANCE_TTL_SECONDS)
        .fetch_one(&self.pool)
        .await?;
        Ok(1 + usize::try_from(others).unwrap_or(0))
    }

    /// The others take this instance's share at once rather than after the TTL.
    pub async fn leave(&self, instance: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM orchestrator_instances WHERE id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Binds `limits` as their columns hold them (counts as `int8`): the rate,
/// the burst, then the most in flight.
fn bind_limits<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    limits: &LimitOverrides,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    query
        .bind(limits.rate_per_second)
        .bind(limits.rate_burst.map(i64::from))
        .bind(limits.max_in_flight.map(i64::from))
}
