-- A refused reserve leaves its row as a `refused` tombstone (it used to be
-- deleted): an earlier attempt of the same reserve that runs late (stuck in
-- a retry loop, or redelivered after its worker died) then finds the saga's
-- answer already given and holds nothing, whatever the stock is by then.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations
    ADD CONSTRAINT reservations_status_check CHECK (status IN ('active', 'released', 'refused')),
    ADD COLUMN rejection_reason text,
    ADD COLUMN rejection_detail text,
    ADD CONSTRAINT reservations_refusal_check CHECK (status <> 'refused' OR rejection_reason IS NOT NULL);
