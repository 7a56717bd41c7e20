-- The trace context of the span that created the saga (NULL when its
-- orchestrator exported no spans). A transition no message caused (a
-- missed deadline, a support action, a command the broker kept refusing)
-- continues the checkout's trace from it, so one checkout stays one trace.
ALTER TABLE sagas ADD COLUMN traceparent text;
