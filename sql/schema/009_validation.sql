-- raw_staging: a source's interval as fetched and parsed, held until the raw_metrics suite passes.
-- The validation task reads it, then in one transaction either releases it into raw_metrics or
-- moves it to quarantine; either way the staged rows are removed. Consumers never read it.
CREATE TABLE IF NOT EXISTS raw_staging (
    batch_id       VARCHAR     NOT NULL,  -- one per staging attempt; ingest_log and quarantine carry it
    source         VARCHAR     NOT NULL,
    interval_start TIMESTAMPTZ NOT NULL,
    interval_end   TIMESTAMPTZ NOT NULL,
    run_id         VARCHAR     NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    host           VARCHAR     NOT NULL,
    metric         VARCHAR     NOT NULL,
    value          DOUBLE      NOT NULL,  -- NaN and infinity are kept: the suite judges them
    staged_at      TIMESTAMPTZ NOT NULL
);

-- validation_results: one row per expectation per validation of a batch; every attempt of a run
-- is its own batch, so history is kept. Query it with SQL; the Data Docs pages show the same.
CREATE TABLE IF NOT EXISTS validation_results (
    run_id             VARCHAR     NOT NULL,
    batch_id           VARCHAR     NOT NULL,  -- the batch validated (a re-run of a run is a new batch)
    suite              VARCHAR     NOT NULL,  -- raw_metrics, raw_completeness, features, scores
    source             VARCHAR     NOT NULL,
    interval_start     TIMESTAMPTZ NOT NULL,
    interval_end       TIMESTAMPTZ NOT NULL,
    expectation        VARCHAR     NOT NULL,  -- stable name, e.g. raw.value_not_nan
    expectation_type   VARCHAR     NOT NULL,  -- Great Expectations type, e.g. expect_column_values_to_not_be_null
    "column"           VARCHAR,
    severity           VARCHAR     NOT NULL,  -- critical or warning
    success            BOOLEAN     NOT NULL,
    observed_value     VARCHAR,
    unexpected_count   BIGINT,
    unexpected_percent DOUBLE,
    element_count      BIGINT,
    examples           VARCHAR,               -- a few unexpected values or keys
    report             VARCHAR,               -- the Data Docs page of this validation
    validated_at       TIMESTAMPTZ NOT NULL
);

-- quarantine_batches: one row per batch refused as a whole (a critical expectation failed, too
-- much of it did not parse, or it would have emptied data of the interval). Raw rows go to the
-- quarantine table (location 'table quarantine', same batch_id); feature rows to a Parquet file.
-- released_at is set when a later run of the same suite, source and interval passes.
CREATE TABLE IF NOT EXISTS quarantine_batches (
    run_id           VARCHAR     NOT NULL,
    batch_id         VARCHAR     NOT NULL,
    suite            VARCHAR     NOT NULL,
    source           VARCHAR     NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,
    interval_end     TIMESTAMPTZ NOT NULL,
    reason           VARCHAR     NOT NULL,  -- failed critical expectations, comma-separated, or why else
    detail           VARCHAR     NOT NULL,  -- the error message of the failed task
    rows             BIGINT      NOT NULL,
    location         VARCHAR     NOT NULL,
    quarantined_at   TIMESTAMPTZ NOT NULL,
    released_at      TIMESTAMPTZ,
    released_by_run  VARCHAR
);

-- Which staged batch a quarantined row or an ingest step belongs to (NULL before this migration).
-- ingest_log.status: 'staged', then 'loaded' (released), 'quarantined' (a critical expectation
-- failed) or 'rejected' (too much did not parse, or the shrink guard refused it).
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS batch_id VARCHAR;
ALTER TABLE ingest_log ADD COLUMN IF NOT EXISTS batch_id VARCHAR;
