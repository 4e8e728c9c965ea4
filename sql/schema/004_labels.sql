-- labels: one row per labelled anomaly window [start_ts, end_ts) of a host, from incidents
-- (source = 'incident', 'csv', ...) or the simulation framework (source = 'simulation').
CREATE TABLE IF NOT EXISTS labels (
    label_id         VARCHAR     NOT NULL,
    host             VARCHAR     NOT NULL,
    start_ts         TIMESTAMPTZ NOT NULL,
    end_ts           TIMESTAMPTZ NOT NULL,
    type             VARCHAR     NOT NULL,
    severity         VARCHAR,
    affected_metrics VARCHAR[],
    source           VARCHAR     NOT NULL,
    description      VARCHAR,
    created_at       TIMESTAMPTZ NOT NULL
);
