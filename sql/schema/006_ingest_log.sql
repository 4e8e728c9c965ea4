-- ingest_log: one row per ingest attempt of a source's interval (a re-run adds a row; the latest wins).
CREATE TABLE IF NOT EXISTS ingest_log (
    run_id           VARCHAR     NOT NULL,
    source           VARCHAR     NOT NULL,
    interval_start   TIMESTAMPTZ NOT NULL,
    interval_end     TIMESTAMPTZ NOT NULL,
    status           VARCHAR     NOT NULL,  -- 'loaded' or 'rejected'
    rows_fetched     BIGINT      NOT NULL,
    rows_loaded      BIGINT      NOT NULL,
    rows_quarantined BIGINT      NOT NULL,
    message          VARCHAR,
    finished_at      TIMESTAMPTZ NOT NULL
);
