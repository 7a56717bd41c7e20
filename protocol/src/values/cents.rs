//! Money as an integer count of minor units (cents); never a float.

use serde::{Deserialize, Serialize};

use super::{integer_value, Quantity};

/// An amount of money in minor units. Every `i64` is one: whether an
/// amount may be negative or zero is a business rule, checked where the
/// business is (tax refuses a negative unit price, payment a charge of zero
/// or less), not here. There is no `Add`, `Sub` or `Mul`: every sum and
/// product goes through a `checked_` method, so an overflow is an answer the
/// caller must handle, never a wrap or a panic.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    /// Infallible, unlike the other values' constructors: no `i64` is an
    /// invalid amount (see the type's doc).
    pub const fn new(minor_units: i64) -> Cents {
        Cents(minor_units)
    }

    /// The minor units, for SQL binds, display and business checks.
    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    pub fn checked_sub(self, other: Cents) -> Option<Cents> {
        self.0.checked_sub(other.0).map(Cents)
    }

    /// A line's amount: a unit price times the units.
    pub fn checked_mul(self, quantity: Quantity) -> Option<Cents> {
        self.0.checked_mul(i64::from(quantity.get())).map(Cents)
    }

    /// The sum of `amounts`, or None if it does not fit in 64 bits at any
    /// point.
    pub fn checked_sum(amounts: impl IntoIterator<Item = Cents>) -> Option<Cents> {
        amounts
            .into_iter()
            .try_fold(Cents::ZERO, |sum, amount| sum.checked_add(amount))
    }

    /// `self * basis_points / 10_000`, rounded half away from zero (half up
    /// for the non-negative amounts a checkout has). Computed in i128, so
    /// only a result outside `i64` is None.
    pub fn apply_basis_points(self, basis_points: u32) -> Option<Cents> {
        let product = i128::from(self.0) * i128::from(basis_points);
        let rounded = if product >= 0 {
            (product + 5_000) / 10_000
        } else {
            (product - 5_000) / 10_000
        };
        i64::try_from(rounded).ok().map(Cents)
    }
}

impl From<i64> for Cents {
    fn from(minor_units: i64) -> Cents {
        Cents(minor_units)
    }
}

integer_value!(Cents => i64);

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: i64) -> Cents {
        Cents::new(n)
    }

    fn q(n: u32) -> Quantity {
        Quantity::new(n).unwrap()
    }

    #[test]
    fn every_i64_is_an_amount() {
        for n in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(c(n).get(), n);
            assert_eq!(c(n).to_string(), n.to_string());
        }
        assert_eq!(Cents::default(), Cents::ZERO);
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(c(2).checked_add(c(3)), Some(c(5)));
        assert_eq!(c(i64::MAX).checked_add(c(1)), None);
        assert_eq!(c(2).checked_sub(c(3)), Some(c(-1)));
        assert_eq!(c(i64::MIN).checked_sub(c(1)), None);
        assert_eq!(c(999).checked_mul(q(3)), Some(c(2_997)));
        assert_eq!(c(i64::MAX / 2).checked_mul(q(3)), None);
        assert_eq!(Cents::checked_sum([c(1), c(2), c(3)]), Some(c(6)));
        assert_eq!(Cents::checked_sum([]), Some(Cents::ZERO));
        assert_eq!(Cents::checked_sum([c(i64::MAX), c(1), c(-1)]), None);
    }

    #[test]
    fn basis_points_round_half_up_per_line() {
        // 999 * 8.25% = 82.4175 -> 82
        assert_eq!(c(999).apply_basis_points(825), Some(c(82)));
        // 1_000 * 7.25% = 72.5 -> 73 (half up)
        assert_eq!(c(1_000).apply_basis_points(725), Some(c(73)));
        // 1_000 * 7.24% = 72.4 -> 72
        assert_eq!(c(1_000).apply_basis_points(724), Some(c(72)));
        assert_eq!(c(0).apply_basis_points(2_000), Some(c(0)));
        assert_eq!(c(12_345).apply_basis_points(0), Some(c(0)));
        assert_eq!(c(-1_000).apply_basis_points(725), Some(c(-73)));
    }

    #[test]
    fn large_amounts_do_not_overflow_and_too_large_results_are_none() {
        assert_eq!(
            c(i64::MAX / 2).apply_basis_points(10_000),
            Some(c(i64::MAX / 2))
        );
        assert_eq!(c(i64::MAX).apply_basis_points(20_000), None);
        assert_eq!(c(i64::MIN).apply_basis_points(20_000), None);
    }

    #[test]
    fn is_the_bare_integer_on_the_wire() {
        assert_eq!(serde_json::to_string(&c(-42)).unwrap(), "-42");
        assert_eq!(serde_json::from_str::<Cents>("4545").unwrap(), c(4545));
        assert!(serde_json::from_str::<Cents>("1.5").is_err());
        assert!(serde_json::from_str::<Cents>(r#""1""#).is_err());
        assert_eq!(schemars::schema_for!(Cents), schemars::schema_for!(i64));
    }
}
