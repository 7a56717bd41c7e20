//! A transition as one SQL statement: the saga's new state, its timeline
//! entries and its outbox rows commit together, or not at all.

use saga_protocol::Envelope;
use saga_shared::traceparent;
use uuid::Uuid;

use super::outbox::{HandOff, Handed, StoredCommand, LEASE};
use crate::saga::{Deadline, Effect, Saga, Transition};

/// The timeline and outbox inserts of a transition, as CTEs after a `saga`
/// CTE that returns the saga's id: when it returns no row (a lost race, a
/// reused idempotency key) nothing is written. Parameters $9..$22.
macro_rules! transition_writes {
    () => {
        "history AS (
             INSERT INTO saga_events (saga_id, step, attempt, event, detail, actor, reason)
             SELECT saga.id, h.* FROM saga,
                    unnest($9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::text[]) AS h
         ), outbox AS (
             INSERT INTO outbox (message_id, saga_id, routing_key, message_type, body, traceparent,
                                 not_before, deadline_ms, attempt)
             SELECT o.m, saga.id, o.k, o.t, o.b, o.tp, now() + o.d * interval '1 millisecond', o.dl, o.a
             FROM saga, unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[], $20::int8[],
                               $21::int8[], $22::int4[])
                  AS o(m, k, t, b, tp, d, dl, a)
         )"
    };
}

/// Creates a saga: $23 idempotency key (scoped by the client), $24 request
/// hash, $25 the creating span's traceparent, $26 the client, $27 its
/// limit of checkouts in flight, $28 the key unscoped (a checkout a release
/// before clients made with it is that checkout: nothing is written, and the
/// caller finds it). Over the limit nothing is written: the
/// count reads only `sagas_client_in_flight` (sagas not final) and stops
/// at the limit. Two checkouts of a client racing may both pass at the
/// limit's edge: the limit is a guard against a runaway client, not a quota
/// to the unit.
pub const INSERT: &str = concat!(
    "WITH saga AS (
         INSERT INTO sagas (id, status, current_step, attempt, state, last_error, deadline_at,
                            idempotency_key, request_hash, traceparent, client)
         SELECT $1, $2, $3, $4, $5, $6,
                CASE WHEN $8::bool THEN NULL ELSE now() + $7::int8 * interval '1 millisecond' END,
                $23, $24, $25, $26
         WHERE (SELECT count(*) FROM (
                    SELECT 1 FROM sagas WHERE client = $26
                        AND status IN ('running', 'compensating', 'suspended') LIMIT $27
                ) in_flight) < $27
           -- The same key, unscoped, from a release before clients (a
           -- retry that first reached a v0.3.0 instance): that checkout.
           AND NOT EXISTS (SELECT 1 FROM sagas WHERE idempotency_key = $28 AND client IS NULL)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id, state, client, created_at, updated_at
     ), ",
    transition_writes!(),
    " SELECT * FROM saga"
);

/// Advances a saga if it is still at version $23; $24 says whether it just
/// became final, which notifies channel $25 on commit (long-polls on every
/// instance wake up) with the checkout's answer: $26, the view without its
/// timestamps, which the row gives (or the bare id when $26 is NULL, an
/// answer too large for a notification). It returns the saga's age and
/// what was left of the deadline it awaited (for the latency metrics):
/// `was` is the row as it was, since a statement does not see its own
/// CTE's update.
pub const UPDATE: &str = concat!(
    "WITH saga AS (
         UPDATE sagas SET status = $2, current_step = $3, attempt = $4, state = $5, last_error = $6,
                          deadline_at = CASE WHEN $7::int8 IS NOT NULL
                                             THEN now() + $7::int8 * interval '1 millisecond'
                                             WHEN $8::bool THEN deadline_at END,
                          -- When it parked, for PARKED_SAGA_TTL: set as it
                          -- becomes suspended, kept while it stays so
                          -- (a late reply), cleared with its extension as it
                          -- leaves. The right-hand side reads the row as it was.
                          parked_at = CASE WHEN $2 <> 'suspended' THEN NULL
                                           WHEN status = 'suspended' THEN parked_at
                                           ELSE now() END,
                          park_extension_ms = CASE WHEN $2 = 'suspended' AND status = 'suspended'
                                                   THEN park_extension_ms END,
                          version = version + 1, updated_at = now()
         WHERE id = $1 AND version = $23
         RETURNING id, created_at, updated_at
     ), ",
    transition_writes!(),
    " SELECT EXTRACT(EPOCH FROM now() - saga.created_at)::float8,
             (EXTRACT(EPOCH FROM was.deadline_at - clock_timestamp()) * 1000)::float8,
             CASE WHEN $24 THEN pg_notify($25, coalesce(
                 ($26::jsonb || jsonb_build_object('created_at', saga.created_at,
                                                   'updated_at', saga.updated_at))::text,
                 $1::text)) END
      FROM saga JOIN sagas was ON was.id = saga.id"
);

type PgArgs = sqlx::postgres::PgArguments;
type Query<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, PgArgs>;

/// A transition as the parameters $1..$22 of [`INSERT`] or [`UPDATE`].
pub struct TransitionRows {
    saga: Saga,
    deadline_ms: Option<i64>,
    keep_deadline: bool,
    h_step: Vec<Option<String>>,
    h_attempt: Vec<i32>,
    h_event: Vec<String>,
    h_detail: Vec<Option<String>>,
    h_actor: Vec<Option<String>>,
    h_reason: Vec<Option<String>>,
    o_id: Vec<Uuid>,
    o_key: Vec<String>,
    o_type: Vec<String>,
    o_body: Vec<String>,
    o_trace: Vec<String>,
    o_delay_ms: Vec<i64>,
    o_deadline_ms: Vec<i64>,
    o_attempt: Vec<i32>,
    handoff: HandOff,
}

impl TransitionRows {
    /// `lease`: a command due now is written leased and handed to this
    /// instance's relay once committed ([`super::outbox::LEASE`]).
    pub fn new(t: &Transition, lease: bool) -> Self {
        let (deadline_ms, keep_deadline) = match t.deadline() {
            Deadline::In(after) => (Some(after.as_millis() as i64), false),
            Deadline::Unchanged => (None, true),
            Deadline::None => (None, false),
        };
        let mut rows = TransitionRows {
            saga: t.saga.clone(),
            deadline_ms,
            keep_deadline,
            h_step: vec![],
            h_attempt: vec![],
            h_event: vec![],
            h_detail: vec![],
            h_actor: vec![],
            h_reason: vec![],
            o_id: vec![],
            o_key: vec![],
            o_type: vec![],
            o_body: vec![],
            o_trace: vec![],
            o_delay_ms: vec![],
            o_deadline_ms: vec![],
            o_attempt: vec![],
            handoff: HandOff::empty(),
        };
        for entry in &t.history {
            rows.h_step
                .push(entry.step.map(|s| s.routing_key().to_owned()));
            rows.h_attempt.push(entry.attempt as i32);
            rows.h_event.push(entry.event.clone());
            rows.h_detail.push(entry.detail.clone());
            rows.h_actor.push(entry.actor.clone());
            rows.h_reason.push(entry.reason.clone());
        }
        for Effect::Send {
            command,
            attempt,
            delay,
            deadline,
        } in &t.effects
        {
            let envelope = Envelope::command(t.saga.id, *attempt, command.clone());
            let body = String::from_utf8(envelope.encode()).expect("JSON is UTF-8");
            // The writing span's context: the relay, publishing later in
            // another task, makes its publish span a child of it.
            let trace = traceparent::for_message(t.saga.id);
            let delay = if lease && delay.is_zero() {
                rows.handoff.commands.push(Handed {
                    command: StoredCommand {
                        message_id: envelope.message_id,
                        saga_id: t.saga.id,
                        routing_key: envelope.step.routing_key().to_owned(),
                        message_type: envelope.message_type.clone(),
                        body: body.clone(),
                        traceparent: trace.clone(),
                    },
                    attempt: *attempt,
                });
                LEASE
            } else {
                if lease {
                    let due = rows.handoff.due_in.map_or(*delay, |due| due.min(*delay));
                    rows.handoff.due_in = Some(due);
                }
                *delay
            };
            rows.o_id.push(envelope.message_id);
            rows.o_key.push(envelope.step.routing_key().to_owned());
            rows.o_type.push(envelope.message_type.clone());
            rows.o_body.push(body);
            rows.o_trace.push(trace);
            rows.o_delay_ms.push(delay.as_millis() as i64);
            rows.o_deadline_ms.push(deadline.as_millis() as i64);
            rows.o_attempt.push(*attempt as i32);
        }
        rows
    }

    /// Binds $1..$22; the caller binds the statement's own parameters
    /// after, and hands the returned [`HandOff`] to the relay once the
    /// write has committed.
    pub fn bind<'q, O>(self, query: Query<'q, O>) -> (Query<'q, O>, HandOff) {
        let saga = &self.saga;
        let query = query
            .bind(saga.id)
            .bind(saga.status.as_str())
            .bind(saga.current.map(|s| s.routing_key()))
            .bind(saga.attempt as i32)
            .bind(serde_json::to_value(saga).expect("saga serializes"))
            .bind(saga.last_error.clone())
            .bind(self.deadline_ms)
            .bind(self.keep_deadline)
            .bind(self.h_step)
            .bind(self.h_attempt)
            .bind(self.h_event)
            .bind(self.h_detail)
            .bind(self.h_actor)
            .bind(self.h_reason)
            .bind(self.o_id)
            .bind(self.o_key)
            .bind(self.o_type)
            .bind(self.o_body)
            .bind(self.o_trace)
            .bind(self.o_delay_ms)
            .bind(self.o_deadline_ms)
            .bind(self.o_attempt);
        (query, self.handoff)
    }
}
