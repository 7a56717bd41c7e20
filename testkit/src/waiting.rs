//! Waiting for a condition with a deadline, never a fixed sleep.

/// Waits for `check` to return `Some`, polling until `timeout`; panics with
/// `what` when the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// What `check` returned once it returned `Some`, polling until `timeout`;
/// `None` when the deadline passed first, for a caller that says more
/// about what it saw than [`eventually`] can.
pub async fn within<T, F, Fut>(timeout: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
