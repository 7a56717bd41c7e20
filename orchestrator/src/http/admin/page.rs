//! Pages of a support list: how many rows (`limit`), where the previous
//! page ended (`cursor`), and where the next one starts.

use super::field::all_or_errors;
use crate::http::problem::FieldError;
use crate::store::MAX_PAGE;

const DEFAULT_PAGE: u32 = 50;

/// `limit` of a page: 1..=MAX_PAGE, [`DEFAULT_PAGE`] when absent.
pub(super) fn page_size(errors: &mut Vec<FieldError>, limit: Option<String>) -> u32 {
    all_or_errors(
        errors,
        limit.map(|l| match l.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(FieldError::new(
                "limit",
                format!("must be a number from 1 to {MAX_PAGE}"),
            )),
        }),
    )
    .unwrap_or(DEFAULT_PAGE)
}

/// `cursor` of a page: what the previous page gave as `next_cursor`.
pub(super) fn page_cursor<T: std::str::FromStr>(
    errors: &mut Vec<FieldError>,
    cursor: Option<String>,
) -> Option<T> {
    all_or_errors(
        errors,
        cursor.map(|c| {
            c.trim().parse::<T>().map_err(|_| {
                FieldError::new("cursor", "must be a `next_cursor` from an earlier page")
            })
        }),
    )
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
