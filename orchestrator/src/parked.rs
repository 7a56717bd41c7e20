//! The park timer: ends parks older than `PARKED_SAGA_TTL`. A parked saga
//! holds its stock (and its customer's checkout) until someone acts; this
//! is the someone when nobody did. The expiry is computed from rows, so any
//! instance ends any park and a restart loses none.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batch_timer;
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
    batch_timer::run_until_stopped(
        BATCH,
        &relay,
        &stop,
        "ending expired parks failed; retrying",
        || store.expire_parked(ttl, BATCH),
        || async move { period(ttl) },
    )
    .await;
    tracing::info!("park timer stopped");
}
