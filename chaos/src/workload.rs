//! What the run buys: the catalogue and tax rates it loads, and the mix of
//! checkouts it drives, each with the outcome a healthy system gives it.
//! The mix is drawn from the seed, so a failing run can be replayed.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// SKUs with stock no run can exhaust: (sku, unit price in cents, tax category).
const PLENTIFUL: [(&str, i64, &str); 5] = [
    ("CHAOS-SHIRT", 1999, "clothing"),
    ("CHAOS-BOOK", 1499, "books"),
    ("CHAOS-MUG", 1299, "general"),
    ("CHAOS-LAMP", 4599, "general"),
    ("CHAOS-CABLE", 899, "electronics"),
];
const PLENTIFUL_STOCK: i64 = 10_000_000;

/// The scarce SKU: a line of [`SCARCE_QUANTITY`] can never be reserved, so
/// the checkout is rejected `out_of_stock` after nothing was held.
const SCARCE_SKU: &str = "CHAOS-SCARCE";
const SCARCE_STOCK: i64 = 5;
const SCARCE_QUANTITY: i64 = 10_000;

pub fn catalogue_csv() -> String {
    let mut csv = String::from("sku,name,on_hand,unit_price_cents,currency,tax_category\n");
    for (sku, price, category) in PLENTIFUL {
        csv.push_str(&format!(
            "{sku},{sku},{PLENTIFUL_STOCK},{price},USD,{category}\n"
        ));
    }
    csv.push_str(&format!(
        "{SCARCE_SKU},{SCARCE_SKU},{SCARCE_STOCK},250000,USD,electronics\n"
    ));
    csv
}

/// Every (country, region) a checkout ships to has a rate for every category.
pub fn tax_rates_csv() -> String {
    let mut csv = String::from("country,region,category,rate_bp\n");
    for (country, region, rate) in [("US", "", 500), ("US", "CA", 725), ("US", "NY", 400)] {
        for category in ["clothing", "books", "general", "electronics"] {
            csv.push_str(&format!("{country},{region},{category},{rate}\n"));
        }
    }
    for (category, rate) in [
        ("clothing", 1900),
        ("books", 700),
        ("general", 1900),
        ("electronics", 1900),
    ] {
        csv.push_str(&format!("DE,,{category},{rate}\n"));
    }
    csv
}

const SHIP_TO: [(&str, &str); 4] = [("US", "CA"), ("US", "NY"), ("US", "TX"), ("DE", "")];

/// The kinds of checkout in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Approve,
    Decline,
    OutOfStock,
    /// Two transient payment answers, then approved.
    Transient,
    /// A payment answer well within the step deadline.
    SlowWithinDeadline,
    /// A payment answer after the step deadline: the first attempt times out
    /// (outcome unknown), the retry finds the charge the first one made.
    SlowPastDeadline,
}

/// Weights out of 100, in [`Kind`] order.
const MIX: [(Kind, u32); 6] = [
    (Kind::Approve, 70),
    (Kind::Decline, 8),
    (Kind::OutOfStock, 7),
    (Kind::Transient, 7),
    (Kind::SlowWithinDeadline, 5),
    (Kind::SlowPastDeadline, 3),
];

/// The step deadline the orchestrators run with (`STEP_DEADLINE_MS`).
pub const STEP_DEADLINE_MS: u64 = 3000;
const SLOW_WITHIN_MS: u64 = 200;
const SLOW_PAST_MS: u64 = 4000;

/// The payment method each kind of checkout pays with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Methods {
    approve: String,
    decline: String,
    transient: String,
    slow_within: String,
    slow_past: String,
}

impl Methods {
    /// The simulator's behaviours, one per kind.
    pub fn simulator() -> Methods {
        Methods {
            approve: "sim_approve".into(),
            decline: "sim_decline".into(),
            transient: "sim_transient_2".into(),
            slow_within: format!("sim_slow_{SLOW_WITHIN_MS}"),
            slow_past: format!("sim_slow_{SLOW_PAST_MS}"),
        }
    }

    /// Stripe's PaymentMethods: a card that approves and one that declines.
    /// A real provider has no slow or flaky card to ask for, so those
    /// kinds pay with the approving one (and still complete); the faults
    /// bring the slowness and the failures.
    pub fn stripe(approve: &str, decline: &str) -> Methods {
        Methods {
            approve: approve.to_owned(),
            decline: decline.to_owned(),
            transient: approve.to_owned(),
            slow_within: approve.to_owned(),
            slow_past: approve.to_owned(),
        }
    }
}

impl Kind {
    fn payment_method(self, methods: &Methods) -> String {
        match self {
            Kind::Approve | Kind::OutOfStock => methods.approve.clone(),
            Kind::Decline => methods.decline.clone(),
            Kind::Transient => methods.transient.clone(),
            Kind::SlowWithinDeadline => methods.slow_within.clone(),
            Kind::SlowPastDeadline => methods.slow_past.clone(),
        }
    }

    /// The final outcome a healthy system gives this kind, as [`Outcome`]
    /// labels it.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Decline => "rejected payment_declined",
            Kind::OutOfStock => "rejected out_of_stock",
            _ => "completed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Kind::Approve => "approve".to_owned(),
            Kind::Decline => "decline".to_owned(),
            Kind::OutOfStock => "out-of-stock".to_owned(),
            Kind::Transient => "transient x2".to_owned(),
            Kind::SlowWithinDeadline => format!("slow {SLOW_WITHIN_MS} ms"),
            Kind::SlowPastDeadline => format!("slow {SLOW_PAST_MS} ms"),
        };
        f.pad(&text)
    }
}

/// One checkout to drive: its idempotency key and body never change across
/// retries, which is what makes a retried POST safe.
#[derive(Debug, Clone)]
pub struct Planned {
    pub index: usize,
    pub kind: Kind,
    pub key: String,
    pub body: Value,
}

pub fn plan(count: usize, seed: u64, run_id: &str, methods: &Methods) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|index| {
            let kind = pick_kind(&mut rng);
            let mut items: Vec<Value> = Vec::new();
            let lines = rng.random_range(1..=2);
            for first in rand::seq::index::sample(&mut rng, PLENTIFUL.len(), lines) {
                let quantity = rng.random_range(1..=3);
                items.push(json!({"sku": PLENTIFUL[first].0, "quantity": quantity}));
            }
            if kind == Kind::OutOfStock {
                // With a plentiful line too: reservation is all or nothing.
                items.push(json!({"sku": SCARCE_SKU, "quantity": SCARCE_QUANTITY}));
            }
            let (country, region) = SHIP_TO[rng.random_range(0..SHIP_TO.len())];
            Planned {
                index,
                kind,
                key: format!("chaos-{run_id}-{index}"),
                body: json!({
                    "customer_id": format!("chaos-{}", index % 97),
                    "items": items,
                    "ship_to": {"country": country, "region": region},
                    "payment_method": kind.payment_method(methods),
                }),
            }
        })
        .collect()
}

fn pick_kind(rng: &mut StdRng) -> Kind {
    let total: u32 = MIX.iter().map(|(_, weight)| weight).sum();
    let mut draw = rng.random_range(0..total);
    for (kind, weight) in MIX {
        if draw < weight {
            return kind;
        }
        draw -= weight;
    }
    unreachable!("the draw is below the total weight")
}

/// The checkout that measures a recovery: the plainest one that completes.
pub fn probe(run_id: &str, label: &str, methods: &Methods) -> Planned {
    Planned {
        index: usize::MAX,
        kind: Kind::Approve,
        key: format!("chaos-{run_id}-probe-{label}"),
        body: json!({
            "customer_id": "chaos-probe",
            "items": [{"sku": PLENTIFUL[0].0, "quantity": 1}],
            "ship_to": {"country": "US", "region": "CA"},
            "payment_method": Kind::Approve.payment_method(methods),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_a_function_of_the_seed() {
        let a = plan(200, 7, "r", &Methods::simulator());
        let b = plan(200, 7, "r", &Methods::simulator());
        assert_eq!(
            a.iter().map(|p| (&p.body, &p.key)).collect::<Vec<_>>(),
            b.iter().map(|p| (&p.body, &p.key)).collect::<Vec<_>>()
        );
        for (kind, _) in MIX {
            assert!(a.iter().any(|p| p.kind == kind), "{kind} in 200 draws");
        }
    }

    #[test]
    fn every_destination_and_category_has_a_rate() {
        let rates = tax_rates_csv();
        for (country, _) in SHIP_TO {
            for (_, _, category) in PLENTIFUL {
                assert!(
                    rates.contains(&format!("{country},,{category},")),
                    "{country} {category}"
                );
            }
        }
    }
}
