-- A parked (suspended) saga holds its stock, and maybe a payment slot, until
-- someone acts; past PARKED_SAGA_TTL it is cancelled with compensation.
-- `parked_at`: when it last became suspended (NULL while not suspended, and
-- on sagas parked by builds before this column: their last update stands in).
-- `park_extension_ms`: what support added to its time limit (NULL: none).
-- Nullable columns without a default: no rewrite, no lock beyond an instant.
ALTER TABLE sagas ADD COLUMN parked_at timestamptz;
ALTER TABLE sagas ADD COLUMN park_extension_ms bigint;
