CREATE TABLE inbox (
    message_id  uuid PRIMARY KEY,
    saga_id     uuid NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    reply       jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- One payment per saga: every charge and refund is keyed by the saga id, so
-- a retried or redelivered command never moves money twice. A refund that
-- arrives before its charge leaves a `refunded` row with nothing charged,
-- and the late charge then does nothing.
CREATE TABLE payments (
    saga_id            uuid PRIMARY KEY,
    status             text NOT NULL CHECK (status IN ('pending', 'charged', 'declined', 'refunded')),
    amount_cents       bigint NOT NULL DEFAULT 0 CHECK (amount_cents >= 0),
    refunded_cents     bigint NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0),
    currency           text,
    payment_method     text,
    customer_id        text,
    provider_reference uuid,
    transient_failures integer NOT NULL DEFAULT 0,
    -- Why a `declined` payment was refused, replayed to a retried charge.
    rejection_reason   text,
    rejection_detail   text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'charged' OR provider_reference IS NOT NULL),
    CHECK (status <> 'declined' OR rejection_reason IS NOT NULL),
    CHECK (refunded_cents <= amount_cents)
);

-- Operator switch read by every copy: while on, every charge and refund is
-- transient (a rehearsed provider outage).
CREATE TABLE provider_settings (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    outage boolean NOT NULL DEFAULT false
);
INSERT INTO provider_settings (id, outage) VALUES (true, false);
