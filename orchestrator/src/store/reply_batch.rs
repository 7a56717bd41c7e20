//! Replies applied in batches: the replies that were ready together are
//! applied in one transaction with one commit, their sagas read in one
//! statement. Each transition is still the conditional write of its own,
//! so a reply applied alone and one applied in a batch write the same.

use std::collections::HashMap;

use saga_protocol::messages::Outcome;
use saga_protocol::Envelope;
use tracing::Instrument;
use uuid::Uuid;

use super::outbox::HandOff;
use super::{parse, transition_span, write_in, Store, StoreError};
use crate::saga::{self, Event, Saga, Transition};

/// A reply in a batch, with the span its handling hangs under.
pub struct BatchedReply<'a> {
    pub reply: &'a Envelope<Outcome>,
    pub span: tracing::Span,
}

/// A saga as the batch last saw or wrote it.
struct Current {
    version: i64,
    state: Result<Saga, String>,
}

impl Store {
    /// Applies `replies` in order in one transaction. `Err` when the batch
    /// as a whole failed and nothing was written (the caller applies them
    /// one at a time instead); otherwise each reply's own result: one whose
    /// saga is unknown or unreadable is refused alone while the others
    /// commit. Two replies of one saga apply one after the other, the
    /// second seeing what the first wrote.
    pub async fn apply_replies(
        &self,
        replies: &[BatchedReply<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut ids: Vec<Uuid> = replies.iter().map(|r| r.reply.saga_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // One connection for the whole batch: under load a pool's waits,
        // not round trips, are what a reply costs. The read locks nothing;
        // a saga advanced meanwhile fails its conditional write and is read
        // again.
        // Sagas this instance wrote last need no read (see `SagaCache`).
        let mut sagas: HashMap<Uuid, Current> = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.cache.take(id) {
                Some(hit) => {
                    sagas.insert(
                        id,
                        Current {
                            version: hit.version,
                            state: Ok(hit.saga),
                        },
                    );
                }
                None => missing.push(id),
            }
        }
        let mut tx = self.pool.begin().await?;
        if !missing.is_empty() {
            let rows: Vec<(Uuid, i64, serde_json::Value)> =
                sqlx::query_as("SELECT id, version, state FROM sagas WHERE id = ANY($1)")
                    .bind(&missing)
                    .fetch_all(&mut *tx)
                    .await?;
            sagas.extend(
                rows.into_iter()
                    .map(|(id, version, state)| (id, Current::read(id, version, state))),
            );
        }
        let mut results = Vec::with_capacity(replies.len());
        let mut written: Vec<(Saga, Transition, crate::metrics::Clocks)> = Vec::new();
        let mut handoff = HandOff::empty();
        for BatchedReply { reply, span } in replies {
            let apply_span = tracing::info_span!(
                parent: span,
                "apply_reply",
                saga_id = %reply.saga_id,
                step = %reply.step,
                attempt = reply.attempt,
            );
            let applied = async {
                loop {
                    let current = sagas
                        .get(&reply.saga_id)
                        .ok_or(StoreError::UnknownSaga(reply.saga_id))?;
                    let before = current.state.clone().map_err(|error| {
                        StoreError::Corrupt(reply.saga_id, serde::de::Error::custom(error))
                    })?;
                    let event = Event::Reply {
                        step: reply.step,
                        attempt: reply.attempt,
                        outcome: reply.payload.clone(),
                    };
                    let transition = saga::handle(&before, event, self.context());
                    let done = write_in(
                        &mut tx,
                        &before,
                        current.version,
                        &transition,
                        self.leasing(),
                    )
                    .instrument(transition_span(&before, &transition))
                    .await?;
                    if let Some((clocks, handed)) = done {
                        handoff.merge(handed);
                        sagas.insert(
                            reply.saga_id,
                            Current {
                                version: current.version + 1,
                                state: Ok(transition.saga.clone()),
                            },
                        );
                        written.push((before, transition, clocks));
                        return Ok(());
                    }
                    tracing::debug!("saga advanced concurrently; re-reading");
                    let row: Option<(i64, serde_json::Value)> =
                        sqlx::query_as("SELECT version, state FROM sagas WHERE id = $1")
                            .bind(reply.saga_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match row {
                        Some((version, state)) => sagas
                            .insert(reply.saga_id, Current::read(reply.saga_id, version, state)),
                        None => sagas.remove(&reply.saga_id),
                    };
                }
            }
            .instrument(apply_span)
            .await;
            match applied {
                // The transaction is broken: nothing of the batch stands.
                Err(StoreError::Database(error)) => return Err(error.into()),
                other => results.push(other),
            }
        }
        tx.commit().await?;
        self.hand_off(handoff);
        for current in sagas.into_values() {
            if let Ok(saga) = current.state {
                self.cache.put(current.version, saga);
            }
        }
        for (before, transition, clocks) in &written {
            crate::metrics::record(before, transition, *clocks, &self.policies);
        }
        Ok(results)
    }
}

impl Current {
    fn read(id: Uuid, version: i64, state: serde_json::Value) -> Self {
        Current {
            version,
            state: parse(id, state).map_err(|error| match error {
                StoreError::Corrupt(_, error) => error.to_string(),
                other => other.to_string(),
            }),
        }
    }
}
