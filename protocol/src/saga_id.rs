//! Saga ids are UUIDv7, drawn when a checkout is posted: they sort by
//! creation time, so a time is a bound on ids, which a primary key (or any
//! index on a saga id, in every service's database) answers without
//! reading the rest of history.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use uuid::Uuid;

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

/// When a UUIDv7 was drawn; `None` for any other id.
pub fn drawn_at(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    Some(DateTime::<Utc>::from(
        UNIX_EPOCH + Duration::new(seconds, nanos),
    ))
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
    fn an_id_tells_when_it_was_drawn_to_the_millisecond() {
        let before = Utc::now() - chrono::Duration::milliseconds(1);
        let drawn = drawn_at(Uuid::now_v7()).unwrap();
        assert!(before <= drawn && drawn <= Utc::now(), "{drawn}");
        assert_eq!(drawn_at(Uuid::new_v4()), None);
    }
}
