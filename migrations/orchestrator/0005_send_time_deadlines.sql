-- An attempt's reply deadline counts from when its command is published:
-- the relay moves the saga's deadline to publish time + this, so a command
-- that waited in the outbox (the broker was away) gets its whole deadline.
ALTER TABLE outbox ADD COLUMN deadline_ms bigint;

-- Sagas parked before support actions existed: say which phase they parked
-- in (a parked compensation resumes compensating), and give those in
-- flight a deadline, which they had none of.
UPDATE sagas
SET state = jsonb_set(state, '{suspended_from}',
        to_jsonb(CASE WHEN current_step IN ('inventory.release', 'payment.refund')
                      THEN 'compensating' ELSE 'running' END))
WHERE status = 'suspended' AND NOT state ? 'suspended_from';
UPDATE sagas SET deadline_at = now() + interval '10 seconds'
WHERE status IN ('running', 'compensating') AND deadline_at IS NULL;

-- A dead letter redelivered after its row was written (its ack was lost)
-- is recorded once.
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (message_id, reason)
    WHERE message_id IS NOT NULL;
