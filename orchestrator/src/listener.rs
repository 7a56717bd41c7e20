//! Turns PostgreSQL notifications of finished sagas into in-process
//! wake-ups of long-polling requests, whichever instance committed them.
//!
//! Each long-poll registers for its own saga: a finished saga wakes its own
//! waiters and nobody else's, and the number of waiters is bounded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use saga_shared::broker::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checkout_view::CheckoutView;
use crate::store::{FinalNotice, Heard, Store};

#[derive(Debug, thiserror::Error)]
#[error("{max} long-polls are waiting already")]
pub struct WaitersFull {
    pub max: usize,
}

/// The long-polls of one instance, by saga.
#[derive(Debug)]
pub struct Waiters {
    max: usize,
    registered: Mutex<Registered>,
    /// Waiters woken by a notification (their own saga's, or a re-check
    /// after the listener reconnected): what a finished saga costs.
    woken: AtomicU64,
    /// Long-polls that have read their saga and sleep until woken or their
    /// deadline (a registered one may still be reading).
    asleep: AtomicUsize,
    /// The instance is stopping: waiters answer now rather than hold the
    /// shutdown for the rest of their wait.
    closing: AtomicBool,
}

#[derive(Debug, Default)]
struct Registered {
    total: usize,
    by_saga: HashMap<Uuid, Slot>,
}

#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    waiters: usize,
}

/// What the waiters of one saga share: their wake-up and the answer the
/// notification of its finish carried.
#[derive(Debug, Default)]
struct Shared {
    notify: Notify,
    answer: Mutex<Option<CheckoutView>>,
}

/// One long-poll's registration; it leaves the registry when dropped.
#[derive(Debug)]
pub struct Waiter {
    waiters: Arc<Waiters>,
    saga_id: Uuid,
    shared: Arc<Shared>,
}

impl Waiter {
    /// Woken when the saga may have finished. Call `enable` on the future
    /// before reading the saga, so a finish in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.notify.notified()
    }

    /// The checkout as the notification of its finish told it, if one
    /// carrying it arrived: final, so it cannot have changed since.
    pub fn answer(&self) -> Option<CheckoutView> {
        self.shared
            .answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A long-poll asleep until it is woken or its deadline passes; awake
/// again when dropped.
pub struct Asleep<'a>(&'a Waiters);

impl Waiter {
    /// Marks this long-poll asleep (it has read its saga) for as long as
    /// the guard lives.
    pub fn sleeping(&self) -> Asleep<'_> {
        self.waiters.asleep.fetch_add(1, Ordering::SeqCst);
        Asleep(&self.waiters)
    }
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        self.0.asleep.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut registered = self.waiters.lock();
        registered.total -= 1;
        if let Some(slot) = registered.by_saga.get_mut(&self.saga_id) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                registered.by_saga.remove(&self.saga_id);
            }
        }
    }
}

impl Waiters {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Waiters {
            max,
            registered: Mutex::new(Registered::default()),
            woken: AtomicU64::new(0),
            asleep: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        // Nothing panics while holding it; a poisoned map is still whole.
        self.registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a long-poll on `saga_id`, unless the bound is reached.
    pub fn register(self: &Arc<Self>, saga_id: Uuid) -> Result<Waiter, WaitersFull> {
        let mut registered = self.lock();
        if registered.total >= self.max {
            return Err(WaitersFull { max: self.max });
        }
        registered.total += 1;
        let slot = registered.by_saga.entry(saga_id).or_insert_with(|| Slot {
            shared: Arc::default(),
            waiters: 0,
        });
        slot.waiters += 1;
        Ok(Waiter {
            waiters: self.clone(),
            saga_id,
            shared: slot.shared.clone(),
        })
    }

    /// Wakes the waiters of the saga the notice is about, if it has any
    /// here, leaving them its answer when the notice carries one.
    pub fn finished(&self, notice: FinalNotice) {
        let registered = self.lock();
        let Some(slot) = registered.by_saga.get(&notice.saga_id()) else {
            return;
        };
        if let FinalNotice::Answer(view) = notice {
            // Before the wake-up: a woken waiter looks for it at once.
            *slot
                .shared
                .answer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(view);
        }
        self.woken.fetch_add(slot.waiters as u64, Ordering::Relaxed);
        slot.shared.notify.notify_waiters();
    }

    /// Wakes every waiter: notifications may have been missed.
    pub fn recheck_all(&self) {
        let registered = self.lock();
        self.woken
            .fetch_add(registered.total as u64, Ordering::Relaxed);
        for slot in registered.by_saga.values() {
            slot.shared.notify.notify_waiters();
        }
    }

    /// Wakes every waiter for good: they answer with what they read.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.recheck_all();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Long-polls that have read their saga and sleep now.
    pub fn asleep(&self) -> usize {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Long-polls waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().total
    }

    /// Waiters woken so far by notifications.
    pub fn woken(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }
}

pub async fn run_listener_until_stopped(
    store: Store,
    waiters: Arc<Waiters>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::reconnecting();
    loop {
        let error = tokio::select! {
            Err(error) = forward_notifications(&store, &waiters) => error,
            _ = stop.cancelled() => break,
        };
        let wait = backoff.next_delay();
        tracing::warn!(%error, ?wait, "notification listener lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
    waiters.close();
}

/// Listens and forwards until the connection fails; it never ends otherwise.
#[tracing::instrument(skip_all)]
async fn forward_notifications(
    store: &Store,
    waiters: &Waiters,
) -> Result<Infallible, sqlx::Error> {
    let mut notices = store.listen_final().await?;
    // Anything committed while we were not listening.
    waiters.recheck_all();
    loop {
        match notices.next().await? {
            Heard::Notice(notice) => waiters.finished(notice),
            Heard::Unreadable(payload) => {
                tracing::warn!(payload, "unreadable notice of a finished saga")
            }
            Heard::Reconnected => {
                tracing::warn!("notification listener reconnected; every long-poll re-reads");
                waiters.recheck_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    use super::*;

    fn is_woken<F: Future>(future: std::pin::Pin<&mut F>) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        matches!(future.poll(&mut cx), Poll::Ready(_))
    }

    #[test]
    fn a_finished_saga_wakes_its_own_waiters_only() {
        let waiters = Waiters::new(8);
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let a = waiters.register(mine).unwrap();
        let b = waiters.register(other).unwrap();
        let mut woken_a = pin!(a.notified());
        let mut woken_b = pin!(b.notified());
        woken_a.as_mut().enable();
        woken_b.as_mut().enable();
        waiters.finished(FinalNotice::Finished(mine));
        assert!(is_woken(woken_a.as_mut()));
        assert_eq!(a.answer(), None);
        assert!(!is_woken(woken_b.as_mut()));
        assert_eq!(waiters.woken(), 1);
        waiters.recheck_all();
        assert!(is_woken(woken_b.as_mut()));
    }

    #[test]
    fn the_bound_counts_registrations_and_frees_them_on_drop() {
        let waiters = Waiters::new(2);
        let id = Uuid::now_v7();
        let first = waiters.register(id).unwrap();
        let _second = waiters.register(id).unwrap();
        assert_eq!(waiters.register(Uuid::now_v7()).unwrap_err().max, 2);
        drop(first);
        assert_eq!(waiters.waiting(), 1);
        assert!(waiters.register(Uuid::now_v7()).is_ok());
    }

    #[test]
    fn a_notice_with_an_answer_leaves_it_to_every_waiter_of_its_saga() {
        let waiters = Waiters::new(8);
        let id = Uuid::now_v7();
        let (a, b) = (waiters.register(id).unwrap(), waiters.register(id).unwrap());
        let mut woken = pin!(a.notified());
        woken.as_mut().enable();
        let view: CheckoutView = serde_json::from_value(serde_json::json!({
            "checkout_id": id,
            "status": "completed",
            "created_at": "2026-11-30T18:00:00Z",
            "updated_at": "2026-11-30T18:00:01Z",
        }))
        .unwrap();
        waiters.finished(FinalNotice::Answer(view));
        assert!(is_woken(woken.as_mut()));
        assert_eq!(a.answer().map(|v| v.checkout_id), Some(id));
        assert_eq!(
            b.answer().map(|v| v.status),
            Some(crate::saga::ClientStatus::Completed)
        );
        // Nobody waits for another saga: its notice is dropped.
        waiters.finished(FinalNotice::Finished(Uuid::now_v7()));
        assert_eq!(waiters.woken(), 2);
    }
}
