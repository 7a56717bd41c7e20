//! One cancellation token for SIGTERM and ctrl-c.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or ctrl-c.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested: finishing in-flight work");
        trigger.cancel();
    });
    token
}

/// Runs `work` (which stops itself once `stop` is cancelled) and returns
/// when it is done, or `grace` after `stop`, whichever comes first; true
/// when it finished within the grace period.
pub async fn within_grace<F: std::future::Future>(
    work: F,
    stop: &CancellationToken,
    grace: std::time::Duration,
) -> bool {
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = work => true,
        _ = deadline => {
            tracing::warn!(?grace, "shutdown grace period over; exiting with work in flight (it will be redelivered)");
            false
        }
    }
}
