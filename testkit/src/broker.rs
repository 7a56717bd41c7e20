//! A fresh broker prefix per test: its topology, its service users and a
//! copy of its replies, all removed when the test ends.

use saga_shared::topology::Topology;

use crate::{amqp_url, clean_up};

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
            if let Ok(management) = saga_shared::queue_policies::Management::new(&amqp_url(), None)
            {
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
    urls: std::collections::HashMap<saga_shared::broker_users::Role, String>,
    /// The orchestrator's WORKER_USERS for these users.
    pub worker_users: String,
}

impl BrokerUsers {
    /// Users for `prefix`, reached at `amqp_url` (the test's broker URL,
    /// whose credentials are replaced).
    pub async fn create(prefix: &str, amqp_url: &str) -> BrokerUsers {
        use secrecy::ExposeSecret;
        let management = saga_shared::queue_policies::Management::new(&self::amqp_url(), None)
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
                saga_shared::config::url_as(amqp_url, &user.name, password.expose_secret()),
            );
        }
        BrokerUsers {
            worker_users: saga_shared::broker_users::worker_users(&base),
            base,
            urls,
        }
    }

    /// The AMQP URL `role`'s service connects with.
    pub fn url(&self, role: saga_shared::broker_users::Role) -> String {
        self.urls[&role].clone()
    }

    /// The user name of `role`.
    pub fn user(&self, role: saga_shared::broker_users::Role) -> String {
        saga_shared::broker_users::user_name(&self.base, role)
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let base = self.base.clone();
        clean_up(async move {
            if let Ok(management) = saga_shared::queue_policies::Management::new(&amqp_url(), None)
            {
                let _ = management.remove_users(&base).await;
            }
        });
    }
}

/// A test-owned queue that receives a copy of every reply of `broker`'s
/// prefix (beside the orchestrator's own), consumed without acks as
/// `consumer_tag`: what the workers answered, as the orchestrator got it.
pub async fn reply_copies(
    broker: &saga_shared::broker::Broker,
    consumer_tag: &str,
) -> lapin::Consumer {
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
            saga_shared::topology::REPLY_ROUTING_KEY.into(),
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
