-- Support finds a checkout by its customer: the id lives in the saga's
-- JSON state, so the search would scan every saga without this. The id
-- second, so a customer's sagas come newest first from the index alone.
-- (A checkout id is the primary key; an idempotency key has its unique
-- index already.)
CREATE INDEX sagas_customer ON sagas ((state->'request'->>'customer_id'), id DESC);

-- The console's per-minute chart reads the last hour of outcomes: without
-- this it would scan the whole timeline, which only grows.
CREATE INDEX saga_events_outcomes ON saga_events (at)
    WHERE event IN ('completed', 'compensated', 'suspended');
