//! One reservation of stock per saga. The saga's reservation row is its key:
//! it is claimed (created, or locked) before any product row, so commands
//! for one saga serialize on it and never both hold stock, and product rows
//! are always locked in SKU order, so two sagas never deadlock.

use saga_protocol::messages::{
    reason, Command, Outcome, Released, ReserveStock, Reserved, StepResult,
};
use saga_protocol::values::Sku;
use saga_protocol::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

use super::prices::Prices;
use super::rules::{self, Verdict};
use super::store::{self, Claim, Status};
use crate::inbox;

/// A first reserve of a saga with stock enough, in one statement with its
/// inbox claim and reply: the reply body. `None` when that is not the case
/// (or a price remembered is stale), and nothing was written: the general
/// path answers. Prices come from `prices`, read once per SKU.
pub async fn reserve_at_once(
    conn: &mut PgConnection,
    prices: &Prices,
    command: &Envelope<Command>,
    request: &ReserveStock,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    if rules::invalid_lines(&request.lines).is_some() {
        return Ok(None);
    }
    let wanted = rules::wanted(&request.lines);
    let skus: Vec<&Sku> = wanted.keys().copied().collect();
    let known = match prices.of(&skus) {
        Some(known) => known,
        None => {
            let read = store::stock(conn, &skus).await?;
            prices.remember(&read);
            read
        }
    };
    let Some(take) = rules::take_if_stocked(&request.lines, &known) else {
        return Ok(None);
    };
    let reply = inbox::body(&command.reply(reserved(&take)));
    Ok(store::reserve_at_once(conn, command, &take, &reply)
        .await?
        .then_some(reply))
}

/// Reserves every line's stock, or none of it. The prices read on the way
/// are remembered in `prices` for the one-statement path.
pub async fn reserve(
    conn: &mut PgConnection,
    prices: &Prices,
    saga_id: Uuid,
    request: &ReserveStock,
) -> Result<Outcome, sqlx::Error> {
    if let Some(problem) = rules::invalid_lines(&request.lines) {
        return Ok(Outcome::rejected(reason::INVALID_COMMAND, problem));
    }
    let wanted = rules::wanted(&request.lines);
    let skus: Vec<&Sku> = wanted.keys().copied().collect();
    let stock = match store::claim_reading_stock(conn, saga_id, &skus).await? {
        (Claim::Created, stock) => stock,
        (Claim::Existing(Status::Active), _) => {
            let reserved = store::recorded(conn, saga_id).await?;
            return Ok(Outcome::Ok(StepResult::Reserved(reserved)));
        }
        (Claim::Existing(Status::Released), _) => {
            return Ok(Outcome::rejected(
                reason::ALREADY_COMPENSATED,
                format!("the stock of saga {saga_id} was already released; nothing is reserved"),
            ));
        }
        (Claim::Existing(Status::Refused), _) => return store::refusal(conn, saga_id).await,
    };
    prices.remember(&stock);
    let mut verdict = rules::decide(&request.lines, &stock);
    if let Verdict::Take(take) = &verdict {
        if store::take(conn, saga_id, take).await? {
            return Ok(reserved(take));
        }
        // The stock moved between the read and the write: decide again on
        // the rows as they are now, locked, so the second write holds.
        let stock = store::locked_stock(conn, &skus).await?;
        prices.remember(&stock);
        verdict = rules::decide(&request.lines, &stock);
        if let Verdict::Take(take) = &verdict {
            if store::take(conn, saga_id, take).await? {
                return Ok(reserved(take));
            }
            return Err(sqlx::Error::Protocol(format!(
                "the stock of saga {saga_id}'s lines changed under this transaction's lock"
            )));
        }
    }
    let Verdict::Refuse { reason, detail } = verdict else {
        unreachable!("every take returned above");
    };
    // A refused reserve holds nothing, and its row stays as the saga's
    // answer: a late earlier attempt must not reserve once stock is back.
    store::refuse(conn, saga_id, reason, &detail).await?;
    Ok(Outcome::rejected(reason, detail))
}

fn reserved(take: &rules::Take) -> Outcome {
    Outcome::Ok(StepResult::Reserved(Reserved {
        currency: take.currency.clone(),
        lines: take.lines.clone(),
    }))
}

/// Gives the saga's stock back. A no-op when nothing is held; when no
/// reservation exists yet, it leaves a `released` tombstone so that a late
/// reserve holds nothing.
pub async fn release(conn: &mut PgConnection, saga_id: Uuid) -> Result<Outcome, sqlx::Error> {
    let released = match store::claim(conn, saga_id, Status::Released).await? {
        Claim::Created | Claim::Existing(Status::Released | Status::Refused) => false,
        Claim::Existing(Status::Active) => {
            store::give_back(conn, saga_id).await?;
            true
        }
    };
    Ok(Outcome::Ok(StepResult::Released(Released { released })))
}
