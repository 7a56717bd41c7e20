-- no-transaction
-- The saga list's `?error=` filter, without a status, reads the sagas that
-- hold an error through this index, newest first, never the whole history:
-- a successful step clears last_error, so nearly every finished saga has
-- none and has no entry here. Partial on last_error: a transition that
-- leaves the error as it was stays a HOT update.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sagas_errored ON sagas (id DESC)
    WHERE last_error IS NOT NULL;
