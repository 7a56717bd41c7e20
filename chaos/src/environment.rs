//! What one run owns on the shared servers: four databases and an AMQP
//! prefix, all named after the run id so that runs (and the tests running
//! beside them) never collide, and so that a kept run is easy to find.

use anyhow::Context;
use reqwest::Url;
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

    /// The admin URL with its database replaced by this run's one for `service`.
    pub fn database_url(&self, service: &str) -> String {
        let mut url = Url::parse(&self.admin_url).expect("checked at start");
        url.set_path(&format!("/{}", self.database_name(service)));
        url.into()
    }

    pub fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    pub async fn create_databases(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("cannot connect to PostgreSQL with PG_ADMIN_URL")?;
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
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("cannot connect to PostgreSQL to drop the run's databases")?;
        for service in SERVICES {
            let name = self.database_name(service);
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        admin.close().await.ok();

        let connection =
            lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
                .await
                .context("cannot connect to RabbitMQ to delete the run's queues")?;
        let channel = connection.create_channel().await?;
        Topology::new(&self.amqp_prefix)
            .delete(&channel)
            .await
            .context("cannot delete the run's queues and exchanges")?;
        connection.close(200, "chaos run done".into()).await.ok();
        Ok(())
    }
}
