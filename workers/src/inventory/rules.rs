//! What a reserve takes, decided without storage: given the lines asked
//! for and the stock of their SKUs, the stock to take and the prices to
//! answer with, or why nothing is taken.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use saga_protocol::messages::{reason, LineRequest, PricedLine};
use saga_protocol::values::{Cents, Currency, Sku};

/// One product's stock and price, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    pub sku: Sku,
    pub available: i32,
    pub unit_price_cents: Cents,
    pub currency: Currency,
    pub tax_category: String,
}

/// Everything a reserve takes, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Take(Take),
    Refuse {
        reason: &'static str,
        detail: String,
    },
}

/// The stock to take and what the reserve answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// Each SKU once, in SKU order (the order rows are locked in), with the
    /// sum of its lines' quantities.
    pub skus: Vec<Sku>,
    /// Summed over lines, so not a line's `Quantity`: an `int4` like the
    /// stock it is checked against.
    pub quantities: Vec<i32>,
    /// The price and category each SKU was decided at: the write takes
    /// stock only if they still hold.
    pub unit_prices_cents: Vec<Cents>,
    pub tax_categories: Vec<String>,
    pub currency: Currency,
    /// The request's lines in its order, priced.
    pub lines: Vec<PricedLine>,
}

const NO_LINES: &str = "a reservation needs at least one line";

/// Why lines can never be reserved, whatever the stock. A line of zero
/// units or without a SKU is not among them: such a command does not
/// decode (its `Quantity` or `Sku` is invalid), so it never gets here.
pub fn invalid_lines(lines: &[LineRequest]) -> Option<String> {
    lines.is_empty().then(|| NO_LINES.to_owned())
}

/// The SKUs of `lines`, each once, in SKU order, with their summed
/// quantity: a SKU on several lines is checked against the sum.
pub fn wanted(lines: &[LineRequest]) -> BTreeMap<&Sku, i64> {
    let mut wanted: BTreeMap<&Sku, i64> = BTreeMap::new();
    for line in lines {
        *wanted.entry(&line.sku).or_default() += i64::from(line.quantity.get());
    }
    wanted
}

/// What to take for valid `lines` given the `stock` of their SKUs (a SKU
/// missing from it is unknown).
pub fn decide(lines: &[LineRequest], stock: &[Stock]) -> Verdict {
    let wanted = wanted(lines);
    let products: HashMap<&Sku, &Stock> = stock.iter().map(|s| (&s.sku, s)).collect();

    let unknown: Vec<&str> = wanted
        .keys()
        .filter(|sku| !products.contains_key(*sku))
        .map(|sku| sku.as_str())
        .collect();
    if !unknown.is_empty() {
        return Verdict::Refuse {
            reason: reason::UNKNOWN_SKU,
            detail: format!("unknown SKU: {}", unknown.join(", ")),
        };
    }

    let currencies: BTreeSet<&Currency> =
        wanted.keys().map(|sku| &products[sku].currency).collect();
    if currencies.len() > 1 {
        let priced: Vec<String> = wanted
            .keys()
            .map(|sku| format!("{sku} in {}", products[sku].currency))
            .collect();
        return Verdict::Refuse {
            reason: reason::CURRENCY_MISMATCH,
            detail: format!(
                "the lines are priced in more than one currency: {}",
                priced.join(", ")
            ),
        };
    }

    let short: Vec<String> = wanted
        .iter()
        .filter_map(|(sku, quantity)| {
            let available = products[sku].available;
            (*quantity > i64::from(available))
                .then(|| format!("{sku} (wanted {quantity}, available {available})"))
        })
        .collect();
    if !short.is_empty() {
        return Verdict::Refuse {
            reason: reason::OUT_OF_STOCK,
            detail: format!("not enough stock for: {}", short.join(", ")),
        };
    }

    // Lines are never empty here (`invalid_lines`), so there is exactly one
    // currency; should that ever not hold, refusing beats inventing one.
    let Some(&currency) = currencies.first() else {
        return Verdict::Refuse {
            reason: reason::INVALID_COMMAND,
            detail: NO_LINES.to_owned(),
        };
    };
    // Every quantity is now at most an `available`, so it fits an integer.
    let (skus, quantities) = wanted
        .iter()
        .map(|(sku, quantity)| ((*sku).clone(), *quantity as i32))
        .unzip();
    Verdict::Take(Take {
        skus,
        quantities,
        unit_prices_cents: wanted
            .keys()
            .map(|s| products[s].unit_price_cents)
            .collect(),
        tax_categories: wanted
            .keys()
            .map(|s| products[s].tax_category.clone())
            .collect(),
        currency: currency.clone(),
        lines: lines
            .iter()
            .map(|line| {
                let product = products[&line.sku];
                PricedLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_cents: product.unit_price_cents,
                    tax_category: product.tax_category.clone(),
                }
            })
            .collect(),
    })
}

/// What [`decide`] would take for valid `lines` if every SKU had enough
/// stock, given the `prices` of their SKUs (their `available` is ignored);
/// `None` when the lines would be refused whatever the stock (an unknown
/// SKU, two currencies, a quantity no row can hold). Whether the stock is
/// there is left to the write, which takes it only if so.
pub fn take_if_stocked(lines: &[LineRequest], prices: &[Stock]) -> Option<Take> {
    let plenty: Vec<Stock> = prices
        .iter()
        .map(|s| Stock {
            available: i32::MAX,
            ..s.clone()
        })
        .collect();
    match decide(lines, &plenty) {
        Verdict::Take(take) => Some(take),
        Verdict::Refuse { .. } => None,
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn line(sku: &str, quantity: u32) -> LineRequest {
        LineRequest::parse(sku, quantity).unwrap()
    }

    fn stock(sku: &str, available: i32, price: i64, currency: &str) -> Stock {
        Stock {
            sku: sku.parse().unwrap(),
            available,
            unit_price_cents: Cents::new(price),
            currency: currency.parse().unwrap(),
            tax_category: "general".into(),
        }
    }

    fn refusal(verdict: Verdict) -> (&'static str, String) {
        match verdict {
            Verdict::Refuse { reason, detail } => (reason, detail),
            Verdict::Take(take) => panic!("expected a refusal, got {take:?}"),
        }
    }

    #[test]
    fn no_lines_are_invalid() {
        assert!(invalid_lines(&[]).is_some());
        assert_eq!(invalid_lines(&[line("MUG", 1)]), None);
        let (reason, _) = refusal(decide(&[], &[stock("MUG", 5, 850, "USD")]));
        assert_eq!(reason, reason::INVALID_COMMAND);
    }

    /// Each reserve refused as a whole, and what its detail names.
    #[test]
    fn refused_reserves_say_why_naming_what() {
        let refused = [
            (
                vec![line("MUG", 1), line("NOPE", 1)],
                vec![stock("MUG", 5, 850, "USD")],
                reason::UNKNOWN_SKU,
                "NOPE",
            ),
            (
                vec![line("MUG", 1), line("CUP", 1)],
                vec![stock("MUG", 5, 850, "USD"), stock("CUP", 5, 400, "EUR")],
                reason::CURRENCY_MISMATCH,
                "CUP in EUR",
            ),
            (
                vec![line("MUG", 3), line("MUG", 3)],
                vec![stock("MUG", 5, 850, "USD")],
                reason::OUT_OF_STOCK,
                "wanted 6, available 5",
            ),
        ];
        for (lines, stock, why, named) in refused {
            let (reason, detail) = refusal(decide(&lines, &stock));
            assert_eq!(reason, why, "{detail}");
            assert!(detail.contains(named), "{detail}");
        }
    }

    #[test]
    fn a_take_sums_per_sku_in_sku_order_and_prices_lines_in_request_order() {
        let verdict = decide(
            &[line("MUG", 2), line("CUP", 1), line("MUG", 1)],
            &[stock("MUG", 3, 850, "USD"), stock("CUP", 1, 400, "USD")],
        );
        let Verdict::Take(take) = verdict else {
            panic!("expected a take, got {verdict:?}");
        };
        assert_eq!(take.skus, ["CUP", "MUG"]);
        assert_eq!(take.quantities, [1, 3]);
        assert_eq!(take.unit_prices_cents, [400, 850]);
        assert_eq!(take.currency, "USD");
        let priced: Vec<(&str, u32, i64)> = take
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity.get(), l.unit_price_cents.get()))
            .collect();
        assert_eq!(priced, [("MUG", 2, 850), ("CUP", 1, 400), ("MUG", 1, 850)]);
    }

    #[test]
    fn a_take_if_stocked_is_the_take_decided_with_enough_stock() {
        let lines = [line("MUG", 2), line("CUP", 1), line("MUG", 1)];
        let mut known = vec![stock("MUG", 0, 850, "USD"), stock("CUP", 0, 400, "USD")];
        let assumed = take_if_stocked(&lines, &known).expect("a take");
        known[0].available = 3;
        known[1].available = 1;
        assert_eq!(decide(&lines, &known), Verdict::Take(assumed));
    }

    #[test]
    fn no_take_if_stocked_for_lines_refused_whatever_the_stock() {
        let known = [stock("MUG", 0, 850, "USD"), stock("CUP", 0, 400, "EUR")];
        assert_eq!(take_if_stocked(&[line("TEA", 1)], &known), None);
        assert_eq!(
            take_if_stocked(&[line("MUG", 1), line("CUP", 1)], &known),
            None
        );
        assert_eq!(
            take_if_stocked(&[line("MUG", u32::MAX), line("MUG", 1)], &known),
            None,
            "more than any row can hold"
        );
    }
}
