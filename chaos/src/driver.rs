//! Drives the planned checkouts as a storefront would: paced evenly over the
//! chaos, a bounded number in flight, alternating the two orchestrators,
//! each posted (retried with its own key until accepted or refused) and then
//! long-polled until final.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Posted};
use crate::workload::Planned;

/// How long one checkout is retried before it counts as refused: longer than
/// any restart of the chaos, so a refusal means the system did not come back.
pub const POST_BOUND: Duration = Duration::from_secs(60);
/// How long the driver waits for an accepted checkout to be final before
/// moving on (the drain waits for the rest).
const WAIT_BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Driven {
    pub planned: Planned,
    pub posted: Posted,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub started: AtomicUsize,
    pub accepted: AtomicUsize,
    pub refused: AtomicUsize,
    pub done: AtomicUsize,
}

impl Progress {
    pub fn line(&self, total: usize) -> String {
        let started = self.started.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        format!(
            "driven {done}/{total}: accepted {}, refused {}, in flight {}",
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            started - done
        )
    }
}

#[derive(Debug)]
pub struct Driving {
    pub driven: Vec<Driven>,
    /// Checkouts never started because the chaos ended first.
    pub not_started: usize,
}

/// Starts checkout `i` no earlier than `i × span / n` from now and with at
/// most `concurrency` in flight; stops starting new ones once `over` fires
/// (and stops waiting for outcomes then: the drain does that), but lets
/// every POST under way finish, so each checkout is known accepted or not.
pub async fn drive(
    api: Arc<Api>,
    plan: Vec<Planned>,
    concurrency: usize,
    span: Duration,
    over: CancellationToken,
    progress: Arc<Progress>,
) -> Driving {
    let total = plan.len();
    let interval = span / total as u32;
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut not_started = 0;
    for (i, planned) in plan.into_iter().enumerate() {
        let due = started + interval * i as u32;
        let permit = tokio::select! {
            biased;
            _ = over.cancelled() => None,
            permit = async {
                tokio::time::sleep_until(due).await;
                slots.clone().acquire_owned().await
            } => permit.ok(),
        };
        let Some(permit) = permit else {
            not_started = total - i;
            break;
        };
        progress.started.fetch_add(1, Ordering::Relaxed);
        let (api, over, progress) = (api.clone(), over.clone(), progress.clone());
        tasks.spawn(async move {
            let driven = drive_one(&api, planned, &over, &progress).await;
            progress.done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            driven
        });
    }
    let mut driven: Vec<Driven> = tasks.join_all().await;
    driven.sort_by_key(|d| d.planned.index);
    Driving {
        driven,
        not_started,
    }
}

async fn drive_one(
    api: &Api,
    planned: Planned,
    over: &CancellationToken,
    progress: &Progress,
) -> Driven {
    // Alternate the instances: even checkouts start on the first.
    let first = planned.index % 2;
    let posted = api.post_checkout(&planned, first, POST_BOUND).await;
    match &posted {
        Posted::Accepted { id, .. } => {
            progress.accepted.fetch_add(1, Ordering::Relaxed);
            // The outcome itself is read after the drain; waiting here is
            // what keeps the number in flight bounded, as with real clients.
            tokio::select! {
                _ = api.wait_final(*id, first, WAIT_BOUND) => {}
                _ = over.cancelled() => {}
            }
        }
        Posted::Refused { .. } | Posted::Invalid { .. } => {
            progress.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    Driven { planned, posted }
}
