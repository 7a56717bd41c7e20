//! What this process last read of each product's price, currency and tax
//! category. A reserve's one-statement path prices its reply from here and
//! takes stock only if the rows, under lock, still say the same: a stale
//! entry costs that statement and a trip through the general path (which
//! reads the rows and refreshes the entries), never a wrong price.

use std::collections::HashMap;
use std::sync::Mutex;

use saga_protocol::values::{Cents, Currency, Sku};

use super::rules::Stock;

/// Entries beyond this drop the whole map: a catalogue this large is read
/// again as it is used, and memory stays bounded.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Price {
    unit_price_cents: Cents,
    currency: Currency,
    tax_category: String,
}

#[derive(Debug, Default)]
pub struct Prices(Mutex<HashMap<Sku, Price>>);

impl Prices {
    /// The remembered prices of every one of `skus`, as stock with no
    /// availability known (`available` 0); `None` when one is missing.
    pub fn of(&self, skus: &[&Sku]) -> Option<Vec<Stock>> {
        let prices = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        skus.iter()
            .map(|sku| {
                prices.get(*sku).map(|price| Stock {
                    sku: (*sku).clone(),
                    available: 0,
                    unit_price_cents: price.unit_price_cents,
                    currency: price.currency.clone(),
                    tax_category: price.tax_category.clone(),
                })
            })
            .collect()
    }

    /// Remembers the prices of rows just read.
    pub fn remember(&self, stock: &[Stock]) {
        let mut prices = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if prices.len() + stock.len() > MAX_ENTRIES {
            prices.clear();
        }
        for row in stock {
            prices.insert(
                row.sku.clone(),
                Price {
                    unit_price_cents: row.unit_price_cents,
                    currency: row.currency.clone(),
                    tax_category: row.tax_category.clone(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(sku: &str, price: i64) -> Stock {
        Stock {
            sku: sku.parse().unwrap(),
            available: 7,
            unit_price_cents: Cents::new(price),
            currency: "USD".parse().unwrap(),
            tax_category: "general".into(),
        }
    }

    #[test]
    fn all_or_nothing_and_the_newest_read_wins() {
        let prices = Prices::default();
        let [mug, tea, cup] = ["MUG", "TEA", "CUP"].map(|s| s.parse::<Sku>().unwrap());
        assert_eq!(prices.of(&[&mug]), None);
        prices.remember(&[stock("MUG", 850), stock("CUP", 400)]);
        assert_eq!(prices.of(&[&mug, &tea]), None);
        prices.remember(&[stock("MUG", 900)]);
        let known = prices.of(&[&cup, &mug]).unwrap();
        let seen: Vec<(&str, i64, i32)> = known
            .iter()
            .map(|s| (s.sku.as_str(), s.unit_price_cents.get(), s.available))
            .collect();
        assert_eq!(seen, [("CUP", 400, 0), ("MUG", 900, 0)]);
    }
}
