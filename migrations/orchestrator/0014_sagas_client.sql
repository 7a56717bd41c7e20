-- no-transaction
-- Support finds a client's checkouts, newest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sagas_client ON sagas (client, id DESC);
