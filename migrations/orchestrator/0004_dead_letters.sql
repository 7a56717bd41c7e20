-- Messages that could never be handled, as the dead-letter queue delivered
-- them, so support can list them (with their saga and reason) without
-- draining the queue by hand.
CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    saga_id          uuid,
    reason           text NOT NULL,
    message_id       text,
    message_type     text,
    original_exchange text,
    routing_key      text,
    body_bytes       integer NOT NULL,
    -- The start of the body, as text (invalid UTF-8 replaced): enough to see
    -- what it was without storing megabytes of garbage.
    body_preview     text NOT NULL
);
CREATE INDEX dead_letters_saga ON dead_letters (saga_id) WHERE saga_id IS NOT NULL;
