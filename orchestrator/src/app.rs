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

use crate::archive::{Archive, ArchiveError};
use crate::clients::{run_registry_until_stopped, Clients};
use crate::config::Config;
use crate::dead_letters::run_dead_letter_recorder_until_stopped;
use crate::deadlines::run_deadlines_until_stopped;
use crate::gauges::{run_gauges_until_stopped, DatabaseGauges};
use crate::http::{self, AppState, Routes};
use crate::listener::{run_listener_until_stopped, Waiters};
use crate::relay::run_relay_until_stopped;
use crate::replies::run_reply_consumer_until_stopped;
use crate::retention::run_retention_until_stopped;
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
    #[error("ARCHIVE: {0}")]
    Archive(#[from] ArchiveError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A started orchestrator: its bound address and its tasks.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the support API, console and `/metrics` are served, when
    /// apart from `addr` (`ADMIN_HTTP_ADDR`).
    pub admin_addr: Option<SocketAddr>,
    /// This instance's view of the checkout clients.
    pub clients: Clients,
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
    saga_shared::broker_commands::ensure_at_start(service, broker.topology()).await;
    let (listener, addr) = bind(config.http_addr).await?;
    let admin_listener = match config.admin_http_addr {
        Some(admin_addr) => Some(bind(admin_addr).await?),
        None => {
            tracing::warn!(
                "ADMIN_HTTP_ADDR is not set: the support API, console and /metrics share the public listener"
            );
            None
        }
    };
    let plain = Store::new(pool.clone(), config.policies);
    plain.client_table().seed(&config.client_keys).await?;
    let clients = Clients::load(plain.client_table(), config.client_limits).await?;

    if !config.reply_senders.is_configured() {
        tracing::warn!(
            user = broker.user(),
            "WORKER_USERS is not set: a reply is applied whoever sent it. Give each service a RabbitMQ user of its own \
             (`orchestrator broker-users`) and set WORKER_USERS (docs/security.md)"
        );
    }
    if config.admin_tokens.is_empty() {
        tracing::warn!("ADMIN_TOKENS is not set: the support API and console refuse everyone");
    }
    let relay = Arc::new(Notify::new());
    let (lane, confirmed) = crate::handoff::lane(plain.outbox(), broker.clone(), relay.clone());
    let store = plain.handing_to(lane);
    let waiters = Waiters::new(config.http.max_waiters);
    let gauges = DatabaseGauges::default();
    let mut tasks = JoinSet::new();

    tasks.spawn(run_listener_until_stopped(
        store.clone(),
        waiters.clone(),
        stop.clone(),
    ));
    tasks.spawn(run_registry_until_stopped(clients.clone(), stop.clone()));
    tasks.spawn(run_gauges_until_stopped(
        store.clone(),
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
    if let Some(retention) = config.retention.retention() {
        let archive = Archive::open(&config.retention.archive)?;
        tasks.spawn(run_retention_until_stopped(
            store.clone(),
            archive,
            retention,
            config.retention.pace,
            stop.clone(),
        ));
    }
    tasks.spawn(run_dead_letter_recorder_until_stopped(
        store.clone(),
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
        let senders = Arc::new(config.reply_senders.clone());
        tasks.spawn(async move {
            if let Err(error) =
                run_reply_consumer_until_stopped(store, broker, senders, prefetch, stop.clone())
                    .await
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
        clients: clients.clone(),
        metrics: crate::metrics::handle(),
        gauges,
        limits: config.http,
        parked_saga_ttl: config.parked_saga_ttl,
        retention: config.retention.clone(),
    };
    let public = match admin_listener {
        Some(_) => Routes::Public,
        None => Routes::All,
    };
    tasks.spawn(http::server::serve(
        listener,
        http::router(state.clone(), public),
        config.http,
        stop.clone(),
    ));
    let admin_addr = admin_listener.map(|(admin_listener, admin_addr)| {
        tasks.spawn(http::server::serve(
            admin_listener,
            http::router(state, Routes::Admin),
            config.http,
            stop.clone(),
        ));
        tracing::info!(%admin_addr, "support API, console and metrics listening");
        admin_addr
    });
    tracing::info!(%addr, "orchestrator listening");
    Ok(Running {
        addr,
        admin_addr,
        clients,
        waiters,
        tasks,
        broker,
    })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listen = |error| StartError::Listen { addr, error };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    Ok((listener, bound))
}
