//! A fresh database per test, dropped when the test ends.

use sqlx::{PgConnection, PgPool};

use crate::{admin_database_url, random_suffix};

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
        let url = saga_shared::database::with_database(admin, &name);
        let pool = saga_shared::database::connect_with_backoff(
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
    saga_shared::database::primary_connection(admin)
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
