-- metric_catalog: one row per metric name the store accepts; kind is one of
-- ratio, percent, gauge, counter, bytes, rate and drives validation ranges and feature logic.
CREATE TABLE IF NOT EXISTS metric_catalog (
    name        VARCHAR NOT NULL,
    unit        VARCHAR,
    kind        VARCHAR NOT NULL,
    description VARCHAR,
    origin      VARCHAR NOT NULL  -- 'default' (seeded by the product) or 'user'
);
