-- The oldest migration a build must know to run on this database: a build
-- whose newest migration is older refuses to start. A build that knows at
-- least this much starts even when a newer release has applied migrations
-- it does not know (a rolling upgrade, a rollback). A migration that older
-- builds cannot live with (a contract step) raises it in its own
-- transaction, never lowers it:
--   UPDATE schema_compat SET min_reader_version = GREATEST(min_reader_version, <its version>);
--
-- 1: every build so far runs on today's schema. Columns were only added,
-- nullable or with a default (0006 keeps `outbox.attempt` nullable for the
-- build before it), the generated `sagas.customer_id` (0009) is never
-- written, and the saga state's JSON is read by every build.

-- A new table of one row: no lock on any existing table.
CREATE TABLE schema_compat (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    min_reader_version bigint NOT NULL CHECK (min_reader_version >= 1)
);
INSERT INTO schema_compat (id, min_reader_version) VALUES (true, 1);
