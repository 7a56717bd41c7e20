-- no-transaction
-- The timer that ends expired parks reads suspended sagas only, through
-- this index, never the finished history. Partial: a transition of a saga
-- that is not suspended (nearly all of them) touches no entry of it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sagas_parked ON sagas (parked_at)
    WHERE status = 'suspended';
