use std::sync::LazyLock;

use saga_protocol::messages::{Command, Outcome};
use saga_protocol::{Envelope, WorkerKind};
use sqlx::PgConnection;

use super::prices::Prices;
use super::reservation;
use crate::runtime::{not_handled, AtOnce, Handler};

/// Reserves and releases stock, keyed by saga id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory;

/// The prices this process has read. A worker process serves one database,
/// so one memory per process is one per catalogue; where a process serves
/// several (tests), a price remembered from another costs a fallback to
/// the general path, never a wrong answer (see [`Prices`]).
static PRICES: LazyLock<Prices> = LazyLock::new(Prices::default);

impl Handler for Inventory {
    const KIND: WorkerKind = WorkerKind::Inventory;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        match &command.payload {
            Command::Reserve(request) => {
                reservation::reserve(conn, &PRICES, command.saga_id, request).await
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
        let reply = reservation::reserve_at_once(conn, &PRICES, command, request).await?;
        Ok(reply.map(AtOnce::Replied))
    }
}
