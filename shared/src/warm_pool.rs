//! Connections the hot paths hand to each other without the pool's ping.
//!
//! sqlx pings every connection given back to its pool (a `Sync` round trip,
//! sqlx-core's `return_to_pool`), whatever it was just used for: on a
//! checkout's path that is one round trip to the server for each statement,
//! about as many as the statements themselves. A connection a hot path used
//! without error is instead put on a short stack here, and the next hot-path
//! user takes it from there, unpinged.
//!
//! The pool still owns every connection, so the connection budget is
//! unchanged. A connection goes back to it (pinged as before) once it has
//! sat unused on the stack for [`MAX_IDLE`], and after every
//! [`ROTATE_EVERY`] uses: under sustained load, a caller waiting on the pool
//! itself (the deadline timer, an operator's request) gets its turn there
//! within a few uses of the busy connections. A connection whose user failed
//! or was cancelled is dropped as before, and the pool's ping settles
//! whatever it was left in the middle of.

use std::ops::{Deref, DerefMut};
use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::Notify;

/// A connection unused this long goes back to the pool, for whoever else
/// needs one, and to be pinged before it is used again.
pub const MAX_IDLE: Duration = Duration::from_millis(250);

/// Uses after which a connection goes back through the pool's queue once.
pub const ROTATE_EVERY: u32 = 32;

#[derive(Debug, Clone)]
pub struct WarmPool {
    pool: PgPool,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Most recently returned last: the few connections a light load needs
    /// stay warm, and the others age out to the pool.
    stack: Mutex<Vec<Parked>>,
    /// A connection was parked: for a hot-path caller waiting on the pool.
    parked: Notify,
}

#[derive(Debug)]
struct Parked {
    conn: PoolConnection<Postgres>,
    /// Uses since it left the pool's queue.
    uses: u32,
    parked_at: Instant,
}

impl WarmPool {
    /// Needs a Tokio runtime: the stack's reaper runs on it.
    pub fn new(pool: PgPool) -> Self {
        let shared = Arc::<Shared>::default();
        tokio::spawn(Self::reap_until_dropped(Arc::downgrade(&shared)));
        WarmPool { pool, shared }
    }

    /// A warm connection if one is parked, else the pool's next one, or
    /// one parked while waiting for it, whichever comes first.
    pub async fn acquire(&self) -> Result<WarmConnection, sqlx::Error> {
        loop {
            let mut parked = pin!(self.shared.parked.notified());
            parked.as_mut().enable();
            if let Some(warm) = self.take_parked() {
                return Ok(warm);
            }
            tokio::select! {
                conn = self.pool.acquire() => return Ok(WarmConnection {
                    conn: Some(conn?),
                    uses: 1,
                    home: self.clone(),
                }),
                _ = parked => continue,
            }
        }
    }

    fn take_parked(&self) -> Option<WarmConnection> {
        let (stale, taken) = {
            let mut stack = self.shared.stack.lock().expect("warm pool lock");
            (stack.stale(Instant::now()), stack.pop())
        };
        // Back to the pool (its ping) outside the lock.
        drop(stale);
        taken.map(|p| WarmConnection {
            conn: Some(p.conn),
            uses: p.uses + 1,
            home: self.clone(),
        })
    }

    /// Gives back to the pool what sat on the stack too long, until the
    /// last handle of this pool is dropped.
    async fn reap_until_dropped(shared: Weak<Shared>) {
        loop {
            tokio::time::sleep(MAX_IDLE / 2).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let stale = shared
                .stack
                .lock()
                .expect("warm pool lock")
                .stale(Instant::now());
            drop(stale);
        }
    }
}

trait Stack {
    /// Takes off the stack what sat on it [`MAX_IDLE`] or longer.
    fn stale(&mut self, now: Instant) -> Vec<Parked>;
}

impl Stack for Vec<Parked> {
    fn stale(&mut self, now: Instant) -> Vec<Parked> {
        // The oldest are at the bottom.
        let fresh_from = self
            .iter()
            .position(|p| now.duration_since(p.parked_at) < MAX_IDLE)
            .unwrap_or(self.len());
        self.drain(..fresh_from).collect()
    }
}

/// A connection from a [`WarmPool`]. [`WarmConnection::release`] after a
/// use that went well parks it for the next user; dropped otherwise, it goes
/// back to the pool as any pooled connection does.
#[derive(Debug)]
pub struct WarmConnection {
    conn: Option<PoolConnection<Postgres>>,
    uses: u32,
    home: WarmPool,
}

impl WarmConnection {
    pub fn release(mut self) {
        let conn = self.conn.take().expect("a connection until released");
        if self.uses >= ROTATE_EVERY {
            // Through the pool's queue (and its ping): a waiter there gets it.
            drop(conn);
            return;
        }
        let shared = &self.home.shared;
        shared.stack.lock().expect("warm pool lock").push(Parked {
            conn,
            uses: self.uses,
            parked_at: Instant::now(),
        });
        shared.parked.notify_one();
    }
}

impl Deref for WarmConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a connection until released")
    }
}

impl DerefMut for WarmConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a connection until released")
    }
}
