//! The notification of a finished saga carries the checkout's answer, so a
//! long-poll woken by it answers without reading the saga again.
//!
//! The payload is the checkout view as JSON; the statement that finishes
//! the saga adds `created_at` and `updated_at` from the row it writes. An
//! answer that would not fit pg_notify's 8000 bytes (a long rejection
//! detail) is sent as the bare saga id, and its waiters read the saga.

use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::{Store, FINAL_CHANNEL};
use crate::checkout_view::CheckoutView;
use crate::saga::Saga;

/// Room left for the two timestamps and their keys under pg_notify's
/// 8000-byte limit, with a margin.
const MAX_VIEW_BYTES: usize = 7_600;

/// The view of `saga` without its timestamps, or `None` when too large.
pub fn view_without_timestamps(saga: &Saga) -> Option<serde_json::Value> {
    let view = CheckoutView::of(saga, Default::default(), Default::default());
    let mut json = serde_json::to_value(view).expect("a view serializes");
    let fields = json.as_object_mut().expect("a view is an object");
    fields.remove("created_at");
    fields.remove("updated_at");
    (json.to_string().len() <= MAX_VIEW_BYTES).then_some(json)
}

/// What a notification on the final channel says.
#[derive(Debug, PartialEq)]
pub enum FinalNotice {
    /// The saga finished and this is its answer.
    Answer(CheckoutView),
    /// The saga finished; its answer did not fit.
    Finished(Uuid),
}

impl FinalNotice {
    pub fn parse(payload: &str) -> Option<FinalNotice> {
        if let Ok(id) = payload.parse::<Uuid>() {
            return Some(FinalNotice::Finished(id));
        }
        serde_json::from_str(payload).ok().map(FinalNotice::Answer)
    }

    pub fn saga_id(&self) -> Uuid {
        match self {
            FinalNotice::Answer(view) => view.checkout_id,
            FinalNotice::Finished(id) => *id,
        }
    }
}

/// What a subscription to the final channel heard.
pub enum Heard {
    Notice(FinalNotice),
    /// A payload no build writes; the raw text, for the log.
    Unreadable(String),
    /// The connection was lost and listens again: what was committed
    /// meanwhile woke nobody.
    Reconnected,
}

/// The final channel, listened to on a connection of its own.
pub struct FinalNotices {
    listener: PgListener,
}

impl Store {
    pub async fn listen_final(&self) -> Result<FinalNotices, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(FINAL_CHANNEL).await?;
        Ok(FinalNotices { listener })
    }
}

impl FinalNotices {
    /// The next notice; an error when the connection fails.
    pub async fn next(&mut self) -> Result<Heard, sqlx::Error> {
        // `recv` would reconnect silently, and what was committed meanwhile
        // would wake nobody: `None` is that reconnect, listening again.
        Ok(match self.listener.try_recv().await? {
            Some(notification) => match FinalNotice::parse(notification.payload()) {
                Some(notice) => Heard::Notice(notice),
                None => Heard::Unreadable(notification.payload().to_owned()),
            },
            None => Heard::Reconnected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_id_says_finished_without_an_answer() {
        let id = Uuid::now_v7();
        assert_eq!(
            FinalNotice::parse(&id.to_string()),
            Some(FinalNotice::Finished(id))
        );
        assert_eq!(FinalNotice::parse("not a notice"), None);
    }

    #[test]
    fn a_view_with_the_timestamps_postgres_adds_is_an_answer() {
        let id = Uuid::now_v7();
        let payload = serde_json::json!({
            "checkout_id": id,
            "status": "completed",
            "total_cents": 1250,
            "subtotal_cents": 1000,
            "tax_cents": 250,
            "currency": "EUR",
            // As to_jsonb(timestamptz) writes them, in the session's zone.
            "created_at": "2026-11-30T19:27:45.12345+01:00",
            "updated_at": "2026-11-30T18:27:45.2+00:00",
        })
        .to_string();
        let Some(FinalNotice::Answer(view)) = FinalNotice::parse(&payload) else {
            panic!("not an answer: {payload}");
        };
        assert_eq!(view.checkout_id, id);
        assert_eq!(view.total_cents, Some(1250));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["created_at"], "2026-11-30T18:27:45.123450Z");
        assert_eq!(json["updated_at"], "2026-11-30T18:27:45.200Z");
    }
}
