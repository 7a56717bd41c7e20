//! The sagas this instance wrote last, each with the version it wrote: a
//! reply to one of them is decided on what was written, without reading it
//! back. The conditional write still checks the version, so a saga that
//! another instance (or a support action elsewhere) advanced meanwhile
//! fails it and is read again: the cache saves a read, it never decides on
//! a stale saga.
//!
//! That holds as long as every write of a saga's state moves its version
//! on, as the transition statement does (a hand edit must too).
//!
//! Only committed writes are remembered, and an entry is taken out while a
//! transition uses it, so two replies of one saga at once do not both start
//! from it (the second reads the row).

use std::sync::Mutex;

use hashlink::LruCache;
use uuid::Uuid;

use crate::saga::Saga;

/// Sagas remembered per instance: a checkout's sagas are in flight for
/// milliseconds to seconds, so a few thousand cover every one in flight at
/// hundreds per second, at about a kilobyte each.
const CAPACITY: usize = 4096;

/// A saga as this instance committed it.
pub struct Cached {
    pub version: i64,
    pub saga: Saga,
}

pub struct SagaCache(Mutex<LruCache<Uuid, Cached>>);

impl Default for SagaCache {
    fn default() -> Self {
        SagaCache(Mutex::new(LruCache::new(CAPACITY)))
    }
}

impl SagaCache {
    /// Takes the saga out, for a transition to start from.
    pub fn take(&self, id: Uuid) -> Option<Cached> {
        self.lock().remove(&id)
    }

    /// Remembers a committed saga; a final one awaits no reply, so it goes.
    pub fn put(&self, version: i64, saga: Saga) {
        let mut cache = self.lock();
        if saga.status.is_final() {
            cache.remove(&saga.id);
        } else {
            cache.insert(saga.id, Cached { version, saga });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Uuid, Cached>> {
        // A panic while holding it left at worst one entry half-written,
        // which the version check refuses: keep using it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
