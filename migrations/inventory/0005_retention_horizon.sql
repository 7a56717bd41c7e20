-- How far retention (RETENTION_DAYS) has deleted reservations: every
-- reservation of a saga with an id below `deleted_below` may be gone (an
-- active one shipped: its stock left `on_hand`). The auditor reads it, so that a
-- saga the orchestrator still keeps is not taken to lack its records.
-- A new table of one row: no lock on any existing table; older builds
-- never read it.
CREATE TABLE retention_horizon (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    deleted_below uuid NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
