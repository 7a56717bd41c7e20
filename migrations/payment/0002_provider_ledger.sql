-- The payment protocol with a separate provider: the worker commits an
-- intent (`charging`, `refunding`) before it calls the provider, and records
-- the outcome after. A `pending` row was a charge that had not succeeded
-- yet: it is an intent whose outcome the provider will be asked for.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
UPDATE payments SET status = 'charging' WHERE status = 'pending';
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('charging', 'charged', 'declined', 'refunding', 'refunded'));

-- The simulated provider's own books, written as a separate party would
-- write them (its own transactions, committed before it answers). It lives
-- in the payment database only because the simulator has no other home; the
-- worker never reads it, it asks the provider. An idempotency key names one
-- operation; a request without a key (which a real provider accepts) would
-- leave a NULL key, so two of those can both be in the ledger: that is the
-- double charge the auditor looks for.
CREATE TABLE provider_ledger (
    reference       uuid PRIMARY KEY,
    idempotency_key text UNIQUE,
    saga_id         uuid NOT NULL,
    operation       text NOT NULL CHECK (operation IN ('charge', 'refund')),
    -- `voided`: a charge key cancelled by its refund before the charge came.
    outcome         text NOT NULL CHECK (outcome IN ('approved', 'declined', 'voided')),
    amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
    currency        text,
    payment_method  text,
    decline_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_ledger_saga_id ON provider_ledger (saga_id);
