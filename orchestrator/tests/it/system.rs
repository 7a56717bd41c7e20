//! A whole checkout system for one test.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::archive::ArchiveLocation;
use orchestrator::clients::{ClientLimits, Clients, SeededKeys};
use orchestrator::config::{Config, HttpLimits};
use orchestrator::http::auth::AdminTokens;
use orchestrator::listener::Waiters;
use orchestrator::reply_senders::ReplySenders;
use orchestrator::retention::{Pace, RetentionConfig};
use orchestrator::saga::{RetryPolicy, StepPolicies};
use saga_protocol::WorkerKind;
use saga_shared::broker::Broker;
use saga_shared::broker_users::Role;
use saga_shared::service_config::ServiceConfig;
use saga_shared::topology::Topology;
use saga_testkit::{self as testing, Proxy, TestDatabase, TopologyGuard};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use workers::runtime::{run_worker_until_stopped, Handler};

pub struct System {
    pub base_url: String,
    pub http: reqwest::Client,
    pub orchestrator_db: TestDatabase,
    pub inventory_db: TestDatabase,
    #[allow(dead_code)] // kept alive: dropping it drops the database
    pub tax_db: TestDatabase,
    pub payment_db: TestDatabase,
    #[allow(dead_code)]
    pub prefix: String,
    policies: StepPolicies,
    http_limits: HttpLimits,
    parked_saga_ttl: Option<Duration>,
    /// `RETENTION_DAYS` and `ARCHIVE` (a folder of this system's own).
    pub retention: RetentionConfig,
    /// The long-polls of the orchestrator instance at `base_url`.
    pub waiters: Arc<Waiters>,
    /// Where the instance at `base_url` serves the support API (the same
    /// address unless the setup asked for a listener of its own).
    pub admin_url: String,
    /// What the instance at `base_url` knows of the checkout clients.
    pub clients: Option<Clients>,
    client_limits: ClientLimits,
    admin_listener: bool,
    /// URLs every process of the system uses (through the proxies, if any).
    database_url_for: Box<dyn Fn(&TestDatabase) -> String + Send + Sync>,
    amqp_url: String,
    /// Stand in for RabbitMQ and PostgreSQL when a test cuts them.
    pub broker_proxy: Option<Proxy>,
    pub database_proxy: Option<Proxy>,
    /// More orchestrator instances on the same database.
    others: Vec<(CancellationToken, JoinHandle<()>)>,
    /// What each of those knows of the checkout clients.
    pub other_clients: Vec<Clients>,
    /// Stops the orchestrator alone (it can be restarted).
    orchestrator_stop: CancellationToken,
    orchestrator: Option<JoinHandle<()>>,
    /// Stops the workers.
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _topology: TopologyGuard,
    /// Removed last, after the topology.
    broker_users: Option<testing::BrokerUsers>,
}

/// The support token every test system accepts, and its actor name.
pub const ADMIN_TOKEN: &str = "dev-admin-token";
pub const ADMIN_ACTOR: &str = "support";

/// The checkout client every test system knows, and its key: what
/// [`System::http`] sends with every request.
pub const CLIENT: &str = "test-shop";
pub const CLIENT_KEY: &str = "test-shop-key-0123456789";
/// A second client, to show that clients are kept apart.
pub const OTHER_CLIENT: &str = "other-shop";
pub const OTHER_CLIENT_KEY: &str = "other-shop-key-0123456789";

/// `CHECKOUT_CLIENT_KEYS` of every test system (and of the binaries the
/// tests start).
pub fn client_keys() -> String {
    format!("{CLIENT}={CLIENT_KEY},{OTHER_CLIENT}={OTHER_CLIENT_KEY}")
}

/// An HTTP client that presents `key` as its bearer key on every request
/// (a request that sets its own Authorization header keeps that one).
pub fn http_with_key(key: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(key_headers(key))
        .build()
        .unwrap()
}

/// `Authorization: Bearer <key>`, as default headers of an HTTP client.
pub fn key_headers(key: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    headers
}

/// The environment of an orchestrator binary a test starts: the test
/// clients' keys, and limits no ordinary test reaches.
pub fn client_env() -> [(&'static str, String); 4] {
    let limits = roomy_limits();
    [
        ("CHECKOUT_CLIENT_KEYS", client_keys()),
        ("CLIENT_RATE_PER_SECOND", limits.rate_per_second.to_string()),
        ("CLIENT_RATE_BURST", limits.rate_burst.to_string()),
        ("CLIENT_MAX_IN_FLIGHT", limits.max_in_flight.to_string()),
    ]
}

/// Limits no ordinary test reaches: the tests of limits set their own.
pub fn roomy_limits() -> ClientLimits {
    ClientLimits {
        rate_per_second: 1_000_000.0,
        rate_burst: 1_000_000,
        max_in_flight: 1_000_000,
    }
}

/// The catalogue every test starts with.
pub const CATALOGUE: &[(&str, i32, i64, &str, &str)] = &[
    // sku, on_hand, unit_price_cents, currency, tax_category
    ("TSHIRT", 100, 2_000, "USD", "clothing"),
    ("BOOK", 50, 1_500, "USD", "books"),
    ("MUG", 10, 999, "USD", "general"),
    ("SCARCE", 1, 500, "USD", "general"),
    ("EUROMUG", 10, 900, "EUR", "general"),
];

/// Tax rates: (country, region, category, basis points).
pub const TAX_RATES: &[(&str, &str, &str, i32)] = &[
    ("US", "CA", "clothing", 725),
    ("US", "", "books", 300),
    ("US", "", "general", 600),
    ("US", "CA", "general", 825),
];

/// Loads [`CATALOGUE`] and [`TAX_RATES`] into migrated databases.
pub async fn seed(inventory: &sqlx::PgPool, tax: &sqlx::PgPool) {
    for (sku, on_hand, price, currency, category) in CATALOGUE {
        sqlx::query(
            "INSERT INTO products (sku, name, on_hand, available, unit_price_cents, currency, tax_category)
             VALUES ($1, $1, $2, $2, $3, $4, $5)",
        )
        .bind(sku).bind(on_hand).bind(price).bind(currency).bind(category)
        .execute(inventory).await.unwrap();
    }
    for (country, region, category, rate) in TAX_RATES {
        sqlx::query(
            "INSERT INTO tax_rates (country, region, category, rate_bp) VALUES ($1, $2, $3, $4)",
        )
        .bind(country)
        .bind(region)
        .bind(category)
        .bind(rate)
        .execute(tax)
        .await
        .unwrap();
    }
}

/// A fresh database for each of the four services, the inventory's and the
/// tax worker's migrated and seeded: their binaries' own migrations then
/// find nothing to do.
pub async fn seeded_databases() -> std::collections::HashMap<&'static str, TestDatabase> {
    let mut databases = std::collections::HashMap::new();
    for service in ["orchestrator", "inventory", "tax", "payment"] {
        databases.insert(service, TestDatabase::create(service).await);
    }
    workers::inventory::MIGRATOR
        .run(&databases["inventory"].pool)
        .await
        .unwrap();
    workers::tax::MIGRATOR
        .run(&databases["tax"].pool)
        .await
        .unwrap();
    seed(&databases["inventory"].pool, &databases["tax"].pool).await;
    databases
}

/// How a test wants its system.
#[derive(Default)]
pub struct Setup {
    pub policies: StepPolicies,
    /// Every process reaches RabbitMQ through a proxy the test can cut.
    pub broker_proxy: bool,
    /// Every process reaches PostgreSQL through a proxy the test can cut.
    pub database_proxy: bool,
    /// The orchestrator's HTTP bounds.
    pub http_limits: HttpLimits,
    /// Every process reaches RabbitMQ at this URL (a test's own proxy, or
    /// a cluster's nodes).
    pub amqp_url: Option<String>,
    /// The databases live on this server instead of `TEST_DATABASE_URL`'s
    /// (a primary and its standby, as several hosts).
    pub database_admin_url: Option<String>,
    /// No Rust tax worker: the test brings a tax worker of its own (one
    /// in another language, say) on a database of its own.
    pub without_tax_worker: bool,
    /// Every service connects as a RabbitMQ user of its own, with the
    /// least permissions, and the orchestrator checks replies' senders
    /// (WORKER_USERS).
    pub broker_users: bool,
    /// The clients' default limits ([`roomy_limits`] if unset).
    pub client_limits: Option<ClientLimits>,
    /// The support API on a listener of its own (`ADMIN_HTTP_ADDR`).
    pub admin_listener: bool,
    /// No workers at all: every saga stays in flight.
    pub without_workers: bool,
    /// `PARKED_SAGA_TTL`; by default parks never expire within a test.
    pub parked_saga_ttl: Option<Duration>,
    /// `RETENTION_DAYS`; by default nothing is archived within a test.
    pub retention_days: Option<u32>,
}

impl System {
    pub async fn start() -> System {
        Self::start_with(StepPolicies::default()).await
    }

    /// A system whose every step retries fast: tests of failures need not
    /// wait for production backoffs.
    pub fn fast_retries(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        }
    }

    /// [`System::fast_retries`], each attempt awaited at most `deadline`.
    pub fn fast_retries_within(max_attempts: u32, deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            deadline,
            ..Self::fast_retries(max_attempts)
        }
    }

    /// A system whose every service connects as a RabbitMQ user of its
    /// own, replies checked for their sender.
    pub async fn start_with_broker_users() -> System {
        Self::start_setup(Setup {
            broker_users: true,
            ..Setup::default()
        })
        .await
    }

    pub async fn start_with(policies: StepPolicies) -> System {
        Self::start_setup(Setup {
            policies,
            ..Setup::default()
        })
        .await
    }

    pub async fn start_setup(setup: Setup) -> System {
        testing::init_tracing();
        let rust_tax_worker = !setup.without_tax_worker;
        let broker_proxy = match setup.broker_proxy {
            true => Some(Proxy::start("127.0.0.1:5672").await),
            false => None,
        };
        let database_proxy = match setup.database_proxy {
            true => Some(Proxy::start("127.0.0.1:5432").await),
            false => None,
        };
        let amqp_url = match (&broker_proxy, setup.amqp_url) {
            (_, Some(url)) => url,
            (Some(proxy), None) => proxy.url_for(&testing::amqp_url(), 5672),
            (None, None) => testing::amqp_url(),
        };
        let database_port = database_proxy.as_ref().map(|p| p.port);
        let prefix = testing::random_prefix();
        let topology = TopologyGuard::new(&prefix);
        let broker_users = match setup.broker_users {
            true => Some(testing::BrokerUsers::create(&prefix, &amqp_url).await),
            false => None,
        };
        let admin = setup
            .database_admin_url
            .clone()
            .unwrap_or_else(testing::admin_database_url);
        let (orchestrator_db, inventory_db, tax_db, payment_db) = tokio::join!(
            TestDatabase::create_on(&admin, "orchestrator"),
            TestDatabase::create_on(&admin, "inventory"),
            TestDatabase::create_on(&admin, "tax"),
            TestDatabase::create_on(&admin, "payment"),
        );
        workers::inventory::MIGRATOR
            .run(&inventory_db.pool)
            .await
            .unwrap();
        workers::tax::MIGRATOR.run(&tax_db.pool).await.unwrap();
        workers::payment::MIGRATOR
            .run(&payment_db.pool)
            .await
            .unwrap();
        seed(&inventory_db.pool, &tax_db.pool).await;

        let stop = CancellationToken::new();
        let mut system = System {
            base_url: String::new(),
            http: http_with_key(CLIENT_KEY),
            admin_url: String::new(),
            clients: None,
            client_limits: setup.client_limits.unwrap_or_else(roomy_limits),
            admin_listener: setup.admin_listener,
            other_clients: Vec::new(),
            orchestrator_db,
            inventory_db,
            tax_db,
            payment_db,
            prefix,
            policies: setup.policies,
            http_limits: setup.http_limits,
            parked_saga_ttl: setup.parked_saga_ttl,
            retention: RetentionConfig {
                days: setup.retention_days,
                archive: ArchiveLocation::Folder(
                    std::env::temp_dir().join(format!("checkout-archive-{}", Uuid::new_v4())),
                ),
                pace: Pace::FLAT_OUT,
            },
            waiters: Waiters::new(1),
            database_url_for: Box::new(move |db: &TestDatabase| match database_port {
                Some(port) => db.url.replacen(":5432", &format!(":{port}"), 1),
                None => db.url.clone(),
            }),
            amqp_url,
            broker_proxy,
            database_proxy,
            others: Vec::new(),
            orchestrator_stop: CancellationToken::new(),
            orchestrator: None,
            stop,
            tasks: Vec::new(),
            _topology: topology,
            broker_users,
        };
        system.start_orchestrator().await;
        if setup.without_workers {
            return system;
        }
        let stop = &system.stop;
        let multi_host = setup.database_admin_url.is_some();
        let pool = |db: &TestDatabase| {
            let url = (system.database_url_for)(db);
            let stop = stop.clone();
            async move {
                if multi_host {
                    // Follows the primary, as the worker binaries' pools do.
                    return saga_shared::database::connect_with_backoff(&url, 8, &stop)
                        .await
                        .unwrap();
                }
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy(&url)
                    .unwrap()
            }
        };
        let inventory = workers::inventory::Inventory;
        let mut tasks = vec![
            system
                .start_worker(
                    WorkerKind::Inventory,
                    inventory,
                    pool(&system.inventory_db).await,
                )
                .await,
        ];
        if rust_tax_worker {
            let tax_pool = pool(&system.tax_db).await;
            tasks.push(
                system
                    .start_worker(WorkerKind::Tax, workers::tax::Tax, tax_pool)
                    .await,
            );
        }
        let payment = workers::payment::Payment::with_config(
            workers::payment::Simulator::new(pool(&system.payment_db).await),
            workers::payment::PaymentConfig::simulated(),
        );
        let payment_pool = pool(&system.payment_db).await;
        tasks.push(
            system
                .start_worker(WorkerKind::Payment, payment, payment_pool)
                .await,
        );
        system.tasks = tasks;
        system
    }

    /// Starts the worker of `kind`, `handler` on `pool`, connected as
    /// that worker's service would; it stops with the system.
    async fn start_worker<H: Handler>(
        &self,
        kind: WorkerKind,
        handler: H,
        pool: sqlx::PgPool,
    ) -> JoinHandle<()> {
        let broker = Arc::new(
            self.connect_broker_as(Role::Worker(kind), "test-worker", &self.stop)
                .await,
        );
        let stop = self.stop.clone();
        tokio::spawn(async move {
            run_worker_until_stopped(handler, pool, broker, 16, stop)
                .await
                .expect("worker runs");
        })
    }

    /// The URL `role`'s service connects to RabbitMQ with: its own user's
    /// with `broker_users`, the test's otherwise.
    pub fn amqp_url_for(&self, role: Role) -> String {
        match &self.broker_users {
            Some(users) => users.url(role),
            None => self.amqp_url.clone(),
        }
    }

    /// A connection of the test's own to the system's topology, named
    /// `name`: as the guest user, straight to RabbitMQ (past any proxy the
    /// test cuts).
    pub async fn connect_broker(&self, name: &str, stop: &CancellationToken) -> Broker {
        self.connect_broker_at(&testing::amqp_url(), name, stop)
            .await
    }

    /// [`System::connect_broker`] as `role`'s service connects: as its own
    /// RabbitMQ user when the system was started with them.
    pub async fn connect_broker_as(
        &self,
        role: Role,
        name: &str,
        stop: &CancellationToken,
    ) -> Broker {
        self.connect_broker_at(&self.amqp_url_for(role), name, stop)
            .await
    }

    async fn connect_broker_at(&self, url: &str, name: &str, stop: &CancellationToken) -> Broker {
        Broker::connect(url, Topology::new(&self.prefix), name, stop)
            .await
            .unwrap_or_else(|e| panic!("{name} connects to RabbitMQ: {e}"))
    }

    /// Each service's RabbitMQ user, when the system was started with them.
    pub fn broker_users(&self) -> Option<&testing::BrokerUsers> {
        self.broker_users.as_ref()
    }

    /// Starts an orchestrator instance on the system's database; its
    /// address becomes `base_url`.
    pub async fn start_orchestrator(&mut self) {
        let (stop, task, base_url, waiters, running) = self.orchestrator_instance().await;
        self.waiters = waiters;
        self.admin_url = running.1.unwrap_or_else(|| base_url.clone());
        self.clients = Some(running.0);
        self.orchestrator_stop = stop;
        self.orchestrator = Some(task);
        self.base_url = base_url;
    }

    /// Starts one more orchestrator instance on the same database and
    /// broker; returns its base URL. It stops with the system.
    pub async fn add_orchestrator(&mut self) -> String {
        let (stop, task, base_url, _, (clients, _)) = self.orchestrator_instance().await;
        self.others.push((stop, task));
        self.other_clients.push(clients);
        base_url
    }

    #[allow(clippy::type_complexity)]
    async fn orchestrator_instance(
        &self,
    ) -> (
        CancellationToken,
        JoinHandle<()>,
        String,
        Arc<Waiters>,
        (Clients, Option<String>),
    ) {
        let mut env = std::collections::HashMap::new();
        env.insert(
            "DATABASE_URL".to_owned(),
            (self.database_url_for)(&self.orchestrator_db),
        );
        env.insert("AMQP_URL".to_owned(), self.amqp_url_for(Role::Orchestrator));
        if let Some(users) = &self.broker_users {
            env.insert("WORKER_USERS".to_owned(), users.worker_users.clone());
        }
        env.insert("AMQP_PREFIX".to_owned(), self.prefix.clone());
        env.insert("DATABASE_POOL_SIZE".to_owned(), "8".to_owned());
        let config = Config {
            service: ServiceConfig::from_source(&env).unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_http_addr: self.admin_listener.then(|| "127.0.0.1:0".parse().unwrap()),
            policies: self.policies,
            admin_tokens: AdminTokens::parse(&format!("{ADMIN_ACTOR}={ADMIN_TOKEN}")).unwrap(),
            http: self.http_limits,
            reply_senders: ReplySenders::from_source(&env).unwrap(),
            client_keys: SeededKeys::parse(&client_keys()).unwrap(),
            client_limits: self.client_limits,
            parked_saga_ttl: self.parked_saga_ttl,
            retention: self.retention.clone(),
        };
        let stop = CancellationToken::new();
        let running = orchestrator::app::start(config, stop.clone())
            .await
            .expect("orchestrator starts");
        let base_url = format!("http://{}", running.addr);
        let waiters = running.waiters.clone();
        let admin_url = running.admin_addr.map(|addr| format!("http://{addr}"));
        let clients = running.clients.clone();
        (
            stop,
            tokio::spawn(running.wait()),
            base_url,
            waiters,
            (clients, admin_url),
        )
    }

    /// Stops the orchestrator instance (the workers go on).
    pub async fn stop_orchestrator(&mut self) {
        self.orchestrator_stop.cancel();
        if let Some(task) = self.orchestrator.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("orchestrator stops within 20 s")
                .expect("orchestrator task ends cleanly");
        }
    }

    /// The dead letters recorded for `saga`, once there is at least one
    /// (within `within`).
    pub async fn dead_letters_for(
        &self,
        saga: impl std::fmt::Display,
        within: Duration,
    ) -> Vec<Value> {
        let saga = saga.to_string();
        testing::eventually("a dead letter recorded", within, || async {
            let rows = self.dead_letters(&saga).await;
            (!rows.is_empty()).then_some(rows)
        })
        .await
    }

    /// The dead letters recorded for `saga` by now (up to 100), as support
    /// lists them.
    pub async fn dead_letters(&self, saga: &str) -> Vec<Value> {
        let path = format!("/v1/admin/dead-letters?saga_id={saga}&limit=100");
        let list = self.admin_read(&path).await;
        list["dead_letters"].as_array().unwrap().clone()
    }

    /// Support's list of the sagas `query` (a query string) selects, which
    /// must be answered.
    pub async fn sagas(&self, query: &str) -> Value {
        self.admin_read(&format!("/v1/admin/sagas?{query}")).await
    }

    /// A support API read of `path`, which must be answered (200).
    pub async fn admin_read(&self, path: &str) -> Value {
        let (status, body) = self.admin("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A support API call with the test token: (status, body).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("support API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Support's view of the saga `id`, which must be found.
    pub async fn saga_view(&self, id: &str) -> Value {
        self.admin_read(&format!("/v1/admin/sagas/{id}")).await
    }

    /// The entries of the saga `id`'s timeline, as support sees them.
    pub async fn timeline(&self, id: &str) -> Vec<Value> {
        let view = self.saga_view(id).await;
        view["timeline"]
            .as_array()
            .unwrap_or_else(|| panic!("a timeline: {view}"))
            .clone()
    }

    /// A bulk retry (`POST /v1/admin/sagas/retry`) of `body`.
    pub async fn bulk_retry(&self, body: Value) -> (u16, Value) {
        self.admin("POST", "/v1/admin/sagas/retry", Some(body))
            .await
    }

    /// Support cancels the saga `id`, which must succeed: how a test ends a
    /// saga it parked.
    pub async fn cancel(&self, id: &str) {
        self.support_action(id, "cancel", "test over").await;
    }

    /// Support retries the parked saga `id` for `reason`, which must be
    /// accepted.
    pub async fn retry(&self, id: &str, reason: &str) {
        self.support_action(id, "retry", reason).await;
    }

    async fn support_action(&self, id: &str, action: &str, reason: &str) {
        let (status, body) = self
            .admin(
                "POST",
                &format!("/v1/admin/sagas/{id}/{action}"),
                Some(json!({ "reason": reason })),
            )
            .await;
        assert_eq!(status, 200, "{action} {id}: {body}");
    }

    /// Places `body` while the payment provider is down and waits until
    /// its saga is parked at the charge. The provider stays down.
    pub async fn park(&self, body: &Value) -> String {
        self.park_each(body, 1).await.remove(0)
    }

    /// Places `n` checkouts of `body`, one after the other, while the
    /// payment provider is down and waits until every one is parked at the
    /// charge. The provider stays down.
    pub async fn park_each(&self, body: &Value, n: usize) -> Vec<String> {
        self.outage(true).await;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.place(body).await);
        }
        self.wait_status(&ids, "suspended", Duration::from_secs(60))
            .await;
        ids
    }

    /// Switches the payment provider outage on or off.
    pub async fn outage(&self, on: bool) {
        let mut conn = self.payment_db.pool.acquire().await.unwrap();
        workers::payment::outage::set(&mut conn, on).await.unwrap();
    }

    /// Posts a checkout and returns its id, without waiting.
    pub async fn place(&self, body: &Value) -> String {
        let (status, created) = self.post(body, None).await;
        assert_eq!(status, 202, "{created}");
        created["checkout_id"].as_str().unwrap().to_owned()
    }

    /// The saga's status as support sees it (`suspended`, `completed`, ...).
    pub async fn saga_status(&self, id: &str) -> String {
        let uuid: uuid::Uuid = id.parse().unwrap();
        sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
            .bind(uuid)
            .fetch_one(&self.orchestrator_db.pool)
            .await
            .unwrap()
    }

    /// Waits (deadline `timeout`) until every saga in `ids` has `status`;
    /// past it, fails naming how many are in which status and the last
    /// event of one that is not there, which says why.
    pub async fn wait_status(&self, ids: &[String], status: &str, timeout: Duration) {
        let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| i.parse().unwrap()).collect();
        let pool = &self.orchestrator_db.pool;
        let reached = testing::within(timeout, || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sagas WHERE id = ANY($1) AND status = $2")
                    .bind(&uuids)
                    .bind(status)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (n as usize == ids.len()).then_some(())
        })
        .await;
        if reached.is_some() {
            return;
        }
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM sagas WHERE id = ANY($1) GROUP BY status ORDER BY status",
        )
        .bind(&uuids)
        .fetch_all(pool)
        .await
        .unwrap();
        let last_event: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT to_jsonb(e) FROM saga_events e JOIN sagas s ON s.id = e.saga_id
             WHERE s.id = ANY($1) AND s.status <> $2 ORDER BY e.id DESC LIMIT 1",
        )
        .bind(&uuids)
        .bind(status)
        .fetch_optional(pool)
        .await
        .unwrap();
        panic!(
            "timed out after {timeout:?} waiting for {} sagas {status}: by status {counts:?}; \
             the last event of one not {status}: {last_event:?}",
            ids.len()
        );
    }

    /// Every payment is one charge of one TSHIRT checkout (2,000 + 7.25%
    /// tax), `checkouts` of them: none doubled, none lost, none refunded.
    pub async fn assert_one_tshirt_charge_each(&self, checkouts: usize) {
        let payments = self.payments().await;
        assert_eq!(payments.len(), checkouts, "{payments:?}");
        assert!(
            payments
                .iter()
                .all(|p| *p == ("charged".to_owned(), 2_145, 0)),
            "{payments:?}"
        );
    }

    /// The one payment there is: `cents` charged, nothing refunded.
    pub async fn assert_one_charge(&self, cents: i64) {
        assert_eq!(
            self.payments().await,
            vec![("charged".to_owned(), cents, 0)]
        );
    }

    /// Net money taken: charged minus refunded, over every payment.
    pub async fn net_charged(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount_cents - refunded_cents), 0)::int8 FROM payments
             WHERE status IN ('charged', 'refunded')",
        )
        .fetch_one(&self.payment_db.pool)
        .await
        .unwrap()
    }

    /// A checkout POST of `body` as written, declared as `content_type`.
    fn checkout_request(&self, content_type: &str, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/checkouts", self.base_url))
            .header("content-type", content_type)
            .body(body)
    }

    /// Posts `body` as written, declared as `content_type`: the answer as
    /// it came, for the tests of what the API refuses to read.
    pub async fn post_raw(&self, content_type: &str, body: String) -> reqwest::Response {
        self.checkout_request(content_type, body)
            .send()
            .await
            .expect("POST answers")
    }

    pub async fn post(&self, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self.checkout_request("application/json", body.to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("POST answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The orchestrator's answer to `GET path`, as it came.
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET answers")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.fetch(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Long-polls until the checkout is no longer pending (deadline 20 s).
    pub async fn wait_final(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(&format!("/v1/checkouts/{id}?wait=5")).await;
            assert_eq!(status, 200, "{body}");
            if body["status"] != "pending" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "checkout {id} still pending: {body}"
            );
        }
    }

    /// Posts a checkout and waits for its final status.
    pub async fn checkout(&self, body: &Value) -> Value {
        let (status, created) = self.post(body, None).await;
        assert_eq!(status, 202, "{created}");
        self.wait_final(created["checkout_id"].as_str().unwrap())
            .await
    }

    /// Posts a checkout, waits for its final status, which must be
    /// `rejected` for `reason`.
    pub async fn checkout_rejected(&self, body: &Value, reason: &str) {
        let done = self.checkout(body).await;
        assert_eq!(done["status"], "rejected", "{done}");
        assert_eq!(done["reason"], reason, "{done}");
    }

    pub async fn available(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.inventory_db.pool)
            .await
            .unwrap()
    }

    /// Units held by active reservations, all SKUs.
    pub async fn held(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(l.quantity), 0)::int8 FROM reservation_lines l
             JOIN reservations r USING (saga_id) WHERE r.status = 'active'",
        )
        .fetch_one(&self.inventory_db.pool)
        .await
        .unwrap()
    }

    /// (status, amount charged, amount refunded) of each payment row.
    pub async fn payments(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT status, amount_cents, refunded_cents FROM payments ORDER BY created_at",
        )
        .fetch_all(&self.payment_db.pool)
        .await
        .unwrap()
    }

    pub async fn saga_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sagas")
            .fetch_one(&self.orchestrator_db.pool)
            .await
            .unwrap()
    }

    /// Runs the auditor over the system's databases and fails the test on
    /// any violated invariant.
    pub async fn audit(&self) -> auditor::Summary {
        let report = auditor::audit(&auditor::Sources {
            orchestrator: self.orchestrator_db.pool.clone(),
            inventory: self.inventory_db.pool.clone(),
            payment: self.payment_db.pool.clone(),
            deadline_grace: Duration::from_secs(30),
        })
        .await
        .expect("the auditor reads every database");
        let lines: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        assert!(
            lines.is_empty(),
            "invariants violated:\n{}",
            lines.join("\n")
        );
        report.summary
    }

    /// Stops everything, after checking the invariants hold.
    pub async fn stop(self) {
        self.audit().await;
        self.stop_without_audit().await;
    }

    pub async fn stop_without_audit(mut self) {
        for (stop, task) in self.others.drain(..) {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        self.stop_orchestrator().await;
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// How many of the sagas `ids` meet `condition`, SQL over their `sagas` row.
pub async fn count_sagas(pool: &sqlx::PgPool, ids: &[uuid::Uuid], condition: &str) -> i64 {
    let query = format!("SELECT count(*) FROM sagas WHERE id = ANY($1) AND {condition}");
    sqlx::query_scalar(&query)
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub fn order(items: &[(&str, u32)], payment_method: &str) -> Value {
    json!({
        "customer_id": "customer-1",
        "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        "ship_to": {"country": "US", "region": "CA"},
        "payment_method": payment_method,
    })
}
