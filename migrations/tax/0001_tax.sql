CREATE TABLE inbox (
    message_id  uuid PRIMARY KEY,
    saga_id     uuid NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    reply       jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- An empty region is the country's default rate for the category.
CREATE TABLE tax_rates (
    country  text NOT NULL,
    region   text NOT NULL DEFAULT '',
    category text NOT NULL,
    rate_bp  integer NOT NULL CHECK (rate_bp >= 0 AND rate_bp <= 10000),
    PRIMARY KEY (country, region, category)
);
