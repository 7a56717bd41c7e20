-- Optimistic concurrency: a transition is written only if the saga is still
-- at the version it was read at, so two replies (or two instances) never
-- both advance one saga; the loser re-reads and tries again.
ALTER TABLE sagas ADD COLUMN version bigint NOT NULL DEFAULT 0;
