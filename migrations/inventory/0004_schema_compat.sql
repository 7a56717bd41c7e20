-- The oldest migration a build must know to run on this database: a build
-- whose newest migration is older refuses to start. A build that knows at
-- least this much starts even when a newer release has applied migrations
-- it does not know (a rolling upgrade, a rollback). A migration that older
-- builds cannot live with (a contract step) raises it in its own
-- transaction, never lowers it:
--   UPDATE schema_compat SET min_reader_version = GREATEST(min_reader_version, <its version>);
--
-- 2: a build that knows only 0001 cannot. It reads a reservation's status
-- as `active` or `released`, and fails on the `refused` tombstones that
-- builds since 0002 write.

-- A new table of one row: no lock on any existing table.
CREATE TABLE schema_compat (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    min_reader_version bigint NOT NULL CHECK (min_reader_version >= 1)
);
INSERT INTO schema_compat (id, min_reader_version) VALUES (true, 2);
