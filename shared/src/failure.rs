//! Transient or permanent: the one place that decides whether a message
//! whose handling failed is held and tried again, or dead-lettered.
//!
//! Transient: the broker or the database is away, a pool timeout, a
//! serialization failure or a deadlock. The same message will succeed once
//! that passes, so it is held (never nacked: that would burn its delivery
//! count). Permanent: the data can never be accepted (SQLSTATE classes 22
//! and 23, a stored state this build cannot read). Holding it would pin a
//! prefetch slot forever, so it is dead-lettered with the reason.

use std::fmt::Display;

/// A failure a consumer can sort into transient or permanent.
pub trait Classify: Display {
    fn is_permanent(&self) -> bool;

    /// What a dead letter's reason says: what failed, and how to look it up.
    fn describe(&self) -> String {
        self.to_string()
    }
}

impl Classify for sqlx::Error {
    fn is_permanent(&self) -> bool {
        match self {
            sqlx::Error::Database(error) => error.code().is_some_and(|code| is_data_error(&code)),
            // A stored value this build cannot read is there for good.
            sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => true,
            // Connection loss, pool timeout, I/O, TLS, a closed pool: the
            // database will be back.
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            sqlx::Error::Database(error) => match error.code() {
                Some(code) => format!(
                    "database refused the data: {} (SQLSTATE {code})",
                    error.message()
                ),
                None => format!("database refused the data: {}", error.message()),
            },
            other => other.to_string(),
        }
    }
}

/// SQLSTATE class 22 (data exception: invalid text, a value out of range)
/// or 23 (integrity constraint violation). Serialization failures (40001)
/// and deadlocks (40P01) are class 40, and so transient.
fn is_data_error(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || sqlstate.starts_with("23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_constraint_classes_are_permanent() {
        for code in ["22021", "22P05", "22003", "23505", "23514"] {
            assert!(is_data_error(code), "{code}");
        }
        for code in ["40001", "40P01", "08006", "57P01", "53300"] {
            assert!(!is_data_error(code), "{code}");
        }
    }

    #[test]
    fn infrastructure_errors_are_transient() {
        assert!(!sqlx::Error::PoolTimedOut.is_permanent());
        assert!(!sqlx::Error::PoolClosed.is_permanent());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!sqlx::Error::Io(io).is_permanent());
    }

    #[test]
    fn undecodable_state_is_permanent() {
        assert!(sqlx::Error::Decode("bad".into()).is_permanent());
    }
}
