//! Money is always an integer count of minor units (cents); never a float.

/// `amount * basis_points / 10_000`, rounded half up (away from zero for
/// the non-negative amounts a checkout has). Computed in i128 so that no
/// realistic amount can overflow.
pub fn apply_basis_points(amount_cents: i64, basis_points: u32) -> i64 {
    let product = i128::from(amount_cents) * i128::from(basis_points);
    let rounded = if product >= 0 {
        (product + 5_000) / 10_000
    } else {
        (product - 5_000) / 10_000
    };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_up_per_line() {
        // 999 * 8.25% = 82.4175 -> 82
        assert_eq!(apply_basis_points(999, 825), 82);
        // 1_000 * 7.25% = 72.5 -> 73 (half up)
        assert_eq!(apply_basis_points(1_000, 725), 73);
        // 1_000 * 7.24% = 72.4 -> 72
        assert_eq!(apply_basis_points(1_000, 724), 72);
        assert_eq!(apply_basis_points(0, 2_000), 0);
        assert_eq!(apply_basis_points(12_345, 0), 0);
    }

    #[test]
    fn large_amounts_do_not_overflow() {
        assert_eq!(apply_basis_points(i64::MAX / 2, 10_000), i64::MAX / 2);
    }
}
