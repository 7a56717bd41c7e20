//! What the broker says of this client's publishing: a resource alarm
//! that blocks it (`connection.blocked`), and a run of refused publishes
//! (a cluster whose queues lost their majority).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use lapin::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::BrokerError;

/// The log target these lines had before the broker became a module of
/// several files, so that log filters and searches keep finding them.
const LOG_TARGET: &str = "saga_shared::broker";

/// RabbitMQ blocks publishing connections while a resource alarm (memory
/// or disk watermark) is raised; it says so with `connection.blocked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The broker's words, e.g. `low on memory`.
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// One client's alarms, across its connections.
pub(super) struct Alarms {
    /// The connection name, for the log.
    name: String,
    /// Whether the broker blocks the current connection's publishes.
    blocked: Arc<watch::Sender<Option<Blocked>>>,
    /// Since when every publish has been nacked or left unconfirmed (a
    /// cluster whose queues lack a majority of nodes).
    refusing: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Alarms {
    pub(super) fn new(name: String) -> Alarms {
        Alarms {
            name,
            blocked: Arc::new(watch::Sender::new(None)),
            refusing: std::sync::Mutex::new(None),
        }
    }

    /// Follows a new connection's alarm notices until `watching` is
    /// cancelled or the connection ends.
    pub(super) fn watch(&self, connection: &Connection, watching: CancellationToken) {
        // A new connection starts unblocked: the broker tells it anew if
        // its alarm still stands.
        self.blocked.send_replace(None);
        tokio::spawn(watch_alarms(
            connection.events_listener(),
            self.name.clone(),
            self.blocked.clone(),
            watching,
        ));
    }

    pub(super) fn blocked(&self) -> Option<Blocked> {
        self.blocked.borrow().clone()
    }

    pub(super) async fn unblocked(&self) {
        let mut state = self.blocked.subscribe();
        let _ = state.wait_for(Option::is_none).await;
    }

    pub(super) fn refusing_since(&self) -> Option<DateTime<Utc>> {
        *self
            .refusing
            .lock()
            .expect("refusing lock is never poisoned")
    }

    /// Follows whether the broker refuses publishes; true when every one
    /// of `results` was refused.
    pub(super) fn note_outcomes(&self, results: &[Result<(), BrokerError>]) -> bool {
        let confirmed = results.iter().any(Result::is_ok);
        let refused = results.iter().any(|r| {
            matches!(
                r,
                Err(BrokerError::Nacked { .. } | BrokerError::Unconfirmed { .. })
            )
        });
        let mut refusing = self
            .refusing
            .lock()
            .expect("refusing lock is never poisoned");
        if confirmed {
            if let Some(since) = refusing.take() {
                let refused_ms = (Utc::now() - since).num_milliseconds();
                tracing::info!(target: LOG_TARGET, name = %self.name, refused_ms, "RabbitMQ confirms publishes again");
            }
        } else if refused && refusing.is_none() {
            tracing::warn!(target: LOG_TARGET, name = %self.name, "RabbitMQ refuses publishes (nacked or unconfirmed); a queue may have lost its majority");
            *refusing = Some(Utc::now());
        }
        !confirmed && refused
    }
}

/// Follows one connection's `connection.blocked` and `unblocked` notices
/// into `state`, and says each change once in the log (not once per
/// message held).
async fn watch_alarms(
    events: impl Stream<Item = lapin::Event>,
    name: String,
    state: Arc<watch::Sender<Option<Blocked>>>,
    stop: CancellationToken,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.cancelled() => break,
        };
        match event {
            Some(lapin::Event::ConnectionBlocked(reason)) => {
                let since = Utc::now();
                let newly = state.send_if_modified(|blocked| {
                    let newly = blocked.is_none();
                    if newly {
                        *blocked = Some(Blocked {
                            reason: reason.clone(),
                            since,
                        });
                    }
                    newly
                });
                if newly {
                    tracing::warn!(target: LOG_TARGET, %name, %reason, "RabbitMQ is blocking publishes (a resource alarm); messages wait until it clears");
                }
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                if let Some(was) = state.send_replace(None) {
                    let blocked_ms = (Utc::now() - was.since).num_milliseconds();
                    tracing::info!(target: LOG_TARGET, %name, blocked_ms, "RabbitMQ no longer blocks publishes");
                }
            }
            Some(_) => {}
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines, kept for a test to read.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_alarm_is_followed_and_logged_once_per_change() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let state = Arc::new(watch::Sender::new(None));
        let mut seen = state.subscribe();
        let (events, received) = futures::channel::mpsc::unbounded();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let watcher = tokio::spawn(watch_alarms(
                    received,
                    "orchestrator t.".into(),
                    state.clone(),
                    CancellationToken::new(),
                ));
                // The broker repeats itself: one change, one line.
                for _ in 0..3 {
                    events
                        .unbounded_send(lapin::Event::ConnectionBlocked("low on memory".into()))
                        .unwrap();
                }
                let blocked = seen.wait_for(Option::is_some).await.unwrap().clone();
                assert_eq!(blocked.unwrap().reason, "low on memory");
                events.unbounded_send(lapin::Event::Connected).unwrap();
                events
                    .unbounded_send(lapin::Event::ConnectionUnblocked)
                    .unwrap();
                events
                    .unbounded_send(lapin::Event::ConnectionUnblocked)
                    .unwrap();
                drop(events);
                watcher.await.unwrap();
            })
        });
        assert_eq!(*state.borrow(), None);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        assert_eq!(logged("RabbitMQ is blocking publishes"), 1, "{text}");
        assert_eq!(logged("reason=low on memory"), 1, "{text}");
        assert_eq!(logged("RabbitMQ no longer blocks publishes"), 1, "{text}");
        // The target the broker's lines had when it was one file.
        assert_eq!(logged(" saga_shared::broker: "), 2, "{text}");
    }
}
