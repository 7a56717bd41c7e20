//! W3C `traceparent` values. A checkout's trace id is its saga id, so every
//! message and log line of one checkout shares one trace across services
//! without a lookup.

use uuid::Uuid;

pub const HEADER: &str = "traceparent";

/// `00-<trace id>-<span id>-01` with the saga id as trace id and a fresh span id.
pub fn for_saga(saga_id: Uuid) -> String {
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{}-{:016x}-01", saga_id.simple(), span)
}

/// The trace id of a well-formed traceparent value.
pub fn trace_id(value: &str) -> Option<&str> {
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_the_saga_id_as_trace_id() {
        let id = Uuid::new_v4();
        let value = for_saga(id);
        assert_eq!(trace_id(&value), Some(id.simple().to_string().as_str()));
        assert_eq!(trace_id("garbage"), None);
    }
}
