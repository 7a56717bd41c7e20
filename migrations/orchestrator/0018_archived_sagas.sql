-- Sagas retention has archived and deleted, by final status, added to in
-- the transaction that deletes them. Each instance's saga tally counts
-- finished sagas once and keeps them; it reads this in the statement
-- that counts, so that what any instance archived leaves every instance's
-- counts. A new table: no lock on any existing one; older builds never
-- read it.
CREATE TABLE archived_sagas (
    status text PRIMARY KEY,
    sagas  bigint NOT NULL
);
