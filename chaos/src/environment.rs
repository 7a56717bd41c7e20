//! What one run owns on the shared servers: four databases and an AMQP
//! prefix, all named after the run id so that runs (and the tests running
//! beside them) never collide, and so that a kept run is easy to find.

use anyhow::Context;
use saga_shared::database::primary_connection;
use saga_shared::topology::Topology;
use sqlx::{Connection, PgConnection};

/// The services with a database, in the order they are created.
pub const SERVICES: [&str; 4] = ["orchestrator", "inventory", "tax", "payment"];

#[derive(Debug, Clone)]
pub struct Environment {
    admin_url: String,
    amqp_url: String,
    database_prefix: String,
    pub amqp_prefix: String,
}

impl Environment {
    pub fn new(run_id: &str, admin_url: &str, amqp_url: &str) -> Environment {
        Environment {
            admin_url: admin_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
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
        for service in SERVICES {
            let name = self.database_name(service);
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await
                .with_context(|| format!("cannot create database {name}"))?;
        }
        admin.close().await.ok();
        Ok(())
    }

    /// Drops the databases (ending any session left on them) and deletes the
    /// queues and exchanges: quorum queues keep state on the broker for ever.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let mut admin = self
            .admin()
            .await
            .context("cannot drop the run's databases")?;
        for service in SERVICES {
            let name = self.database_name(service);
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
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
        // The services created the run's queue policies; a broker without
        // the management API has none to remove.
        if let Ok(management) = saga_shared::queue_policies::Management::new(&self.amqp_url, None) {
            let _ = management.remove(&Topology::new(&self.amqp_prefix)).await;
        }
        Ok(())
    }
}
