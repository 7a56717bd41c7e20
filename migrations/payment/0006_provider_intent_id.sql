-- The PaymentIntent a real provider (Stripe) holds for the saga's charge.
-- It is recorded after the PaymentIntent is created and before it is
-- confirmed, so that a redelivered charge retrieves and finishes that one
-- rather than creating (and confirming) another, whether or not the server
-- honours idempotency keys. `void`: a refund came before any was recorded,
-- and none may be confirmed for the saga any more. NULL for the simulator.
-- A nullable column without a default: no rewrite, no scan; older builds
-- never read it.
ALTER TABLE payments ADD COLUMN provider_intent_id text;
