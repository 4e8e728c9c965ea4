-- feature_catalog: one row per column of the features table (rewritten by every feature build).
-- Columns: position (column order), name, family (rolling, trend, deviation, seasonality, cross,
-- time, base), metric (NULL for cross-metric and time features), window ('5m', '1h', '1d', ...),
-- source_file (under sql/features/), description.
-- The features table itself is created by the first build, with one column per catalog row.
CREATE TABLE IF NOT EXISTS feature_catalog (
    position    INTEGER NOT NULL,
    name        VARCHAR NOT NULL,
    family      VARCHAR NOT NULL,
    metric      VARCHAR,
    "window"    VARCHAR,
    source_file VARCHAR NOT NULL,
    description VARCHAR NOT NULL
);

-- feature_log: one row per feature build of a source's interval (a re-run adds a row).
CREATE TABLE IF NOT EXISTS feature_log (
    run_id         VARCHAR,
    source         VARCHAR     NOT NULL,
    interval_start TIMESTAMPTZ NOT NULL,
    interval_end   TIMESTAMPTZ NOT NULL,
    rows_written   BIGINT      NOT NULL,
    hosts          BIGINT      NOT NULL,
    features       BIGINT      NOT NULL,
    seconds        DOUBLE      NOT NULL,
    finished_at    TIMESTAMPTZ NOT NULL
);
