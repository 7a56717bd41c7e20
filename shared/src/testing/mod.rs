//! Test support: a fresh database and a fresh broker prefix per test, both
//! removed when the test ends, so tests run in parallel and never meet.
//! Beside them, the kit every suite shares rather than copies: the one
//! proxy in front of a service ([`proxy`]), the one reader of `/metrics`
//! text ([`metrics`]), [`eventually`] for waiting on a condition with a
//! deadline, and the small steps of starting and reading processes.

use sqlx::{PgConnection, PgPool};

use crate::topology::Topology;

pub mod metrics;
pub mod proxy;

pub use proxy::Proxy;
/// The proxy's name when it could only cut connections, which branches
/// written before it could do more still use.
pub use proxy::Proxy as OutageProxy;

/// A server URL with rights to create databases (`TEST_DATABASE_URL`).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn random_suffix() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The variables `pairs` as a configuration reader takes them, in place of
/// the process's environment, which every test in the process shares.
pub fn environment(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A random `AMQP_PREFIX` for one test.
pub fn random_prefix() -> String {
    format!("t{}.", random_suffix())
}

/// A port free now on 127.0.0.1, for a process the test starts to listen
/// on (another may take it meanwhile: rare enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Where a service process a test starts logs to: the test's own stderr
/// under `TEST_LOG`, nowhere otherwise, as the in-process services.
pub fn service_log() -> std::process::Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

/// What a process a test ran printed on stdout; it must have exited 0,
/// or the test fails with both its streams.
pub fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\nstdout:\n{stdout}stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Quiet tests unless `TEST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".to_owned()),
            )
            .with_test_writer()
            .try_init();
    }
}

/// An empty database with a random name, dropped (forcibly) on drop.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// The admin URL it was created with (and is dropped with).
    admin: String,
}

impl TestDatabase {
    pub async fn create(label: &str) -> TestDatabase {
        Self::create_on(&admin_database_url(), label).await
    }

    /// On the server(s) of `admin`, which may name several hosts (a
    /// primary and its standby): the database is made on the primary, and
    /// the test's own pool follows the primary like a service's does.
    pub async fn create_on(admin: &str, label: &str) -> TestDatabase {
        let name = format!("test_{label}_{}", random_suffix());
        let mut conn = admin_connection(admin)
            .await
            .expect("connect to PostgreSQL as admin (is it running?)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = crate::database::with_database(admin, &name);
        let pool = crate::database::connect_with_backoff(
            &url,
            4,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("connect to test database");
        TestDatabase {
            name,
            url,
            pool,
            admin: admin.to_owned(),
        }
    }
}

/// A connection to the primary among `admin`'s hosts.
async fn admin_connection(admin: &str) -> Result<PgConnection, sqlx::Error> {
    crate::database::primary_connection(admin)
        .await
        .map(|(_, connection)| connection)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside async context guarantees: use a thread with its
        // own runtime so the database is gone before the test returns. The
        // pool is not closed from there: its sockets belong to the test's
        // runtime, which this drop blocks, so on a current-thread runtime
        // closing would wait for ever. `WITH (FORCE)` ends its sessions.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = admin_connection(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join();
    }
}

/// Deletes every queue, exchange, policy and service user of `prefix` on
/// drop.
pub struct TopologyGuard {
    pub topology: Topology,
}

impl TopologyGuard {
    pub fn new(prefix: &str) -> Self {
        TopologyGuard {
            topology: Topology::new(prefix),
        }
    }
}

/// Runs a test's clean-up to its end from `Drop`, which may be called
/// inside or outside a runtime: on a thread and runtime of its own.
fn clean_up<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join();
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        clean_up(async move {
            let props = lapin::ConnectionProperties::default();
            if let Ok(conn) = lapin::Connection::connect(&amqp_url(), props).await {
                if let Ok(channel) = conn.create_channel().await {
                    let _ = topology.delete(&channel).await;
                }
                let _ = conn.close(200, "bye".into()).await;
            }
            // The services under test created the prefix's policies, and
            // `broker-users` its users.
            if let Ok(management) = crate::queue_policies::Management::new(&amqp_url(), None) {
                let _ = management.remove(&topology).await;
                let base = topology.prefix().trim_end_matches('.');
                let _ = management.remove_users(base).await;
            }
        });
    }
}

/// Each service's own RabbitMQ user for one test's prefix, with the
/// permissions `orchestrator broker-users` gives, removed when dropped.
pub struct BrokerUsers {
    base: String,
    urls: std::collections::HashMap<crate::broker_users::Role, String>,
    /// The orchestrator's WORKER_USERS for these users.
    pub worker_users: String,
}

impl BrokerUsers {
    /// Users for `prefix`, reached at `amqp_url` (the test's broker URL,
    /// whose credentials are replaced).
    pub async fn create(prefix: &str, amqp_url: &str) -> BrokerUsers {
        use secrecy::ExposeSecret;
        let management = crate::queue_policies::Management::new(&self::amqp_url(), None)
            .expect("management API address");
        let base = prefix.trim_end_matches('.').to_owned();
        let users = management
            .ensure_users(&Topology::new(prefix), &base, true, &Default::default())
            .await
            .expect("the management API creates the test's RabbitMQ users");
        let mut urls = std::collections::HashMap::new();
        for user in users {
            let password = user.password.expect("a test's users are new");
            urls.insert(
                user.role,
                crate::config::url_as(amqp_url, &user.name, password.expose_secret()),
            );
        }
        BrokerUsers {
            worker_users: crate::broker_users::worker_users(&base),
            base,
            urls,
        }
    }

    /// The AMQP URL `role`'s service connects with.
    pub fn url(&self, role: crate::broker_users::Role) -> String {
        self.urls[&role].clone()
    }

    /// The user name of `role`.
    pub fn user(&self, role: crate::broker_users::Role) -> String {
        crate::broker_users::user_name(&self.base, role)
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let base = self.base.clone();
        clean_up(async move {
            if let Ok(management) = crate::queue_policies::Management::new(&amqp_url(), None) {
                let _ = management.remove_users(&base).await;
            }
        });
    }
}

/// A test-owned queue that receives a copy of every reply of `broker`'s
/// prefix (beside the orchestrator's own), consumed without acks as
/// `consumer_tag`: what the workers answered, as the orchestrator got it.
pub async fn reply_copies(broker: &crate::broker::Broker, consumer_tag: &str) -> lapin::Consumer {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let channel = broker.channel().await.expect("a channel");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive().auto_delete(),
            FieldTable::default(),
        )
        .await
        .expect("declare the reply copies' queue");
    channel
        .queue_bind(
            queue.name().clone(),
            broker.topology().reply_exchange().into(),
            crate::topology::REPLY_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the reply copies' queue");
    channel
        .basic_consume(
            queue.name().clone(),
            consumer_tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume the reply copies")
}

/// The JSON body `request` is answered with, whatever the status.
pub async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("a JSON body")
}

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
