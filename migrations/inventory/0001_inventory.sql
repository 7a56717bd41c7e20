-- Commands already handled, with the reply that was sent: a redelivered
-- command gets the same reply and changes nothing again.
CREATE TABLE inbox (
    message_id  uuid PRIMARY KEY,
    saga_id     uuid NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    reply       jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    sku              text PRIMARY KEY,
    name             text NOT NULL,
    on_hand          integer NOT NULL CHECK (on_hand >= 0),
    available        integer NOT NULL CHECK (available >= 0 AND available <= on_hand),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    currency         text NOT NULL,
    tax_category     text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One reservation per saga. `released` with no lines is a tombstone left by
-- a release that arrived before its reserve: the late reserve then holds
-- nothing.
CREATE TABLE reservations (
    saga_id     uuid PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('active', 'released')),
    currency    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);

-- `position` keeps the request's order, so a redelivered reserve replies
-- with exactly the lines it first replied with; a SKU may appear on more
-- than one line.
CREATE TABLE reservation_lines (
    saga_id          uuid NOT NULL REFERENCES reservations (saga_id),
    position         integer NOT NULL,
    sku              text NOT NULL REFERENCES products (sku),
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL,
    tax_category     text NOT NULL,
    PRIMARY KEY (saga_id, position)
);
CREATE INDEX reservation_lines_sku ON reservation_lines (sku);
