//! Wiring: one orchestrator instance, its tasks, and their shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use saga_shared::broker::{Broker, BrokerError};
use saga_shared::database;
use saga_shared::schema::{self, Schema, SchemaError};
use saga_shared::topology::Topology;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dead_letters::run_dead_letter_recorder_until_stopped;
use crate::deadlines::run_deadlines_until_stopped;
use crate::http::{self, AppState};
use crate::listener::{run_listener_until_stopped, Waiters};
use crate::metrics::{run_gauges_until_stopped, DatabaseGauges};
use crate::relay::run_relay_until_stopped;
use crate::replies::run_reply_consumer_until_stopped;
use crate::store::Store;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/orchestrator");
pub static SCHEMA: Schema = Schema::new("orchestrator", &MIGRATOR);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A started orchestrator: its bound address and its tasks.
pub struct Running {
    pub addr: SocketAddr,
    /// This instance's long-polls (what tests count wake-ups on).
    pub waiters: Arc<Waiters>,
    tasks: JoinSet<()>,
    broker: Arc<Broker>,
}

impl Running {
    /// Waits until every task has stopped (after `stop` was cancelled, or
    /// one of them failed).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.broker.close().await;
    }
}

pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, StartError> {
    let service = &config.service;
    let pool_size = config.database_pool_size();
    let pool = database::connect_with_backoff(service.database_url(), pool_size, &stop).await?;
    schema::prepare(&pool, &SCHEMA, service.schema).await?;
    database::warn_if_budget_tight(&pool, pool_size).await;
    let broker = Arc::new(
        Broker::connect_with_ca(
            service.amqp_url(),
            service.amqp_ca.as_ref(),
            Topology::new(&service.amqp_prefix),
            "orchestrator",
            &stop,
        )
        .await?,
    );
    saga_shared::queue_policies::ensure_at_start(service, broker.topology()).await;
    let listener =
        TcpListener::bind(config.http_addr)
            .await
            .map_err(|error| StartError::Listen {
                addr: config.http_addr,
                error,
            })?;
    let addr = listener.local_addr().map_err(|error| StartError::Listen {
        addr: config.http_addr,
        error,
    })?;

    if config.admin_tokens.is_empty() {
        tracing::warn!("ADMIN_TOKENS is not set: the support API and console refuse everyone");
    }
    let relay = Arc::new(Notify::new());
    let (lane, confirmed) = crate::handoff::lane(pool.clone(), broker.clone(), relay.clone());
    let store = Store::new(pool.clone(), config.policies).handing_to(lane);
    let waiters = Waiters::new(config.http.max_waiters);
    let gauges = DatabaseGauges::default();
    let mut tasks = JoinSet::new();

    tasks.spawn(run_listener_until_stopped(
        pool.clone(),
        waiters.clone(),
        stop.clone(),
    ));
    tasks.spawn(run_gauges_until_stopped(
        pool.clone(),
        gauges.clone(),
        stop.clone(),
    ));
    tasks.spawn(run_deadlines_until_stopped(
        store.clone(),
        relay.clone(),
        stop.clone(),
    ));
    if let Some(ttl) = config.parked_saga_ttl {
        tasks.spawn(crate::parked::run_park_expiry_until_stopped(
            store.clone(),
            ttl,
            relay.clone(),
            stop.clone(),
        ));
    }
    tasks.spawn(run_dead_letter_recorder_until_stopped(
        pool.clone(),
        broker.clone(),
        service.prefetch,
        stop.clone(),
    ));
    tasks.spawn(run_relay_until_stopped(
        store.clone(),
        broker.clone(),
        relay.clone(),
        confirmed,
        stop.clone(),
    ));
    {
        let (store, broker, stop) = (store.clone(), broker.clone(), stop.clone());
        let prefetch = service.prefetch;
        tasks.spawn(async move {
            if let Err(error) =
                run_reply_consumer_until_stopped(store, broker, prefetch, stop.clone()).await
            {
                // Without replies no saga can advance: stop the instance
                // rather than serve requests that will never finish.
                tracing::error!(%error, "reply consumer failed; stopping");
                stop.cancel();
            }
        });
    }
    let state = AppState {
        store,
        broker: broker.clone(),
        relay,
        waiters: waiters.clone(),
        admin_tokens: Arc::new(config.admin_tokens),
        metrics: crate::metrics::handle(),
        gauges,
        limits: config.http,
        parked_saga_ttl: config.parked_saga_ttl,
    };
    let app = http::router(state);
    tasks.spawn(http::server::serve(
        listener,
        app,
        config.http,
        stop.clone(),
    ));
    tracing::info!(%addr, "orchestrator listening");
    Ok(Running {
        addr,
        waiters,
        tasks,
        broker,
    })
}
