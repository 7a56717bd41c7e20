-- A saga moves several times a second under load, and every move rewrote
-- every index of the row: the JSON state (the customer's expression index)
-- and the reply deadline change on each transition, so none could be a HOT
-- update. Only the status is indexed now among what a transition changes,
-- and the status changes at most a few times in a saga's life.

-- The customer never changes after the saga is created: a column of its
-- own, indexed instead of an expression over the state. An update that
-- leaves the column's value as it was can still be HOT, where any change
-- to the state defeated the expression index.
ALTER TABLE sagas ADD COLUMN customer_id text
    GENERATED ALWAYS AS (state->'request'->>'customer_id') STORED;
DROP INDEX sagas_customer;
CREATE INDEX sagas_customer ON sagas (customer_id, id DESC);

-- Only running or compensating sagas await a reply, and they are the ones
-- in flight: the deadline timer finds them through sagas_status_id, a scan
-- of the sagas in flight, rather than an index on a column every
-- transition moves.
DROP INDEX sagas_deadline;

-- Room in each page for a row's next version, so that a transition's
-- update stays on its page (HOT) rather than moving the row.
ALTER TABLE sagas SET (fillfactor = 70);
