-- quarantine: one row per rejected input row, kept with the reason it was rejected and the run that
-- rejected it. Raw text is kept (ts_raw, value_raw) so rows that would not parse are not lost.
CREATE TABLE IF NOT EXISTS quarantine (
    run_id         VARCHAR     NOT NULL,
    source         VARCHAR     NOT NULL,
    interval_start TIMESTAMPTZ NOT NULL,
    interval_end   TIMESTAMPTZ NOT NULL,
    reason         VARCHAR     NOT NULL,  -- a check name, e.g. 'nan_value'
    detail         VARCHAR,               -- a sentence a person can act on
    ts             TIMESTAMPTZ,           -- parsed timestamp when it parsed and had a time zone
    ts_raw         VARCHAR,
    host           VARCHAR,
    metric         VARCHAR,
    value          DOUBLE,                -- parsed value when it parsed
    value_raw      VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL
);
