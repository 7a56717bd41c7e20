//! The deadline timer: fires each saga's overdue reply deadline. The
//! deadlines are rows (`sagas.deadline_at`), so any instance fires any of
//! them and a restart loses none; this loop only decides when to look.

use std::sync::Arc;
use std::time::Duration;

use saga_shared::broker::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    let fresh = Backoff::holding;
    let mut backoff = fresh();
    loop {
        let sleep_for = match store.fire_deadlines(BATCH).await {
            Ok(fired) => {
                backoff = fresh();
                if fired > 0 {
                    // The retries just committed are due now (or after their backoff).
                    relay.notify_one();
                }
                if fired as i64 == BATCH {
                    continue;
                }
                match store.next_deadline().await {
                    Ok(next) => next.unwrap_or(MAX_SLEEP).min(MAX_SLEEP),
                    Err(_) => MAX_SLEEP,
                }
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "firing deadlines failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = stop.cancelled() => break,
        }
    }
    tracing::info!("deadline timer stopped");
}
