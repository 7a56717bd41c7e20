//! Saga ids are UUIDv7, drawn when a checkout is posted, so ids sort by
//! creation time: a bound on the time a saga was created is a bound on its
//! id, which the primary key answers without reading the rest of history.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
pub use saga_protocol::saga_id::uuid_v7_floor;
use uuid::Uuid;

/// Longest a saga's id can precede its commit (its id is drawn at POST,
/// and the request times out long before this), and the most its
/// `created_at` and its id's time can disagree either way.
pub const UNCOMMITTED_MARGIN: Duration = Duration::from_secs(120);

/// No saga created at or after `at` has an id below this.
pub fn lowest_id_created_from(at: DateTime<Utc>) -> Uuid {
    uuid_v7_floor(SystemTime::from(at) - UNCOMMITTED_MARGIN)
}

/// No saga created before `at` has an id at or above this.
pub fn id_above_created_before(at: DateTime<Utc>) -> Uuid {
    uuid_v7_floor(SystemTime::from(at) + UNCOMMITTED_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_hold_an_id_drawn_within_the_margin() {
        let created = Utc::now();
        let id = Uuid::now_v7();
        assert!(lowest_id_created_from(created) <= id);
        assert!(id < id_above_created_before(created));
    }
}
