//! Saga ids are UUIDv7, drawn when a checkout is posted, so ids sort by
//! creation time: a bound on the time a saga was created is a bound on its
//! id, which the primary key answers without reading the rest of history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Longest a saga's id can precede its commit (its id is drawn at POST,
/// and the request times out long before this), and the most its
/// `created_at` and its id's time can disagree either way.
pub const UNCOMMITTED_MARGIN: Duration = Duration::from_secs(120);

/// The smallest UUIDv7 of the millisecond `at`.
pub fn uuid_v7_floor(at: SystemTime) -> Uuid {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

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
    fn the_floor_of_a_millisecond_precedes_every_id_drawn_in_it() {
        let at = SystemTime::now();
        let floor = uuid_v7_floor(at);
        assert_eq!(floor.get_version_num(), 7);
        let drawn = Uuid::now_v7();
        assert!(floor <= drawn, "{floor} > {drawn}");
        assert!(uuid_v7_floor(at + Duration::from_millis(1)) > floor);
        // An id drawn a millisecond before is below it.
        let earlier = uuid_v7_floor(at - Duration::from_millis(1));
        assert!(earlier < floor);
    }

    #[test]
    fn time_bounds_hold_an_id_drawn_within_the_margin() {
        let created = Utc::now();
        let id = Uuid::now_v7();
        assert!(lowest_id_created_from(created) <= id);
        assert!(id < id_above_created_before(created));
    }
}
