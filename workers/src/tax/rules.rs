//! What a tax calculation answers, decided without storage: which rates a
//! request needs, and, given the rates found at its destination, the tax of
//! each line and their total, or why there is none.

use std::collections::HashMap;

use saga_protocol::messages::{reason, CalculateTax, LineTax, Outcome, StepResult, TaxCalculated};
use saga_protocol::values::{Cents, Sku};

use super::rates::Destination;

/// The tax categories whose rates `request` needs, each once, in order; or
/// the refusal of amounts no checkout has, decided before anything is read.
pub fn needed_categories(request: &CalculateTax) -> Result<Vec<&str>, Outcome> {
    if let Some(problem) = invalid_amounts(request) {
        return Err(Outcome::rejected(reason::INVALID_COMMAND, problem));
    }
    Ok(categories(request))
}

/// Tax per line, each rounded half up on its own; the total is their sum.
/// `rates` are the rates found at `destination` by category, in basis
/// points; a category without one refuses the whole request.
pub fn answer(
    request: &CalculateTax,
    destination: &Destination,
    rates: &HashMap<String, u32>,
) -> Outcome {
    let missing: Vec<String> = categories(request)
        .into_iter()
        .filter(|c| !rates.contains_key(*c))
        .map(|c| format!("`{c}`"))
        .collect();
    if !missing.is_empty() {
        let fallback = if destination.region.is_empty() {
            String::new()
        } else {
            format!(" (nor a default for {})", destination.country)
        };
        return Outcome::rejected(
            reason::NO_TAX_RATE,
            format!(
                "no tax rate for category {} in {destination}{fallback}",
                missing.join(", ")
            ),
        );
    }

    let mut lines = Vec::with_capacity(request.lines.len());
    let mut tax_cents = Cents::ZERO;
    for line in &request.lines {
        let rate_bp = rates[&line.tax_category];
        // With amounts that passed `needed_categories` and rates of at most
        // 100% neither check can fail: each line's tax is at most its
        // amount, and the amounts' sum fits. They refuse rather than wrap
        // should either ever not hold.
        let tax = line
            .amount_cents()
            .and_then(|amount| amount.apply_basis_points(rate_bp))
            .and_then(|tax| tax_cents.checked_add(tax).map(|sum| (tax, sum)));
        let Some((tax, sum)) = tax else {
            return Outcome::rejected(reason::INVALID_COMMAND, too_large(&line.sku));
        };
        tax_cents = sum;
        lines.push(LineTax {
            sku: line.sku.clone(),
            rate_bp,
            tax_cents: tax,
        });
    }
    Outcome::Ok(StepResult::TaxCalculated(TaxCalculated {
        lines,
        tax_cents,
    }))
}

/// Each category of the request's lines once, sorted: the order the
/// refusal names the missing ones in.
fn categories(request: &CalculateTax) -> Vec<&str> {
    let mut categories: Vec<&str> = request
        .lines
        .iter()
        .map(|l| l.tax_category.as_str())
        .collect();
    categories.sort_unstable();
    categories.dedup();
    categories
}

/// Amounts that no checkout has: negative prices, or a total that does not
/// fit in 64 bits.
fn invalid_amounts(request: &CalculateTax) -> Option<String> {
    let mut total = Cents::ZERO;
    for line in &request.lines {
        if line.unit_price_cents < Cents::ZERO {
            return Some(format!(
                "{}: unit price {} is negative",
                line.sku, line.unit_price_cents
            ));
        }
        match line.amount_cents().and_then(|a| total.checked_add(a)) {
            Some(sum) => total = sum,
            None => return Some(too_large(&line.sku)),
        }
    }
    None
}

fn too_large(sku: &Sku) -> String {
    format!("{sku}: the amounts are too large")
}

#[cfg(test)]
mod tests {
    use saga_protocol::messages::{PricedLine, ShipTo};
    use saga_protocol::values::Quantity;

    use super::*;

    fn line(sku: &str, quantity: u32, unit_price_cents: i64, category: &str) -> PricedLine {
        PricedLine {
            sku: sku.parse().unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price_cents: Cents::new(unit_price_cents),
            tax_category: category.into(),
        }
    }

    fn request(lines: Vec<PricedLine>) -> CalculateTax {
        CalculateTax {
            ship_to: ShipTo {
                country: "US".into(),
                region: "CA".into(),
            },
            currency: "USD".parse().unwrap(),
            lines,
        }
    }

    /// A request of one unit at 100 cents per category, the SKUs A, B, C...
    fn one_each_in(categories: &[&str]) -> CalculateTax {
        request(
            categories
                .iter()
                .zip('A'..)
                .map(|(category, sku)| line(&sku.to_string(), 1, 100, category))
                .collect(),
        )
    }

    fn rates(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(c, r)| (c.to_string(), *r)).collect()
    }

    fn taxed_at(lines: Vec<PricedLine>, pairs: &[(&str, u32)]) -> TaxCalculated {
        let request = request(lines);
        needed_categories(&request).expect("valid amounts");
        match answer(&request, &Destination::new("us", "ca"), &rates(pairs)) {
            Outcome::Ok(StepResult::TaxCalculated(taxed)) => taxed,
            other => panic!("expected tax, got {other:?}"),
        }
    }

    fn refusal(outcome: Outcome) -> (String, String) {
        match outcome {
            Outcome::Rejected { reason, detail } => (reason, detail),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn taxes(taxed: &TaxCalculated) -> Vec<(&str, u32, i64)> {
        taxed
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.rate_bp, l.tax_cents.get()))
            .collect()
    }

    #[test]
    fn each_line_is_rounded_half_up() {
        let taxed = taxed_at(
            vec![
                line("HALF", 1, 1_000, "a"),  // 72.5 -> 73
                line("BELOW", 1, 1_000, "b"), // 72.4 -> 72
                line("ODD", 1, 999, "c"),     // 82.4175 -> 82
                line("ABOVE", 1, 30, "d"),    // 1.5 -> 2
            ],
            &[("a", 725), ("b", 724), ("c", 825), ("d", 500)],
        );
        assert_eq!(
            taxes(&taxed),
            vec![
                ("HALF", 725, 73),
                ("BELOW", 724, 72),
                ("ODD", 825, 82),
                ("ABOVE", 500, 2)
            ]
        );
        assert_eq!(taxed.tax_cents, 73 + 72 + 82 + 2);
    }

    #[test]
    fn rounding_is_per_line_not_on_the_total() {
        // Each 10 cents at 5% is 0.5, rounded up to 1; the 20 cents of the
        // total at 5% would be 1.
        let taxed = taxed_at(
            vec![line("A", 1, 10, "general"), line("B", 1, 10, "general")],
            &[("general", 500)],
        );
        assert_eq!(taxed.tax_cents, 2);
    }

    #[test]
    fn several_lines_keep_the_requests_order_and_multiply_by_quantity() {
        let taxed = taxed_at(
            vec![
                line("SHIRT", 3, 2_000, "general"),
                line("BREAD", 2, 350, "food"),
                line("SHIRT", 1, 2_000, "general"),
            ],
            &[("general", 725), ("food", 0)],
        );
        assert_eq!(
            taxes(&taxed),
            vec![("SHIRT", 725, 435), ("BREAD", 0, 0), ("SHIRT", 725, 145)]
        );
        assert_eq!(taxed.tax_cents, 580);
    }

    #[test]
    fn a_zero_rate_or_a_zero_price_is_no_tax() {
        let taxed = taxed_at(
            vec![line("BREAD", 4, 350, "food"), line("FREE", 1, 0, "general")],
            &[("food", 0), ("general", 1_900)],
        );
        assert_eq!(taxes(&taxed), vec![("BREAD", 0, 0), ("FREE", 1_900, 0)]);
        assert_eq!(taxed.tax_cents, 0);
    }

    #[test]
    fn no_lines_is_no_tax() {
        let taxed = taxed_at(vec![], &[]);
        assert!(taxed.lines.is_empty());
        assert_eq!(taxed.tax_cents, 0);
    }

    #[test]
    fn the_whole_amount_at_the_full_rate_fits() {
        let taxed = taxed_at(
            vec![line("A", 1, i64::MAX - 1, "x"), line("B", 1, 1, "x")],
            &[("x", 10_000)],
        );
        assert_eq!(taxed.tax_cents, i64::MAX);
    }

    #[test]
    fn the_categories_to_read_are_each_named_once_in_order() {
        let request = one_each_in(&["general", "food", "general"]);
        assert_eq!(
            needed_categories(&request).unwrap(),
            vec!["food", "general"]
        );
    }

    #[test]
    fn a_category_without_a_rate_is_refused_naming_only_the_missing_ones() {
        let request = one_each_in(&["general", "wine", "books", "wine"]);
        let rates = rates(&[("general", 725)]);

        let (why, detail) = refusal(answer(&request, &Destination::new("us", "ny"), &rates));
        assert_eq!(why, reason::NO_TAX_RATE);
        assert_eq!(
            detail,
            "no tax rate for category `books`, `wine` in US-NY (nor a default for US)"
        );

        let (_, detail) = refusal(answer(&request, &Destination::new("fr", ""), &rates));
        assert_eq!(detail, "no tax rate for category `books`, `wine` in FR");
    }

    #[test]
    fn a_negative_price_is_refused_before_any_rate_is_read() {
        let request = request(vec![
            line("OK", 1, 100, "general"),
            line("BAD", 1, -1, "general"),
        ]);
        let (why, detail) = refusal(needed_categories(&request).unwrap_err());
        assert_eq!(why, reason::INVALID_COMMAND);
        assert_eq!(detail, "BAD: unit price -1 is negative");
    }

    #[test]
    fn amounts_that_overflow_are_refused_naming_the_line() {
        let one_line = request(vec![line("HUGE", 2, i64::MAX / 2 + 1, "general")]);
        let (why, detail) = refusal(needed_categories(&one_line).unwrap_err());
        assert_eq!(why, reason::INVALID_COMMAND);
        assert_eq!(detail, "HUGE: the amounts are too large");

        let in_sum = request(vec![
            line("A", 1, i64::MAX, "general"),
            line("B", 1, 1, "general"),
        ]);
        let (_, detail) = refusal(needed_categories(&in_sum).unwrap_err());
        assert_eq!(detail, "B: the amounts are too large");
    }

    #[test]
    fn a_tax_total_that_does_not_fit_is_refused_not_wrapped() {
        // Only a rate above 100%, which no stored rate is, could do this.
        let request = request(vec![
            line("A", 1, i64::MAX / 2, "x"),
            line("B", 1, i64::MAX / 2, "x"),
        ]);
        needed_categories(&request).expect("the amounts fit");
        let outcome = answer(
            &request,
            &Destination::new("us", ""),
            &rates(&[("x", 20_000)]),
        );
        let (why, detail) = refusal(outcome);
        assert_eq!(why, reason::INVALID_COMMAND);
        assert_eq!(detail, "B: the amounts are too large");
    }
}
