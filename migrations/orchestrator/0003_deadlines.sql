-- When the awaited reply is due: a durable timer any instance fires (with
-- FOR UPDATE SKIP LOCKED), so a restart loses none. NULL while awaiting
-- nothing (suspended or final).
ALTER TABLE sagas ADD COLUMN deadline_at timestamptz;
CREATE INDEX sagas_deadline ON sagas (deadline_at) WHERE deadline_at IS NOT NULL;

-- Support lists: newest first (ids are UUIDv7, so id order is time order),
-- optionally by status.
CREATE INDEX sagas_status_id ON sagas (status, id DESC);
DROP INDEX sagas_status_updated;
