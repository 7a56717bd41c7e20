-- no-transaction
-- A client's checkouts in flight, counted on every new checkout (up to its
-- limit): only sagas not yet final are in this index, so the count never
-- reads finished history.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sagas_client_in_flight ON sagas (client)
    WHERE status IN ('running', 'compensating', 'suspended');
