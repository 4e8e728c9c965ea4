-- models: the model registry, one row per trained ensemble (version 1, 2, ...).
-- status: 'candidate' (registered, not serving), 'champion' (the one scoring uses; at most one),
-- 'retired' (a former champion). reason says why a candidate was not promoted, or why a model
-- was promoted, retired or rolled back. Artifacts live under artifacts/ in each library's native
-- format; sha256 (JSON: file -> hash) is checked before any of them is read.
CREATE TABLE IF NOT EXISTS models (
    version        INTEGER     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    status         VARCHAR     NOT NULL,
    run_id         VARCHAR,
    params         VARCHAR     NOT NULL,  -- JSON: the ensemble's parameters
    features       VARCHAR[]   NOT NULL,
    training       VARCHAR     NOT NULL,  -- JSON: source, range, labels, tolerance, snapshot, split
    snapshot       BIGINT      NOT NULL,  -- lake snapshot the training set was read at
    data_start     TIMESTAMPTZ NOT NULL,
    data_end       TIMESTAMPTZ NOT NULL,
    threshold      DOUBLE      NOT NULL,  -- tuned on the validation span
    metrics        VARCHAR     NOT NULL,  -- JSON: evaluation on the test span
    primary_metric VARCHAR     NOT NULL,
    primary_value  DOUBLE,
    artifacts      VARCHAR     NOT NULL,  -- directory
    sha256         VARCHAR     NOT NULL,  -- JSON: file -> SHA-256
    reason         VARCHAR,
    promoted_at    TIMESTAMPTZ,
    retired_at     TIMESTAMPTZ
);
