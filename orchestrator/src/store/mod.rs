//! The orchestrator's PostgreSQL store: sagas, their timeline and the
//! outbox. A transition and the commands it emits commit together.

pub mod clients;
pub mod dead_letters;
mod deadlines;
mod final_notice;
pub mod id_time;
pub mod outbox;
mod parked;
mod reply_batch;
pub mod retention;
mod saga_cache;
pub mod saga_tally;
mod support;
mod transition;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use saga_protocol::messages::Outcome;
use saga_protocol::Envelope;
use saga_shared::failure::Classify;
use saga_shared::traceparent;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::saga::{self, Action, Context, Event, Saga, StepPolicies, Transition, WrongState};
pub use final_notice::{FinalNotice, FinalNotices, Heard};
use outbox::{Hand, HandOff};
pub use reply_batch::BatchedReply;
use saga_cache::SagaCache;
pub use support::{
    BulkSelection, FailureGroup, SagaFilter, SagaPage, SagaSummary, TimelineEntry, MAX_BULK,
    MAX_PAGE,
};
pub use support::{MinuteOutcomes, StatusCounts, MAX_MINUTES};
use transition::TransitionRows;

/// Channel long-polls listen on: a saga reached a final status.
pub const FINAL_CHANNEL: &str = "saga_final";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored saga {0} does not parse: {1}")]
    Corrupt(Uuid, serde_json::Error),
    #[error("unknown saga {0}")]
    UnknownSaga(Uuid),
    #[error(transparent)]
    WrongState(#[from] WrongState),
}

impl Classify for StoreError {
    fn is_permanent(&self) -> bool {
        match self {
            StoreError::Database(error) => error.is_permanent(),
            // A reply for a saga no instance knows, a state this build
            // cannot read, an event the saga refuses: the same message
            // fails the same way every time.
            StoreError::Corrupt(..) | StoreError::UnknownSaga(_) | StoreError::WrongState(_) => {
                true
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            StoreError::Database(error) => error.describe(),
            other => other.to_string(),
        }
    }
}

/// A stored saga with its bookkeeping columns.
#[derive(Debug, Clone)]
pub struct SagaRecord {
    pub saga: Saga,
    /// The checkout client it was created for (none before clients).
    pub client: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub enum Created {
    New(SagaRecord),
    /// The same idempotency key and the same request: the earlier checkout.
    Existing(SagaRecord),
    /// The same idempotency key with another request.
    KeyReused,
    /// The client has as many checkouts in flight as it may.
    TooManyInFlight,
}

/// Who a checkout is created for: the client, and how many of its
/// checkouts may be in flight.
pub struct Owner<'a> {
    pub client: &'a str,
    pub max_in_flight: u32,
}

/// An idempotency key as stored: scoped by its client, so two clients may
/// use the same key, and the unique index every build relies on (v0.3.0's
/// `ON CONFLICT (idempotency_key)`) keeps them apart with no new
/// constraint. A client name has no `:`, so no two scoped keys collide.
fn scoped_key(client: &str, key: &str) -> String {
    format!("{client}:{key}")
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    policies: StepPolicies,
    /// This instance's relay, which publishes the commands of the
    /// transitions written here as soon as they commit. Without one, rows
    /// are written due at once and wait for a relay to claim them.
    lane: Option<Arc<dyn Hand>>,
    cache: Arc<SagaCache>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    state: serde_json::Value,
    /// Read where it is shown (support's views); absent elsewhere.
    #[sqlx(default)]
    client: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct KeyedRow {
    request_hash: String,
    #[sqlx(flatten)]
    row: Row,
}

impl Row {
    fn into_record(self) -> Result<SagaRecord, StoreError> {
        Ok(SagaRecord {
            saga: parse(self.id, self.state)?,
            client: self.client,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn parse(id: Uuid, state: serde_json::Value) -> Result<Saga, StoreError> {
    serde_json::from_value(state).map_err(|e| StoreError::Corrupt(id, e))
}

impl Store {
    pub fn new(pool: PgPool, policies: StepPolicies) -> Self {
        Store {
            pool,
            policies,
            lane: None,
            cache: Arc::default(),
        }
    }

    /// Hands the commands of every transition this store writes on the
    /// hot path (a checkout's start, a reply) to the relay behind `lane`.
    pub fn handing_to(mut self, lane: impl Hand + 'static) -> Self {
        self.lane = Some(Arc::new(lane));
        self
    }

    fn leasing(&self) -> bool {
        self.lane.is_some()
    }

    /// After the commit of what `handoff` came from.
    fn hand_off(&self, handoff: HandOff) {
        if let Some(lane) = &self.lane {
            lane.hand(handoff);
        }
    }

    /// Whether the database answers a trivial statement, for readiness.
    pub async fn answers(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Sagas by status, for the gauges ([`saga_tally`]).
    pub async fn count_sagas(
        &self,
        tally: &mut saga_tally::SagaTally,
    ) -> Result<Vec<(saga::SagaStatus, i64)>, StoreError> {
        Ok(tally.count(&self.pool).await?)
    }

    /// The engine's inputs for one transition, with a fresh jitter sample.
    fn context(&self) -> Context<'_> {
        Context {
            policies: &self.policies,
            jitter: rand::random::<f64>(),
        }
    }

    /// Creates a checkout's saga with its first command, or finds the one
    /// an earlier request with the same idempotency key created. One
    /// statement: saga, timeline and outbox rows commit together.
    #[tracing::instrument(skip_all, fields(saga_id))]
    pub async fn create(
        &self,
        request: saga::CheckoutRequest,
        owner: Owner<'_>,
        idempotency_key: Option<&str>,
        request_hash: &str,
    ) -> Result<Created, StoreError> {
        let bare_key = idempotency_key;
        let idempotency_key = idempotency_key.map(|key| scoped_key(owner.client, key));
        let id = Uuid::now_v7();
        tracing::Span::current().record("saga_id", tracing::field::display(id));
        let transition = saga::start(id, request, self.context());
        let started = transition.saga.clone();
        // With a key, a concurrent twin blocks on the unique index until we
        // commit, then finds our row: one key, one checkout.
        let (query, handoff) = TransitionRows::new(&transition, self.leasing())
            .bind(sqlx::query_as::<_, Row>(transition::INSERT));
        let row = query
            .bind(idempotency_key.as_deref())
            .bind(request_hash)
            .bind(traceparent::of(&tracing::Span::current()))
            .bind(owner.client)
            .bind(i64::from(owner.max_in_flight))
            .bind(bare_key)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            self.hand_off(handoff);
            self.cache.put(0, started);
            metrics::counter!(crate::metrics::SAGAS_STARTED).increment(1);
            return Ok(Created::New(row.into_record()?));
        }
        // Nothing written: the key was taken, or the client is at its
        // limit (then a replay of a key still finds its checkout).
        let Some(idempotency_key) = idempotency_key else {
            return Ok(Created::TooManyInFlight);
        };
        let existing: Option<KeyedRow> = sqlx::query_as(
            "SELECT request_hash, id, state, created_at, updated_at
             FROM sagas WHERE idempotency_key = $1 OR (idempotency_key = $2 AND client IS NULL)
             ORDER BY client NULLS LAST LIMIT 1",
        )
        .bind(idempotency_key)
        .bind(bare_key)
        .fetch_optional(&self.pool)
        .await?;
        // Sagas are never deleted: a key not found was never taken.
        let Some(KeyedRow {
            request_hash: hash,
            row,
        }) = existing
        else {
            return Ok(Created::TooManyInFlight);
        };
        Ok(if hash == request_hash {
            Created::Existing(row.into_record()?)
        } else {
            Created::KeyReused
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, state, client, created_at, updated_at FROM sagas WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Row::into_record).transpose()
    }

    /// The checkout if `client` may see it: its own, or one created before
    /// clients existed (by a v0.3.0 instance during an upgrade, say, which
    /// the client may poll here next). Another client's is not found.
    pub async fn get_for_client(
        &self,
        id: Uuid,
        client: &str,
    ) -> Result<Option<SagaRecord>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, state, created_at, updated_at FROM sagas
             WHERE id = $1 AND (client = $2 OR client IS NULL)",
        )
        .bind(id)
        .bind(client)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Row::into_record).transpose()
    }

    /// Applies a worker's reply.
    #[tracing::instrument(skip_all, fields(saga_id = %reply.saga_id, step = %reply.step, attempt = reply.attempt))]
    pub async fn apply_reply(&self, reply: &Envelope<Outcome>) -> Result<(), StoreError> {
        self.advance(reply.saga_id, Cause::Message, |saga, ctx| {
            let event = Event::Reply {
                step: reply.step,
                attempt: reply.attempt,
                outcome: reply.payload.clone(),
            };
            Ok(saga::handle(saga, event, ctx))
        })
        .await
    }

    /// A support action on one saga, by `actor`, for `reason`.
    #[tracing::instrument(skip_all, fields(saga_id = %id, action = action.as_str(), actor))]
    pub async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        tracing::Span::current().record("actor", actor);
        self.advance(id, Cause::Saga, |saga, ctx| {
            Ok(saga::act(saga, action, actor, reason, ctx)?)
        })
        .await?;
        metrics::counter!(crate::metrics::SUPPORT_ACTIONS, "action" => action.as_str())
            .increment(1);
        tracing::info!("support action applied");
        Ok(())
    }

    /// Reads the saga, runs the engine, and writes the new state, its
    /// timeline and its commands in one statement that succeeds only if
    /// nobody advanced the saga meanwhile (else re-read and decide again).
    async fn advance(
        &self,
        id: Uuid,
        cause: Cause,
        decide: impl Fn(&Saga, Context) -> Result<Transition, StoreError>,
    ) -> Result<(), StoreError> {
        // A reply starts from the saga as this instance last wrote it, if
        // it did; a transition no message caused needs the row's trace.
        let mut cached = match cause {
            Cause::Message => self.cache.take(id),
            Cause::Saga => None,
        };
        // One connection for the read and the write: under load a pool's
        // waits, not round trips, are what a transition costs.
        let mut conn = self.pool.acquire().await?;
        loop {
            let (version, saga, trace) = match cached.take() {
                Some(hit) => (hit.version, hit.saga, None),
                None => read_for_write(&mut conn, id, Lock::None).await?,
            };
            let transition = decide(&saga, self.context())?;
            let trace = match cause {
                Cause::Message => None,
                Cause::Saga => trace,
            };
            let next = transition.saga.clone();
            if let Some(handoff) = write(
                &mut conn,
                &self.policies,
                &saga,
                version,
                transition,
                trace.as_deref(),
                self.leasing(),
            )
            .await?
            {
                self.hand_off(handoff);
                self.cache.put(version + 1, next);
                return Ok(());
            }
            tracing::debug!("saga advanced concurrently; re-reading");
        }
    }

    /// Parks the saga whose command the broker kept refusing, in `conn`'s
    /// transaction (the relay's, which holds the outbox row and deletes it
    /// in the same commit). The saga row is locked first, so the version
    /// read is the version written. False when the refused attempt is no
    /// longer awaited: the row is stale and nothing changed.
    #[tracing::instrument(skip_all, fields(saga_id = %id))]
    pub async fn park_unpublishable(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        event: Event,
    ) -> Result<bool, StoreError> {
        let (version, saga, trace) = read_for_write(conn, id, Lock::ForUpdate).await?;
        let transition = saga::handle(&saga, event, self.context());
        if transition.history.is_empty() {
            return Ok(false);
        }
        Ok(self
            .write_unleased(conn, &saga, version, transition, trace.as_deref())
            .await?
            .is_some())
    }

    /// Writes `transition` inside a transaction of the caller's (a timer's
    /// batch, the relay's): its commands are not leased, since nothing may
    /// be handed on before that transaction commits; the relay finds them.
    async fn write_unleased(
        &self,
        conn: &mut PgConnection,
        before: &Saga,
        version: i64,
        transition: Transition,
        trace: Option<&str>,
    ) -> Result<Option<HandOff>, sqlx::Error> {
        write(
            conn,
            &self.policies,
            before,
            version,
            transition,
            trace,
            false,
        )
        .await
    }

    pub fn policies(&self) -> &StepPolicies {
        &self.policies
    }
}

/// What set a transition off, which decides where its span hangs in the
/// checkout's trace.
#[derive(Clone, Copy)]
enum Cause {
    /// A worker's reply: the transition is a child of its handling, which
    /// continues the trace the reply carried.
    Message,
    /// Nothing the checkout sent (a missed deadline, a support action): the
    /// transition continues the trace the saga was created in.
    Saga,
}

/// Whether a read for a write holds the saga's row until commit.
enum Lock {
    /// The write is conditional on the version read instead.
    None,
    ForUpdate,
}

/// The saga `id` as a write needs it: the version the write is
/// conditional on, its state, and the trace it was created in.
async fn read_for_write(
    conn: &mut PgConnection,
    id: Uuid,
    lock: Lock,
) -> Result<(i64, Saga, Option<String>), StoreError> {
    let query = match lock {
        Lock::None => "SELECT version, state, traceparent FROM sagas WHERE id = $1",
        Lock::ForUpdate => "SELECT version, state, traceparent FROM sagas WHERE id = $1 FOR UPDATE",
    };
    let current: Option<(i64, serde_json::Value, Option<String>)> = sqlx::query_as(query)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let (version, state, trace) = current.ok_or(StoreError::UnknownSaga(id))?;
    Ok((version, parse(id, state)?, trace))
}

/// Writes `transition` if the saga is still at `version` (`lease`: its
/// commands leased, see [`outbox::LEASE`]); `None` when another writer got
/// there first, else what to hand the relay once committed. Its span is a child of the current one,
/// or, given the saga's `trace` (a transition no message caused), of the
/// span that created the saga, linked to the current one (the support
/// request that acted, say).
async fn write(
    conn: &mut PgConnection,
    policies: &StepPolicies,
    before: &Saga,
    version: i64,
    transition: Transition,
    trace: Option<&str>,
    lease: bool,
) -> Result<Option<HandOff>, sqlx::Error> {
    let span = transition_span(before, &transition);
    if trace.is_some() {
        traceparent::continue_from(&span, trace);
        traceparent::link(&span, &tracing::Span::current());
    }
    let written = write_in(conn, before, version, &transition, lease)
        .instrument(span)
        .await?;
    // Counted when written, not when committed: inside the deadline
    // timer's transaction a failed commit overcounts, which a counter of
    // events may.
    Ok(written.map(|(clocks, handoff)| {
        crate::metrics::record(before, &transition, clocks, policies);
        handoff
    }))
}

fn transition_span(before: &Saga, transition: &Transition) -> tracing::Span {
    tracing::info_span!(
        "transition",
        saga_id = %before.id,
        from = before.status.as_str(),
        to = transition.saga.status.as_str(),
        step = transition.saga.current.map(|s| s.routing_key()),
        attempt = transition.saga.attempt,
        written = tracing::field::Empty,
    )
}

/// The conditional write itself: the clocks for the metrics and what to
/// hand the relay once committed, when written; `None` when the saga is no
/// longer at `version`. Recording the metrics is
/// the caller's: a batch records them only once it has committed.
async fn write_in(
    conn: &mut PgConnection,
    before: &Saga,
    version: i64,
    transition: &Transition,
    lease: bool,
) -> Result<Option<(crate::metrics::Clocks, HandOff)>, sqlx::Error> {
    let finished = transition.saga.status.is_final() && !before.status.is_final();
    let answer = finished
        .then(|| final_notice::view_without_timestamps(&transition.saga))
        .flatten();
    let (query, handoff) = TransitionRows::new(transition, lease)
        .bind(sqlx::query_as::<_, (f64, Option<f64>)>(transition::UPDATE));
    let written = query
        .bind(version)
        .bind(finished)
        .bind(FINAL_CHANNEL)
        .bind(answer)
        .fetch_optional(conn)
        .await?;
    tracing::Span::current().record("written", written.is_some());
    Ok(written.map(|(since_created, deadline_in_ms)| {
        let clocks = crate::metrics::Clocks {
            since_created,
            deadline_in_ms,
        };
        (clocks, handoff)
    }))
}

impl From<&SagaRecord> for crate::checkout_view::CheckoutView {
    fn from(record: &SagaRecord) -> Self {
        crate::checkout_view::CheckoutView::of(&record.saga, record.created_at, record.updated_at)
    }
}
