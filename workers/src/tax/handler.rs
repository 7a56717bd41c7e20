use saga_protocol::messages::{CalculateTax, Command, Outcome};
use saga_protocol::{Envelope, WorkerKind};
use sqlx::PgConnection;

use super::rates::{self, Destination};
use super::rules;
use crate::runtime::{not_handled, Handler};

/// Calculates tax; it changes nothing, so a repeat gives the same answer
/// for as long as the rates stay the same.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tax;

impl Handler for Tax {
    const KIND: WorkerKind = WorkerKind::Tax;
    const READS_ONLY: bool = true;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        match &command.payload {
            Command::CalculateTax(request) => calculate(conn, request).await,
            other => Ok(not_handled(Self::KIND, other)),
        }
    }
}

/// Only the rates come from storage: amounts the rules refuse cost no read.
async fn calculate(
    conn: &mut PgConnection,
    request: &CalculateTax,
) -> Result<Outcome, sqlx::Error> {
    let categories = match rules::needed_categories(request) {
        Ok(categories) => categories,
        Err(refused) => return Ok(refused),
    };
    let destination = Destination::new(&request.ship_to.country, &request.ship_to.region);
    let rates = rates::for_destination(conn, &destination, &categories).await?;
    Ok(rules::answer(request, &destination, &rates))
}
