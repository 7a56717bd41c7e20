//! The loop the row timers share (reply deadlines, park expiry): what is
//! due is worked through a batch at a time, the relay woken for what a
//! batch committed, the database waited for while it is away.

use std::future::Future;
use std::time::Duration;

use saga_shared::broker::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// Runs `batch` until `stop`: at once again after a full batch (`size`
/// rows, so more may be due), else after `idle`; `failed` is what the log
/// says when a batch fails.
pub(crate) async fn run_until_stopped<Batch, Idle>(
    size: i64,
    relay: &Notify,
    stop: &CancellationToken,
    failed: &str,
    mut batch: impl FnMut() -> Batch,
    mut idle: impl FnMut() -> Idle,
) where
    Batch: Future<Output = Result<usize, StoreError>>,
    Idle: Future<Output = Duration>,
{
    let mut backoff = Backoff::holding();
    loop {
        let sleep_for = match batch().await {
            Ok(done) => {
                backoff = Backoff::holding();
                if done > 0 {
                    // The retries or compensations just committed are due
                    // now (or after their backoff).
                    relay.notify_one();
                }
                if done as i64 == size {
                    continue;
                }
                idle().await
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, ?wait, "{failed}");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = stop.cancelled() => break,
        }
    }
}
