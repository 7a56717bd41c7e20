//! The deadline timer: fires each saga's overdue reply deadline. The
//! deadlines are rows (`sagas.deadline_at`), so any instance fires any of
//! them and a restart loses none; this loop only decides when to look.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batch_timer;
use crate::store::Store;

/// Deadlines fired per transaction.
const BATCH: i64 = 64;
/// The longest sleep: a deadline set by another instance (or shorter than
/// the one slept towards) is noticed at most this late.
const MAX_SLEEP: Duration = Duration::from_millis(500);

pub async fn run_deadlines_until_stopped(
    store: Store,
    relay: Arc<Notify>,
    stop: CancellationToken,
) {
    let store = &store;
    batch_timer::run_until_stopped(
        BATCH,
        &relay,
        &stop,
        "firing deadlines failed; retrying",
        || store.fire_deadlines(BATCH),
        || async move {
            match store.next_deadline().await {
                Ok(next) => next.unwrap_or(MAX_SLEEP).min(MAX_SLEEP),
                Err(_) => MAX_SLEEP,
            }
        },
    )
    .await;
    tracing::info!("deadline timer stopped");
}
