use saga_shared::messages::{
    reason, CalculateTax, Command, LineTax, Outcome, StepResult, TaxCalculated,
};
use saga_shared::money::apply_basis_points;
use saga_shared::{Envelope, WorkerKind};
use sqlx::PgConnection;

use super::rates::{self, Destination};
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

/// Tax per line, each rounded half up on its own; the total is their sum.
async fn calculate(
    conn: &mut PgConnection,
    request: &CalculateTax,
) -> Result<Outcome, sqlx::Error> {
    if let Some(problem) = invalid_amounts(request) {
        return Ok(Outcome::rejected(reason::INVALID_COMMAND, problem));
    }
    let destination = Destination::new(&request.ship_to.country, &request.ship_to.region);
    let mut categories: Vec<&str> = request
        .lines
        .iter()
        .map(|l| l.tax_category.as_str())
        .collect();
    categories.sort_unstable();
    categories.dedup();
    let rates = rates::for_destination(conn, &destination, &categories).await?;

    let missing: Vec<String> = categories
        .iter()
        .filter(|c| !rates.contains_key(**c))
        .map(|c| format!("`{c}`"))
        .collect();
    if !missing.is_empty() {
        let fallback = if destination.region.is_empty() {
            String::new()
        } else {
            format!(" (nor a default for {})", destination.country)
        };
        return Ok(Outcome::rejected(
            reason::NO_TAX_RATE,
            format!(
                "no tax rate for category {} in {destination}{fallback}",
                missing.join(", ")
            ),
        ));
    }

    let lines: Vec<LineTax> = request
        .lines
        .iter()
        .map(|line| {
            let rate_bp = rates[&line.tax_category];
            LineTax {
                sku: line.sku.clone(),
                rate_bp,
                tax_cents: apply_basis_points(line.amount_cents(), rate_bp),
            }
        })
        .collect();
    // Each line's tax is at most its amount, and the amounts' sum fits.
    let tax_cents = lines.iter().map(|l| l.tax_cents).sum();
    Ok(Outcome::Ok(StepResult::TaxCalculated(TaxCalculated {
        lines,
        tax_cents,
    })))
}

/// Amounts that no checkout has: negative prices, or a total that does not
/// fit in 64 bits.
fn invalid_amounts(request: &CalculateTax) -> Option<String> {
    let mut total: i64 = 0;
    for line in &request.lines {
        if line.unit_price_cents < 0 {
            return Some(format!(
                "{}: unit price {} is negative",
                line.sku, line.unit_price_cents
            ));
        }
        let amount = line.unit_price_cents.checked_mul(i64::from(line.quantity));
        match amount.and_then(|a| total.checked_add(a)) {
            Some(sum) => total = sum,
            None => return Some(format!("{}: the amounts are too large", line.sku)),
        }
    }
    None
}
