-- Checkout clients: who may call /v1/checkouts, with what key, within what
-- limits. A key is stored only as the SHA-256 digest of a random key (a
-- high-entropy key needs no slow hash); a revoked client keeps its row, so
-- its name stays on its sagas and is never handed to someone else.
-- A limit left NULL follows the instance's defaults (CLIENT_*).
CREATE TABLE checkout_clients (
    name            text PRIMARY KEY,
    key_sha256      bytea NOT NULL UNIQUE,
    rate_per_second double precision,
    rate_burst      bigint,
    max_in_flight   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- The instances running now: each refreshes its row every second, and a
-- client's rate is shared among the instances seen lately (each enforces
-- its share in memory, so no checkout waits on a shared counter).
CREATE TABLE orchestrator_instances (
    id      uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- The client a saga was created for. Nullable: sagas created before
-- clients existed (and by v0.2.0/v0.3.0 instances during an upgrade) have
-- none. The idempotency key stays in `idempotency_key`, written as
-- `<client>:<key>`, so the unique index older builds rely on scopes keys
-- per client without a new constraint.
ALTER TABLE sagas ADD COLUMN client text;
