//! The shared servers, PostgreSQL and RabbitMQ on this machine: restarting
//! them, telling when they are back, and making sure they are up whatever
//! happened to the run.
//!
//! Every command runs in a new session with stdin from /dev/null (what
//! `setsid cmd </dev/null` does): a server it starts must not share this
//! program's process group, or a Ctrl-C meant for the run would stop the
//! database too. Output goes to a file, never a pipe: a daemon that inherits
//! a pipe would keep the read side waiting for ever.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

/// How long one service command may take before the run gives up on it.
const COMMAND_BOUND: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Services {
    pg_version: String,
    pg_admin_url: String,
    amqp_url: String,
    log: PathBuf,
}

impl Services {
    /// The newest PostgreSQL cluster under /etc/postgresql (Debian layout).
    pub fn detect(pg_admin_url: &str, amqp_url: &str, log: &Path) -> anyhow::Result<Services> {
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .context("no /etc/postgresql: cannot restart PostgreSQL (use --no-service-restarts)")?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.split('.').all(|part| part.parse::<u32>().is_ok()))
            .collect();
        versions.sort_by_key(|v| {
            v.split('.')
                .map(|part| part.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        let Some(pg_version) = versions.pop() else {
            bail!("no cluster under /etc/postgresql: cannot restart PostgreSQL (use --no-service-restarts)");
        };
        Ok(Services {
            pg_version,
            pg_admin_url: pg_admin_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            log: log.to_path_buf(),
        })
    }

    /// Stops the RabbitMQ application, node left running: every connection
    /// is dropped and new ones are refused, as during a broker restart.
    pub async fn stop_rabbitmq(&self) -> anyhow::Result<()> {
        self.run("rabbitmqctl", &["stop_app"]).await
    }

    pub async fn start_rabbitmq(&self) -> anyhow::Result<()> {
        self.run("rabbitmqctl", &["start_app"]).await
    }

    /// A fast-mode restart: sessions are ended at once, as in a crash or a
    /// failover.
    pub async fn restart_postgres(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &self.pg_version,
                "main",
                "restart",
                "-m",
                "fast",
            ],
        )
        .await
    }

    /// Waits until RabbitMQ accepts an AMQP connection.
    pub async fn wait_rabbitmq(&self, bound: Duration) -> anyhow::Result<()> {
        wait_until("RabbitMQ", bound, || self.rabbitmq_answers()).await
    }

    /// Waits until PostgreSQL accepts a session and answers a query.
    pub async fn wait_postgres(&self, bound: Duration) -> anyhow::Result<()> {
        wait_until("PostgreSQL", bound, || self.postgres_answers()).await
    }

    async fn rabbitmq_answers(&self) -> bool {
        rabbitmq_answers(&self.amqp_url).await
    }

    async fn postgres_answers(&self) -> bool {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let mut conn = PgConnection::connect(&self.pg_admin_url).await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        })
        .await;
        matches!(attempt, Ok(Ok(())))
    }

    /// Whatever state the run left them in (interrupted mid-restart, a
    /// failed start), start whichever server does not answer. Returns what
    /// it had to do.
    pub async fn ensure_up(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.postgres_answers().await {
            notes.push("PostgreSQL was down: starting it".to_owned());
            let args = [
                "--skip-systemctl-redirect",
                &self.pg_version,
                "main",
                "start",
            ];
            if let Err(error) = self.run("pg_ctlcluster", &args).await {
                notes.push(format!("  {error:#}"));
            }
            if let Err(error) = self.wait_postgres(Duration::from_secs(60)).await {
                notes.push(format!("  {error:#}"));
            }
        }
        if !self.rabbitmq_answers().await {
            notes.push("RabbitMQ was down: starting it".to_owned());
            // The node is normally still running with its app stopped; if
            // the node itself is gone, boot it.
            if self.start_rabbitmq().await.is_err() {
                if let Err(error) = self.run("rabbitmq-server", &["-detached"]).await {
                    notes.push(format!("  {error:#}"));
                }
            }
            if let Err(error) = self.wait_rabbitmq(Duration::from_secs(60)).await {
                notes.push(format!("  {error:#}"));
            }
        }
        notes
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        run_logged(program, args, &self.log).await
    }
}

/// Runs `program args` in a session of its own (see the module's comment),
/// its output appended to `log`, failing if it fails or takes longer than
/// [`COMMAND_BOUND`].
pub async fn run_logged(program: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let line = format!("{program} {}", args.join(" "));
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    let status = tokio::time::timeout(COMMAND_BOUND, child.wait())
        .await
        .with_context(|| format!("`{line}` did not finish within {COMMAND_BOUND:?}"))??;
    if !status.success() {
        bail!("`{line}` failed ({status}); see {}", log.display());
    }
    Ok(())
}

/// Whether `url` (one RabbitMQ node) accepts an AMQP connection now.
pub async fn rabbitmq_answers(url: &str) -> bool {
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
    )
    .await;
    match attempt {
        Ok(Ok(connection)) => {
            connection.close(200, "probe".into()).await.ok();
            true
        }
        _ => false,
    }
}

/// Polls `answers` every 200 ms until it is true, at most `bound`.
pub async fn wait_until<F, Fut>(what: &str, bound: Duration, mut answers: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    loop {
        if answers().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} did not answer within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
