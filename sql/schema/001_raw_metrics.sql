-- raw_metrics: one row per host x metric x timestamp (unique on host, metric, ts; enforced by the
-- ingest, which deletes an interval and inserts it in one transaction: DuckLake has no unique keys).
-- Columns: ts (UTC), host, metric (a name in metric_catalog), value, source, run_id, ingested_at.
CREATE TABLE IF NOT EXISTS raw_metrics (
    ts          TIMESTAMPTZ NOT NULL,
    host        VARCHAR     NOT NULL,
    metric      VARCHAR     NOT NULL,
    value       DOUBLE      NOT NULL,
    source      VARCHAR     NOT NULL,
    run_id      VARCHAR,
    ingested_at TIMESTAMPTZ NOT NULL
);
