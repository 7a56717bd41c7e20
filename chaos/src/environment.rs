//! What one run owns on the shared servers: four databases and an AMQP
//! prefix, all named after the run id so that runs (and the tests running
//! beside them) never collide, and so that a kept run is easy to find.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::Context;
use saga_shared::broker_users::worker_users;
use saga_shared::config::url_as;
use saga_shared::database::primary_connection;
use saga_shared::queue_policies::Management;
use saga_shared::topology::Topology;
use secrecy::ExposeSecret;
use sqlx::{Connection, PgConnection};

/// The services with a database, in the order they are created.
pub const SERVICES: [&str; 4] = ["orchestrator", "inventory", "tax", "payment"];

#[derive(Debug, Clone)]
pub struct Environment {
    admin_url: String,
    amqp_url: String,
    management_url: Option<String>,
    database_prefix: String,
    pub amqp_prefix: String,
}

/// Each service's own least-privilege RabbitMQ user for one run, as
/// `orchestrator broker-users` makes them in production: the run's processes
/// connect as these, so a worker that needs more than its grant fails here.
pub struct ServiceUsers {
    /// The AMQP URL (with its password) of each service, by name.
    urls: HashMap<&'static str, String>,
    /// The orchestrator's WORKER_USERS.
    pub worker_users: String,
}

impl ServiceUsers {
    /// The AMQP URL `service` connects with.
    pub fn url(&self, service: &str) -> Option<&str> {
        self.urls.get(service).map(String::as_str)
    }
}

impl Environment {
    /// `management_url`: RABBITMQ_MANAGEMENT_URL, when it cannot be told
    /// from the AMQP URL (a cluster's nodes on other ports).
    pub fn new(
        run_id: &str,
        admin_url: &str,
        amqp_url: &str,
        management_url: Option<&str>,
    ) -> Environment {
        Environment {
            admin_url: admin_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            management_url: management_url.map(str::to_owned),
            database_prefix: format!("chaos_{run_id}_"),
            amqp_prefix: format!("chaos_{run_id}."),
        }
    }

    pub fn database_name(&self, service: &str) -> String {
        format!("{}{service}", self.database_prefix)
    }

    /// The admin URL with its database replaced by this run's one for
    /// `service`: every host of it, for services that follow the primary.
    pub fn database_url(&self, service: &str) -> String {
        saga_shared::database::with_database(&self.admin_url, &self.database_name(service))
    }

    /// [`Environment::database_url`] on the host that is the primary now:
    /// for what connects once, after the chaos (the checks, the auditor).
    pub async fn primary_database_url(&self, service: &str) -> anyhow::Result<String> {
        let (host, connection) = primary_connection(&self.database_url(service))
            .await
            .with_context(|| format!("no PostgreSQL primary answers for the {service} database"))?;
        connection.close().await.ok();
        Ok(host)
    }

    pub fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    /// RABBITMQ_MANAGEMENT_URL as given (the services derive it from
    /// their AMQP_URL when it is not).
    pub fn management_url(&self) -> Option<&str> {
        self.management_url.as_deref()
    }

    /// The RabbitMQ management API as AMQP_URL's (administrator) user.
    pub fn management(&self) -> anyhow::Result<Management> {
        Management::new(&self.amqp_url, self.management_url.as_deref())
            .context("cannot tell RabbitMQ's management API (set RABBITMQ_MANAGEMENT_URL)")
    }

    /// The user names are the AMQP prefix without its dot, as
    /// `scripts/run` names its own.
    fn users_base(&self) -> &str {
        self.amqp_prefix.trim_end_matches('.')
    }

    /// Creates each service's own user and declares the topology as the
    /// administrator (a worker's user may not declare it). Releases from
    /// before per-service users (an upgrade run's first fleet) cannot run
    /// on them: those runs keep AMQP_URL's user.
    pub async fn create_service_users(&self) -> anyhow::Result<ServiceUsers> {
        let management = self.management()?;
        let topology = Topology::new(&self.amqp_prefix);
        let users = management
            .ensure_users(&topology, self.users_base(), true, &Default::default())
            .await
            .context("cannot create the services' RabbitMQ users (is the management plugin on? scripts/services-up enables it)")?;
        let mut urls = HashMap::new();
        for user in users {
            let password = user
                .password
                .context("a run's RabbitMQ users get new passwords")?;
            urls.insert(
                user.role.as_str(),
                url_as(&self.amqp_url, &user.name, password.expose_secret()),
            );
        }
        let connection = self.broker().await?;
        topology
            .declare(&connection)
            .await
            .context("cannot declare the run's broker topology")?;
        connection.close(200, "topology declared".into()).await.ok();
        Ok(ServiceUsers {
            urls,
            worker_users: worker_users(self.users_base()),
        })
    }

    async fn admin(&self) -> anyhow::Result<PgConnection> {
        let (_, connection) = primary_connection(&self.admin_url)
            .await
            .context("cannot connect to a PostgreSQL primary with PG_ADMIN_URL")?;
        Ok(connection)
    }

    /// A connection to the first node of `AMQP_URL` that answers.
    async fn broker(&self) -> anyhow::Result<lapin::Connection> {
        let mut last = None;
        for node in self.amqp_url.split(',') {
            match lapin::Connection::connect(node, lapin::ConnectionProperties::default()).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one node")).context("no RabbitMQ node of AMQP_URL answers")
    }

    pub async fn create_databases(&self) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        self.each_database(&mut admin, "create", |name| {
            format!("CREATE DATABASE \"{name}\"")
        })
        .await?;
        admin.close().await.ok();
        Ok(())
    }

    /// Runs `statement` (made from the database's name) for every service's
    /// database, in [`SERVICES`] order; `verb` says what failed.
    async fn each_database(
        &self,
        admin: &mut PgConnection,
        verb: &str,
        statement: impl Fn(&str) -> String,
    ) -> anyhow::Result<()> {
        for service in SERVICES {
            let name = self.database_name(service);
            sqlx::query(&statement(&name))
                .execute(&mut *admin)
                .await
                .with_context(|| format!("cannot {verb} database {name}"))?;
        }
        Ok(())
    }

    /// Runs `SERVICE SUBCOMMAND ARGS...` (the binary `program`) against this
    /// run's database and broker, with all it prints written to `log`.
    pub async fn run_service(
        &self,
        program: PathBuf,
        service: &str,
        subcommand: &str,
        args: &[&Path],
        log: &Path,
    ) -> anyhow::Result<ExitStatus> {
        let output = std::fs::File::create(log)?;
        tokio::process::Command::new(program)
            .arg(subcommand)
            .args(args)
            .env("DATABASE_URL", self.database_url(service))
            .env("AMQP_URL", self.amqp_url())
            .env("AMQP_PREFIX", &self.amqp_prefix)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .status()
            .await
            .with_context(|| format!("cannot run `{service} {subcommand}`"))
    }

    /// Drops the databases (ending any session left on them) and deletes the
    /// queues and exchanges: quorum queues keep state on the broker for ever.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let mut admin = self
            .admin()
            .await
            .context("cannot drop the run's databases")?;
        self.each_database(&mut admin, "drop", |name| {
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
        })
        .await?;
        admin.close().await.ok();

        let connection = self
            .broker()
            .await
            .context("cannot delete the run's queues")?;
        let channel = connection.create_channel().await?;
        Topology::new(&self.amqp_prefix)
            .delete(&channel)
            .await
            .context("cannot delete the run's queues and exchanges")?;
        connection.close(200, "chaos run done".into()).await.ok();
        // The services created the run's queue policies and the run its
        // users; a broker without the management API has neither.
        if let Ok(management) = self.management() {
            let _ = management.remove(&Topology::new(&self.amqp_prefix)).await;
            let _ = management.remove_users(self.users_base()).await;
        }
        Ok(())
    }
}
