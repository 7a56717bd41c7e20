//! Pages of a support list: how many rows (`limit`), where the previous
//! page ended (`cursor`), and where the next one starts.

use super::field::{all_or_errors, parse_count};
use crate::http::problem::FieldError;
use crate::store::MAX_PAGE;

const DEFAULT_PAGE: u32 = 50;

/// The page a list route is asked for; `C` is what its rows are paged by.
pub struct PageRequest<C> {
    pub limit: u32,
    pub cursor: Option<C>,
}

impl<C: std::str::FromStr> PageRequest<C> {
    /// `limit`: 1..=MAX_PAGE, [`DEFAULT_PAGE`] when absent; `cursor`: what
    /// the previous page gave as `next_cursor`.
    pub(super) fn read(
        errors: &mut Vec<FieldError>,
        limit: Option<String>,
        cursor: Option<String>,
    ) -> Self {
        let limit = all_or_errors(errors, limit.map(|l| parse_count("limit", &l, MAX_PAGE)))
            .unwrap_or(DEFAULT_PAGE);
        let cursor = all_or_errors(
            errors,
            cursor.map(|c| {
                c.trim().parse::<C>().map_err(|_| {
                    FieldError::new("cursor", "must be a `next_cursor` from an earlier page")
                })
            }),
        );
        PageRequest { limit, cursor }
    }
}

/// A page of `rows`, fetched with one row more than `limit` to learn
/// whether another page follows, and the cursor of that page if so.
pub(super) fn page<T>(
    mut rows: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> i64,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| id(r).to_string()))
        .flatten();
    (rows, next_cursor)
}
