//! Reading: one REPEATABLE READ snapshot per database, and the facts of a
//! slice of sagas read from them in a few bulk queries (never one per
//! saga), so that an audit holds one slice in memory at a time.
//!
//! There is no snapshot across databases, so the order of reads is what keeps
//! a live system from raising false alarms. The orchestrator's snapshot is
//! taken first: whatever a saga's final status promises (stock held, money
//! charged or returned) committed in a worker database before that status
//! did, so the worker snapshots taken after it see it. A reservation or
//! payment whose saga the orchestrator's snapshot does not know may belong to
//! a saga created since; those few ids are looked up again afterwards.
//!
//! Every read of a slice is a range or a list of saga ids, which each table
//! answers from its key or its saga-id index: a slice costs the same
//! whatever the size of the history around it.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::facts::{saga_state, Facts, Product, Quantities, Reservation, Saga, SagaStatus};
use crate::{AuditError, Database, Sources};

fn read_error(database: Database) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |source| AuditError::Read { database, source }
}

/// Which sagas a read covers: ids in `(after, through]`, and the ids listed.
#[derive(Debug, Clone)]
pub struct Slice {
    pub after: Uuid,
    pub through: Uuid,
    pub ids: Vec<Uuid>,
}

impl Slice {
    pub fn range(after: Uuid, through: Uuid) -> Self {
        Slice {
            after,
            through,
            ids: Vec::new(),
        }
    }

    /// `ids`, and every id above `after` (records of sagas created since).
    pub fn ids_and_newer(ids: Vec<Uuid>, after: Uuid) -> Self {
        Slice {
            after,
            through: Uuid::max(),
            ids,
        }
    }

    /// The condition on `column` with `$1`, `$2`, `$3` bound by [`bind`].
    fn condition(column: &str) -> String {
        format!("(({column} > $1 AND {column} <= $2) OR {column} = ANY($3))")
    }
}

/// The three databases, each at its snapshot.
pub struct Snapshots {
    orchestrator: Transaction<'static, Postgres>,
    inventory: Transaction<'static, Postgres>,
    payment: Transaction<'static, Postgres>,
    /// The orchestrator database's clock at its snapshot.
    pub now: DateTime<Utc>,
    pub archived_below: Option<Uuid>,
    pub reservations_kept_from: Option<Uuid>,
    pub payments_kept_from: Option<Uuid>,
}

/// A read-only transaction whose snapshot is taken now: PostgreSQL takes a
/// REPEATABLE READ snapshot at the first statement, not at BEGIN.
async fn snapshot(
    pool: &PgPool,
) -> Result<(Transaction<'static, Postgres>, DateTime<Utc>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let now = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    Ok((tx, now))
}

impl Snapshots {
    /// The orchestrator's snapshot first, then the workers'.
    pub async fn take(sources: &Sources) -> Result<Snapshots, AuditError> {
        let (mut orchestrator, now) = snapshot(&sources.orchestrator)
            .await
            .map_err(read_error(Database::Orchestrator))?;
        let (mut inventory, _) = snapshot(&sources.inventory)
            .await
            .map_err(read_error(Database::Inventory))?;
        let (mut payment, _) = snapshot(&sources.payment)
            .await
            .map_err(read_error(Database::Payment))?;
        let archived_below = read_horizon(&mut orchestrator, "archived_below")
            .await
            .map_err(read_error(Database::Orchestrator))?;
        let reservations_kept_from = read_horizon(&mut inventory, "deleted_below")
            .await
            .map_err(read_error(Database::Inventory))?;
        let payments_kept_from = read_horizon(&mut payment, "deleted_below")
            .await
            .map_err(read_error(Database::Payment))?;
        Ok(Snapshots {
            orchestrator,
            inventory,
            payment,
            now,
            archived_below,
            reservations_kept_from,
            payments_kept_from,
        })
    }

    /// Up to `limit` sagas above `after`, in id order.
    pub async fn sagas_after(&mut self, after: Uuid, limit: i64) -> Result<Vec<Saga>, AuditError> {
        read_sagas(&mut self.orchestrator, Which::After(after, limit))
            .await
            .map_err(read_error(Database::Orchestrator))
    }

    /// The sagas `ids`, in id order.
    pub async fn sagas_by_id(&mut self, ids: &[Uuid]) -> Result<Vec<Saga>, AuditError> {
        read_sagas(&mut self.orchestrator, Which::Ids(ids))
            .await
            .map_err(read_error(Database::Orchestrator))
    }

    /// The sagas that finished at or after `since`, and every live one:
    /// through the `(status, updated_at)` index, never the history before.
    pub async fn changed_since(&mut self, since: DateTime<Utc>) -> Result<Vec<Uuid>, AuditError> {
        let finished: Vec<&str> = SagaStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(SagaStatus::as_str)
            .collect();
        let live: Vec<&str> = SagaStatus::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(SagaStatus::as_str)
            .collect();
        sqlx::query_scalar(
            "SELECT id FROM sagas WHERE status = ANY($1) AND updated_at >= $2
             UNION SELECT id FROM sagas WHERE status = ANY($3)",
        )
        .bind(finished)
        .bind(since)
        .bind(live)
        .fetch_all(&mut *self.orchestrator)
        .await
        .map_err(read_error(Database::Orchestrator))
    }

    /// The facts of `sagas` and of every record in `slice`.
    pub async fn facts_of(&mut self, sagas: Vec<Saga>, slice: &Slice) -> Result<Facts, AuditError> {
        let outbox_sql = format!(
            "SELECT DISTINCT saga_id FROM outbox WHERE {}",
            Slice::condition("saga_id")
        );
        let with_outbox: HashSet<Uuid> = bind(sqlx::query_scalar(&outbox_sql), slice)
            .fetch_all(&mut *self.orchestrator)
            .await
            .map_err(read_error(Database::Orchestrator))?
            .into_iter()
            .collect();
        let reservations = read_reservations(&mut self.inventory, slice)
            .await
            .map_err(read_error(Database::Inventory))?;
        let payments = read_by_saga(
            &mut self.payment,
            "SELECT saga_id, status, amount_cents, refunded_cents, currency FROM payments",
            slice,
            "",
        )
        .await
        .map_err(read_error(Database::Payment))?;
        let ledger = read_by_saga(
            &mut self.payment,
            "SELECT saga_id,
                count(*) FILTER (WHERE operation = 'charge' AND outcome = 'approved') AS charges,
                coalesce(sum(amount_cents) FILTER (WHERE operation = 'charge' AND outcome = 'approved'), 0)::int8
                    AS charged_cents,
                count(*) FILTER (WHERE operation = 'refund' AND outcome = 'approved') AS refunds,
                coalesce(sum(amount_cents) FILTER (WHERE operation = 'refund' AND outcome = 'approved'), 0)::int8
                    AS refunded_cents
             FROM provider_ledger",
            slice,
            "GROUP BY saga_id",
        )
        .await
        .map_err(read_error(Database::Payment))?;
        Ok(Facts {
            now: self.now,
            sagas,
            with_outbox,
            created_since: HashSet::new(),
            products: BTreeMap::new(),
            reservations,
            payments,
            ledger,
            archived_below: self.archived_below,
            reservations_kept_from: self.reservations_kept_from,
            payments_kept_from: self.payments_kept_from,
        })
    }

    /// Every product, and what active reservations hold of each, summed by
    /// the server: the memory of a catalogue, whatever the history.
    pub async fn stock(
        &mut self,
    ) -> Result<(BTreeMap<String, Product>, BTreeMap<String, i64>), AuditError> {
        async {
            let products = sqlx::query_as::<_, (String, i32, i32)>(
                "SELECT sku, on_hand, available FROM products",
            )
            .fetch_all(&mut *self.inventory)
            .await?
            .into_iter()
            .map(|(sku, on_hand, available)| {
                let product = Product {
                    on_hand: on_hand.into(),
                    available: available.into(),
                };
                (sku, product)
            })
            .collect();
            let held = sqlx::query_as::<_, (String, i64)>(
                "SELECT l.sku, sum(l.quantity)::int8 FROM reservation_lines l
                 JOIN reservations r USING (saga_id) WHERE r.status = 'active' GROUP BY l.sku",
            )
            .fetch_all(&mut *self.inventory)
            .await?
            .into_iter()
            .collect();
            Ok((products, held))
        }
        .await
        .map_err(read_error(Database::Inventory))
    }

    /// Idempotency keys that belong to more than one saga, with their sagas.
    pub async fn shared_keys(&mut self) -> Result<Vec<(String, Vec<Uuid>)>, AuditError> {
        sqlx::query_as(
            "SELECT idempotency_key, array_agg(id ORDER BY id) FROM sagas
             WHERE idempotency_key IS NOT NULL
             GROUP BY idempotency_key HAVING count(*) > 1 ORDER BY 1",
        )
        .fetch_all(&mut *self.orchestrator)
        .await
        .map_err(read_error(Database::Orchestrator))
    }
}

fn bind<'q, O>(
    query: sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments>,
    slice: &'q Slice,
) -> sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query.bind(slice.after).bind(slice.through).bind(&slice.ids)
}

/// How far retention has gone (`column` of `retention_horizon`), on a
/// schema that keeps it.
async fn read_horizon(
    conn: &mut PgConnection,
    column: &'static str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let kept: bool = sqlx::query_scalar("SELECT to_regclass('retention_horizon') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !kept {
        return Ok(None);
    }
    sqlx::query_scalar(&format!("SELECT {column} FROM retention_horizon"))
        .fetch_optional(&mut *conn)
        .await
}

/// Which sagas [`read_sagas`] reads.
enum Which<'a> {
    /// Up to this many above this id, in id order.
    After(Uuid, i64),
    Ids(&'a [Uuid]),
}

async fn read_sagas(conn: &mut PgConnection, which: Which<'_>) -> Result<Vec<Saga>, sqlx::Error> {
    let condition = match which {
        Which::After(..) => "id > $1 ORDER BY id LIMIT $2",
        Which::Ids(_) => "id = ANY($1) ORDER BY id",
    };
    // Only the parts of the state the checks need leave the server.
    let sql = format!(
        "SELECT id, status, idempotency_key, deadline_at,
                state->'request'->'items' AS items, state->'reserved' AS reserved,
                state->'tax'->'tax_cents' AS tax_cents
         FROM sagas WHERE {condition}"
    );
    let query = sqlx::query_as(&sql);
    let query = match which {
        Which::After(after, limit) => query.bind(after).bind(limit),
        Which::Ids(ids) => query.bind(ids),
    };
    let rows: Vec<SagaRow> = query.fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|row| Saga {
            id: row.id,
            status: SagaStatus::parse(&row.status)
                .ok_or_else(|| format!("unknown status `{}`", row.status)),
            state: saga_state(row.items, row.reserved, row.tax_cents),
            idempotency_key: row.idempotency_key,
            deadline_at: row.deadline_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct SagaRow {
    id: Uuid,
    status: String,
    idempotency_key: Option<String>,
    deadline_at: Option<DateTime<Utc>>,
    items: Option<serde_json::Value>,
    reserved: Option<serde_json::Value>,
    tax_cents: Option<serde_json::Value>,
}

async fn read_reservations(
    conn: &mut PgConnection,
    slice: &Slice,
) -> Result<HashMap<Uuid, Reservation>, sqlx::Error> {
    let sql = format!(
        "SELECT saga_id, status FROM reservations WHERE {}",
        Slice::condition("saga_id")
    );
    let mut reservations: HashMap<Uuid, Reservation> = sqlx::query_as::<_, (Uuid, String)>(&sql)
        .bind(slice.after)
        .bind(slice.through)
        .bind(&slice.ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(saga_id, status)| {
            let reservation = Reservation {
                active: status == "active",
                lines: Quantities::new(),
            };
            (saga_id, reservation)
        })
        .collect();
    // Summed per SKU by the server: fewer rows, and it is the sum that counts.
    let sql = format!(
        "SELECT saga_id, sku, sum(quantity)::int8 FROM reservation_lines WHERE {}
         GROUP BY saga_id, sku",
        Slice::condition("saga_id")
    );
    let lines = sqlx::query_as::<_, (Uuid, String, i64)>(&sql)
        .bind(slice.after)
        .bind(slice.through)
        .bind(&slice.ids)
        .fetch_all(&mut *conn)
        .await?;
    for (saga_id, sku, quantity) in lines {
        // Lines reference their reservation (a foreign key), so it is there.
        if let Some(reservation) = reservations.get_mut(&saga_id) {
            reservation.lines.insert(sku, quantity);
        }
    }
    Ok(reservations)
}

/// One `T` per saga: the query's `saga_id` column is the key, the columns
/// named like `T`'s fields its value (a saga has one row in each table read
/// this way).
async fn read_by_saga<T>(
    conn: &mut PgConnection,
    select: &'static str,
    slice: &Slice,
    group: &'static str,
) -> Result<HashMap<Uuid, T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, PgRow>,
{
    let sql = format!("{select} WHERE {} {group}", Slice::condition("saga_id"));
    sqlx::query(&sql)
        .bind(slice.after)
        .bind(slice.through)
        .bind(&slice.ids)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("saga_id")?, T::from_row(row)?)))
        .collect()
}

/// Which of `ids` the orchestrator knows now (created after its snapshot).
pub async fn known_now(sources: &Sources, ids: &[Uuid]) -> Result<HashSet<Uuid>, AuditError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    async {
        let (mut tx, _) = snapshot(&sources.orchestrator).await?;
        let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM sagas WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
        Ok(found.into_iter().collect())
    }
    .await
    .map_err(read_error(Database::Orchestrator))
}

/// The records in `facts` whose saga the slice's sagas do not include.
pub fn unknown_ids(facts: &Facts) -> Vec<Uuid> {
    let known: HashSet<Uuid> = facts.sagas.iter().map(|s| s.id).collect();
    let mut unknown: Vec<Uuid> = facts
        .reservations
        .iter()
        .filter(|(_, r)| !r.is_tombstone())
        .map(|(id, _)| id)
        .chain(
            facts
                .payments
                .iter()
                .filter(|(_, p)| !p.is_tombstone())
                .map(|(id, _)| id),
        )
        .chain(
            facts
                .ledger
                .iter()
                .filter(|(_, l)| !l.moved_nothing())
                .map(|(id, _)| id),
        )
        .filter(|id| !known.contains(id) && !facts.may_be_archived(id))
        .copied()
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}
