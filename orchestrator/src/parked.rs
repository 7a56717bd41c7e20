//! The park timer: ends parks older than `PARKED_SAGA_TTL`. A parked saga
//! holds its stock (and its customer's checkout) until someone acts; this
//! is the someone when nobody did. The expiry is computed from rows, so any
//! instance ends any park and a restart loses none.

use std::sync::Arc;
use std::time::Duration;

use saga_shared::broker::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Parks ended per transaction.
const BATCH: i64 = 64;

/// How often to look: a quarter of the limit, between 100 ms and 30 s, so
/// a park ends at most that late.
fn period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

pub async fn run_park_expiry_until_stopped(
    store: Store,
    ttl: Duration,
    relay: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::holding();
    loop {
        let sleep_for = match store.expire_parked(ttl, BATCH).await {
            Ok(expired) => {
                backoff = Backoff::holding();
                if expired > 0 {
                    // The compensations just committed are due now.
                    relay.notify_one();
                }
                if expired as i64 == BATCH {
                    continue;
                }
                period(ttl)
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "ending expired parks failed; retrying");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = stop.cancelled() => break,
        }
    }
    tracing::info!("park timer stopped");
}
