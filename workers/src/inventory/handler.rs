use std::sync::Arc;

use saga_shared::messages::{Command, Outcome};
use saga_shared::{Envelope, WorkerKind};
use sqlx::PgConnection;

use super::prices::Prices;
use super::reservation;
use crate::runtime::{not_handled, AtOnce, Handler};

/// Reserves and releases stock, keyed by saga id. Clones share what they
/// remember of prices.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    prices: Arc<Prices>,
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Handler for Inventory {
    const KIND: WorkerKind = WorkerKind::Inventory;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        match &command.payload {
            Command::Reserve(request) => {
                reservation::reserve(conn, &self.prices, command.saga_id, request).await
            }
            Command::Release(_) => reservation::release(conn, command.saga_id).await,
            other => Ok(not_handled(Self::KIND, other)),
        }
    }

    async fn at_once(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Option<AtOnce>, sqlx::Error> {
        let Command::Reserve(request) = &command.payload else {
            return Ok(None);
        };
        let reply = reservation::reserve_at_once(conn, &self.prices, command, request).await?;
        Ok(reply.map(AtOnce::Replied))
    }
}
