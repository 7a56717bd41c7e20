//! What an instance knows of the clients: their key digests and limits,
//! reloaded every second (a revoked key stops working within about a
//! second on every instance, at once on the one that revoked it), so a
//! checkout authenticates without a statement of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::rate::{Buckets, RateRefused};
use super::{digest, ClientLimits, KeyDigest};
use crate::store::clients::ClientTable;

/// How often an instance reloads the clients and beats its heartbeat.
const REFRESH: Duration = Duration::from_secs(1);

/// The client behind a request.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub limits: ClientLimits,
}

struct Known {
    name: String,
    digest: KeyDigest,
    limits: ClientLimits,
}

#[derive(Clone)]
pub struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    table: ClientTable,
    instance: Uuid,
    defaults: ClientLimits,
    known: RwLock<Vec<Known>>,
    instances: AtomicUsize,
    buckets: Buckets,
}

impl Clients {
    /// Loads the clients once: an instance serves no checkout before it
    /// knows them.
    pub async fn load(table: ClientTable, defaults: ClientLimits) -> Result<Self, sqlx::Error> {
        let clients = Clients {
            inner: Arc::new(Inner {
                table,
                instance: Uuid::now_v7(),
                defaults,
                known: RwLock::default(),
                instances: AtomicUsize::new(1),
                buckets: Buckets::default(),
            }),
        };
        clients.refresh().await?;
        Ok(clients)
    }

    pub fn defaults(&self) -> &ClientLimits {
        &self.inner.defaults
    }

    /// How many instances share the clients' rates, as this one last saw.
    pub fn instances(&self) -> usize {
        self.inner.instances.load(Ordering::Relaxed)
    }

    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let instances = self.inner.table.heartbeat(self.inner.instance).await?;
        self.inner.instances.store(instances, Ordering::Relaxed);
        let rows = self.inner.table.active().await?;
        let known = rows
            .into_iter()
            .filter_map(|row| {
                let digest = KeyDigest::try_from(row.key_sha256.as_slice()).ok()?;
                Some(Known {
                    name: row.name,
                    digest,
                    limits: row.limits.overrides().over(&self.inner.defaults),
                })
            })
            .collect();
        *self.inner.known.write().expect("never poisoned") = known;
        Ok(())
    }

    /// The client whose key this is. Every known digest is compared, each
    /// in constant time.
    pub fn authenticate(&self, key: &str) -> Option<Client> {
        let presented = digest(key);
        let known = self.inner.known.read().expect("never poisoned");
        let mut found = None;
        for entry in known.iter() {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(Client {
                    name: entry.name.clone(),
                    limits: entry.limits,
                });
            }
        }
        found
    }

    /// One checkout's worth of `client`'s rate, from this instance's share.
    pub fn admit(&self, client: &Client) -> Result<(), RateRefused> {
        self.inner
            .buckets
            .take(&client.name, &client.limits, self.instances())
    }
}

/// Reloads the clients every second until `stop`, then leaves the
/// instances' table so the others take this share at once.
pub async fn run_registry_until_stopped(clients: Clients, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.cancelled() => break,
        }
        if let Err(error) = clients.refresh().await {
            tracing::warn!(%error, "cannot reload the checkout clients; keeping the last ones");
        }
    }
    if let Err(error) = clients.inner.table.leave(clients.inner.instance).await {
        tracing::debug!(%error, "cannot remove this instance's heartbeat");
    }
}
