//! The test kit, a dev-dependency of every crate with integration tests:
//! a fresh database and a fresh broker prefix per test, both
//! removed when the test ends, so tests run in parallel and never meet.
//! Beside them, the kit every suite shares rather than copies: the one
//! proxy in front of a service ([`proxy`]), the one reader of `/metrics`
//! text ([`metrics`]), [`eventually`] for waiting on a condition with a
//! deadline, and the small steps of starting and reading processes.

pub mod broker;
pub mod database;
pub mod localstripe;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod waiting;

pub use broker::{reply_copies, BrokerUsers, TopologyGuard};
pub use database::TestDatabase;
pub use localstripe::LocalStripe;
pub use process::ServiceCommand;
pub use proxy::Proxy;
pub use s3::LocalS3;
pub use waiting::{eventually, within};

/// A server URL with rights to create databases (`TEST_DATABASE_URL`).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub(crate) fn random_suffix() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

pub use saga_shared::config::variables as environment;

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

/// Runs a test's clean-up to its end from `Drop`, which may be called
/// inside or outside a runtime: on a thread and runtime of its own.
pub(crate) fn clean_up<F>(work: F)
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

/// The JSON body `request` is answered with, whatever the status; none
/// if there is no answer or it is not JSON (yet): for polling a service
/// that may still be starting.
pub async fn try_json_answer(request: reqwest::RequestBuilder) -> Option<serde_json::Value> {
    request.send().await.ok()?.json().await.ok()
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
