-- The simulated provider's ledger (0002) started empty on a deployment that
-- already had payments: a refund of a charge made before the upgrade found
-- no charge under its key, voided it and returned nothing. Its books are
-- rebuilt from ours: what we recorded as approved is what the provider
-- approved. Plain INSERT ... SELECT, no lock beyond the rows read; ON
-- CONFLICT keeps whatever the provider wrote since the upgrade.
INSERT INTO provider_ledger
    (reference, idempotency_key, saga_id, operation, outcome, amount_cents, currency,
     payment_method, created_at)
SELECT provider_reference, 'charge:' || saga_id, saga_id, 'charge', 'approved', amount_cents,
       currency, payment_method, created_at
FROM payments
WHERE provider_reference IS NOT NULL
ON CONFLICT DO NOTHING;

INSERT INTO provider_ledger
    (reference, idempotency_key, saga_id, operation, outcome, amount_cents, currency,
     payment_method, created_at)
SELECT gen_random_uuid(), 'refund:' || saga_id, saga_id, 'refund', 'approved', refunded_cents,
       currency, payment_method, updated_at
FROM payments
WHERE status = 'refunded' AND refunded_cents > 0
ON CONFLICT DO NOTHING;
