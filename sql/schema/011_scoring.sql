-- scores: one row per (source, host, ts) scored by the score_metrics DAG. A re-run or a backfill
-- of an interval replaces that source's rows of the interval in one transaction, so there is at
-- most one row per (source, host, ts). score is the ensemble's probability of an anomaly;
-- is_anomaly = score >= the model's point threshold (is_alert: see 012_score_alerts.sql).
CREATE TABLE IF NOT EXISTS scores (
    source        VARCHAR     NOT NULL,
    host          VARCHAR     NOT NULL,
    ts            TIMESTAMPTZ NOT NULL,
    score         DOUBLE      NOT NULL,
    is_anomaly    BOOLEAN     NOT NULL,
    model_version INTEGER     NOT NULL,
    run_id        VARCHAR,
    scored_at     TIMESTAMPTZ NOT NULL
);

-- score_log: one row per scoring of a source's interval (a re-run adds a row): what was scored,
-- by which model, and the gap: hosts whose features were missing for part of the interval.
CREATE TABLE IF NOT EXISTS score_log (
    run_id         VARCHAR,
    source         VARCHAR     NOT NULL,
    interval_start TIMESTAMPTZ NOT NULL,
    interval_end   TIMESTAMPTZ NOT NULL,
    model_version  INTEGER     NOT NULL,
    rows_scored    BIGINT      NOT NULL,
    anomalies      BIGINT      NOT NULL,
    hosts          BIGINT      NOT NULL,
    expected_rows  BIGINT      NOT NULL,  -- hosts x timestamps seen in the interval's features
    missing        VARCHAR     NOT NULL,  -- JSON: host -> timestamps without features
    seconds        DOUBLE      NOT NULL,
    finished_at    TIMESTAMPTZ NOT NULL
);

-- incidents: runs of alert points (scores.is_alert, added by 012; is_anomaly for rows scored
-- before it) of one host (gaps up to ANOMALY_INCIDENT_GAP_SECONDS merged), across interval boundaries. incident_id = md5(source, host, start_ts): stable across
-- re-runs and backfills as long as the run's first point is the same. An incident still open at
-- the end of an interval is extended by the next run (same id), not duplicated.
CREATE TABLE IF NOT EXISTS incidents (
    incident_id   VARCHAR     NOT NULL,
    source        VARCHAR     NOT NULL,
    host          VARCHAR     NOT NULL,
    start_ts      TIMESTAMPTZ NOT NULL,
    end_ts        TIMESTAMPTZ NOT NULL,  -- last alert point (inclusive)
    peak_score    DOUBLE      NOT NULL,
    mean_score    DOUBLE      NOT NULL,
    points        BIGINT      NOT NULL,
    model_version INTEGER     NOT NULL,
    top_metrics   VARCHAR[]   NOT NULL,  -- metrics of the top contributing features, best first
    run_id        VARCHAR,
    updated_at    TIMESTAMPTZ NOT NULL,
    explained_at  TIMESTAMPTZ            -- NULL until incident_explanations hold its current points
);

-- incident_explanations: per incident, the top contributing features (tree SHAP of the XGBoost
-- member, summed over the incident's points; log-odds of that member), rank 1 = largest |sum|.
CREATE TABLE IF NOT EXISTS incident_explanations (
    incident_id   VARCHAR NOT NULL,
    rank          INTEGER NOT NULL,
    feature       VARCHAR NOT NULL,
    metric        VARCHAR,
    contribution  DOUBLE  NOT NULL,
    model_version INTEGER NOT NULL
);

-- drift: one row per check and measure: kind 'feature' (PSI of one feature), 'score' (PSI of the
-- score distribution) or 'alert_rate' (share of points flagged); drifted = value > threshold.
CREATE TABLE IF NOT EXISTS drift (
    checked_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR,
    source        VARCHAR     NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    window_end    TIMESTAMPTZ NOT NULL,
    model_version INTEGER     NOT NULL,
    kind          VARCHAR     NOT NULL,
    name          VARCHAR     NOT NULL,
    value         DOUBLE,
    reference     DOUBLE,
    threshold     DOUBLE      NOT NULL,
    drifted       BOOLEAN     NOT NULL,
    report_path   VARCHAR
);

-- publish_log: what was published to Postgres, so the next run catches up what a failed one missed.
CREATE TABLE IF NOT EXISTS publish_log (
    run_id         VARCHAR,
    conn_id        VARCHAR     NOT NULL,
    what           VARCHAR     NOT NULL,  -- 'incidents' or 'scores'
    watermark      TIMESTAMPTZ NOT NULL,  -- rows updated/scored up to here are published
    rows           BIGINT      NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL
);
