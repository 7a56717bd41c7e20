//! What this process last read of each product's price, currency and tax
//! category. A reserve's one-statement path prices its reply from here and
//! takes stock only if the rows, under lock, still say the same: a stale
//! entry costs that statement and a trip through the general path (which
//! reads the rows and refreshes the entries), never a wrong price.

use std::collections::HashMap;
use std::sync::Mutex;

use super::rules::Stock;

/// Entries beyond this drop the whole map: a catalogue this large is read
/// again as it is used, and memory stays bounded.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Price {
    unit_price_cents: i64,
    currency: String,
    tax_category: String,
}

#[derive(Debug, Default)]
pub struct Prices(Mutex<HashMap<String, Price>>);

impl Prices {
    /// The remembered prices of every one of `skus`, as stock with no
    /// availability known (`available` 0); `None` when one is missing.
    pub fn of(&self, skus: &[&str]) -> Option<Vec<Stock>> {
        let prices = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        skus.iter()
            .map(|sku| {
                prices.get(*sku).map(|price| Stock {
                    sku: (*sku).to_owned(),
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
            sku: sku.into(),
            available: 7,
            unit_price_cents: price,
            currency: "USD".into(),
            tax_category: "general".into(),
        }
    }

    #[test]
    fn all_or_nothing_and_the_newest_read_wins() {
        let prices = Prices::default();
        assert_eq!(prices.of(&["MUG"]), None);
        prices.remember(&[stock("MUG", 850), stock("CUP", 400)]);
        assert_eq!(prices.of(&["MUG", "TEA"]), None);
        prices.remember(&[stock("MUG", 900)]);
        let known = prices.of(&["CUP", "MUG"]).unwrap();
        let seen: Vec<(&str, i64, i32)> = known
            .iter()
            .map(|s| (s.sku.as_str(), s.unit_price_cents, s.available))
            .collect();
        assert_eq!(seen, [("CUP", 400, 0), ("MUG", 900, 0)]);
    }
}
