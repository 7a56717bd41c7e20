CREATE TABLE sagas (
    id              uuid PRIMARY KEY,
    status          text NOT NULL,
    current_step    text,
    attempt         integer NOT NULL,
    -- The engine's whole state; the columns above are copies for queries.
    state           jsonb NOT NULL,
    idempotency_key text UNIQUE,
    -- SHA-256 of the validated request: the same key with another body is refused.
    request_hash    text NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_status_updated ON sagas (status, updated_at DESC);

-- The timeline: every transition, reply, late reply and support action.
CREATE TABLE saga_events (
    id       bigserial PRIMARY KEY,
    saga_id  uuid NOT NULL REFERENCES sagas (id),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    step     text,
    attempt  integer NOT NULL,
    event    text NOT NULL,
    detail   text,
    actor    text,
    reason   text
);
CREATE INDEX saga_events_saga ON saga_events (saga_id, id);

-- Commands committed with the transition that emits them; the relay
-- publishes each (with a confirm) once `not_before` has passed, then deletes it.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    message_id   uuid NOT NULL,
    saga_id      uuid NOT NULL,
    routing_key  text NOT NULL,
    message_type text NOT NULL,
    body         text NOT NULL,
    traceparent  text NOT NULL,
    not_before   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (not_before, id);
