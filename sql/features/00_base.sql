-- relation: feat_base
-- family: base
-- grain: one row per host x timestamp at which the host has at least one raw sample of the
--        source $source, for timestamps in ($read_start, $end): the interval plus the lookback
--        of the longest window. A metric the host never reports is an all-NULL column, so its
--        features are NULL with a count of 0.
-- windows: 5m 15m 1h
-- columns:
--   {metric}        the metric's sample at t; NULL where the host has no sample of it at t
--   rows_{window}   timestamps of the host with any sample in (t - window, t]; later files use it
--                   as the frame length (ROWS BETWEEN rows_5m - 1 PRECEDING), which is exactly
--                   the time window and cheaper for DuckDB than a RANGE frame
-- The other files read feat_base (seasonality also reads the raw rows one lag back), and every
-- window ends at the current row: a feature at t uses only raw rows with ts <= t.
WITH pivoted AS (
    SELECT
        host,
        ts,
{%- for m in metrics %}
        max(value) FILTER (WHERE metric = {{ m.name | literal }}) AS {{ m.name | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM raw_metrics
    WHERE source = $source AND ts > $read_start AND ts < $end
    GROUP BY host, ts
)
SELECT
    *,
{%- for w in windows %}
    count(*) OVER (PARTITION BY host ORDER BY ts RANGE BETWEEN {{ w.frame }} PRECEDING AND CURRENT ROW) AS {{ ("rows_" ~ w.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
FROM pivoted
