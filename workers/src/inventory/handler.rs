use saga_shared::messages::{Command, Outcome};
use saga_shared::{Envelope, WorkerKind};
use sqlx::PgConnection;

use super::reservation;
use crate::runtime::{not_handled, Handler};

/// Reserves and releases stock, keyed by saga id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory;

impl Handler for Inventory {
    const KIND: WorkerKind = WorkerKind::Inventory;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        match &command.payload {
            Command::Reserve(request) => reservation::reserve(conn, command.saga_id, request).await,
            Command::Release(_) => reservation::release(conn, command.saga_id).await,
            other => Ok(not_handled(Self::KIND, other)),
        }
    }
}
