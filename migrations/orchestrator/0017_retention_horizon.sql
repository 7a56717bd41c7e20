-- How far retention has gone: every finished saga with an id below
-- `archived_below` that finished before `finished_before` may have been
-- archived and deleted. The auditor reads it, so that the money and stock
-- of an archived saga are not taken for those of a saga never created.
-- A new table of one row: no lock on any existing table; older builds
-- never read it.
CREATE TABLE retention_horizon (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    archived_below  uuid NOT NULL,
    finished_before timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
