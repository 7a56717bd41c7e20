//! Turns PostgreSQL notifications of finished sagas into in-process
//! wake-ups of long-polling requests, whichever instance committed them.

use std::convert::Infallible;
use std::time::Duration;

use saga_shared::broker::Backoff;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::FINAL_CHANNEL;

/// Sent to long-polls when notifications may have been missed (the
/// listener reconnected): every waiter re-reads its saga.
pub const RECHECK_ALL: Uuid = Uuid::nil();

pub async fn run_listener_until_stopped(
    pool: PgPool,
    finished: broadcast::Sender<Uuid>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let error = tokio::select! {
            Err(error) = forward_notifications(&pool, &finished) => error,
            _ = stop.cancelled() => break,
        };
        let wait = backoff.next_delay();
        tracing::warn!(%error, ?wait, "notification listener lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// Listens and forwards until the connection fails; it never ends otherwise.
async fn forward_notifications(
    pool: &PgPool,
    finished: &broadcast::Sender<Uuid>,
) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(FINAL_CHANNEL).await?;
    // Anything committed while we were not listening.
    let _ = finished.send(RECHECK_ALL);
    loop {
        let notification = listener.recv().await?;
        if let Ok(id) = notification.payload().parse::<Uuid>() {
            let _ = finished.send(id);
        }
    }
}
