//! The `dead_letters` table: what the recorder keeps of each dead letter,
//! and what support lists.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Store, StoreError};

/// A dead letter to keep: every text printable, whatever the message held.
pub struct NewDeadLetter {
    pub saga_id: Option<Uuid>,
    pub reason: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub original_exchange: Option<String>,
    pub routing_key: Option<String>,
    pub body_bytes: i32,
    pub body_preview: String,
}

impl NewDeadLetter {
    /// What can always be stored: the reason and ids, without what the
    /// message carried.
    pub fn stripped(self, why: &str) -> NewDeadLetter {
        NewDeadLetter {
            reason: format!("{} (recorded without its details: {why})", self.reason),
            message_type: None,
            original_exchange: None,
            routing_key: None,
            body_preview: String::new(),
            ..self
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub saga_id: Option<Uuid>,
    pub reason: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub original_exchange: Option<String>,
    pub routing_key: Option<String>,
    pub body_bytes: i32,
    pub body_preview: String,
}

impl Store {
    /// Keeps a dead letter once: the same message dead-lettered again for
    /// the same reason (a redelivery to the recorder) is not a new one.
    pub async fn record_dead_letter(&self, letter: &NewDeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dead_letters (saga_id, reason, message_id, message_type,
                 original_exchange, routing_key, body_bytes, body_preview)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (message_id, reason) WHERE message_id IS NOT NULL DO NOTHING",
        )
        .bind(letter.saga_id)
        .bind(&letter.reason)
        .bind(&letter.message_id)
        .bind(&letter.message_type)
        .bind(&letter.original_exchange)
        .bind(&letter.routing_key)
        .bind(letter.body_bytes)
        .bind(&letter.body_preview)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Dead letters newest first, optionally of one saga, before `cursor`.
    pub async fn dead_letters(
        &self,
        saga_id: Option<Uuid>,
        limit: u32,
        cursor: Option<i64>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, saga_id, reason, message_id, message_type, original_exchange,
                routing_key, body_bytes, body_preview
         FROM dead_letters
         WHERE ($1::uuid IS NULL OR saga_id = $1) AND ($2::int8 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        )
        .bind(saga_id)
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
