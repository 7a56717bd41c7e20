//! W3C `traceparent` values: how one checkout stays one trace across the
//! outbox, RabbitMQ and every service.
//!
//! A span that writes a message stores its own context with it (the outbox
//! row, the AMQP headers); the span that handles the message takes that
//! context as its parent. Without an exporter, spans have no context, and
//! a message carries the saga id as its trace id instead, so every log
//! line of one checkout still shares one trace id.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

pub const HEADER: &str = "traceparent";

/// `00-<trace id>-<span id>-01` with the saga id as trace id and a fresh span id.
pub fn for_saga(saga_id: Uuid) -> String {
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{}-{:016x}-01", saga_id.simple(), span)
}

/// The trace id of a well-formed traceparent value.
pub fn trace_id(value: &str) -> Option<&str> {
    parse(value).map(|(trace, _, _)| trace)
}

/// Trace id, span id and flags of a well-formed version-00 value.
fn parse(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2) && version != "ff")
        .then_some((trace, span, flags))
}

/// The traceparent of `span` while spans are exported; `None` otherwise.
pub fn of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// What a message written now carries: the current span's context, so the
/// span that handles the message is its child; without an exporter, the
/// saga's own trace id.
pub fn for_message(saga_id: Uuid) -> String {
    of(&tracing::Span::current()).unwrap_or_else(|| for_saga(saga_id))
}

/// Makes `span` (just created, not yet entered) a child of the span that
/// wrote `value`. A malformed or missing value leaves `span` a root: a
/// message's trace is worth having, never worth refusing the message for.
pub fn continue_from(span: &tracing::Span, value: Option<&str>) {
    let Some((trace, parent, flags)) = value.and_then(parse) else {
        return;
    };
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace,
        parent,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if remote.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to `other` (the request that caused it, say, when `span`
/// continues another trace); nothing while spans are not exported.
pub fn link(span: &tracing::Span, other: &tracing::Span) {
    span.add_link(other.context().span().span_context().clone());
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

    #[test]
    fn without_an_exporter_a_message_carries_the_saga_id() {
        let id = Uuid::new_v4();
        let span = tracing::info_span!("transition");
        let _entered = span.enter();
        assert_eq!(of(&span), None);
        assert_eq!(
            trace_id(&for_message(id)),
            Some(id.simple().to_string().as_str())
        );
    }

    #[test]
    fn a_handling_span_continues_the_trace_of_the_span_that_wrote() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let saga_id = Uuid::new_v4();
            let writer = tracing::info_span!("transition");
            let written = writer.in_scope(|| for_message(saga_id));
            assert_eq!(of(&writer).as_deref(), Some(written.as_str()));

            let handler = tracing::info_span!("command");
            continue_from(&handler, Some(&written));
            let handled = of(&handler).expect("an exported span has a context");
            assert_eq!(trace_id(&handled), trace_id(&written));
            assert_ne!(parse(&handled), parse(&written), "a span of its own");

            let orphan = tracing::info_span!("command");
            continue_from(&orphan, Some("00-garbage"));
            assert_ne!(trace_id(&of(&orphan).unwrap()), trace_id(&written));
        });
    }
}
