-- A command the broker refuses (nacked, returned unroutable, never
-- confirmed) backs off alone instead of holding back the rows behind it:
-- it keeps its own count of refused publishes, the time of the first
-- refusal (the relay parks its saga once the step's allowance has passed
-- since then) and the last refusal's text, for support.
ALTER TABLE outbox ADD COLUMN attempt integer;
ALTER TABLE outbox ADD COLUMN publish_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN first_failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN last_error text;

-- The saga attempt a row carries, so parking it can tell the awaited
-- attempt from a stale one. Rows written before this column say it in
-- their body; it stays nullable because an instance of the previous
-- build, still running during a rolling deploy, writes rows without it.
UPDATE outbox SET attempt = (body::jsonb ->> 'attempt')::integer;

-- The deadline timer asks per saga whether its command is still unsent.
CREATE INDEX outbox_saga ON outbox (saga_id);
-- Support lists the rows the broker refused.
CREATE INDEX outbox_refused ON outbox (id) WHERE first_failed_at IS NOT NULL;
