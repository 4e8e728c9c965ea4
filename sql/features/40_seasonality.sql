-- relation: feat_seasonality
-- family: seasonality
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- lags: 1d 7d
-- The value "at the same time" one lag earlier is the latest sample of the metric with ts in
-- (t - lag - 5m, t - lag]. Reads raw_metrics over (start - lag - 5m, end - lag) for each lag.
-- columns:
--   {metric}__diff_{lag}     value minus the value at the same time one lag earlier; NULL when
--                            either is missing
--   {metric}__missing_{lag}  TRUE when the metric has no sample at the same time one lag earlier
WITH
{%- for l in lags %}
history_{{ l.name }} AS (
    -- the source's samples one lag back, one wide row per host and timestamp, moved forward by the lag
    SELECT
        host,
        ts + {{ l.interval }} AS shifted__ts,
{%- for m in metrics %}
        max(value) FILTER (WHERE metric = {{ m.name | literal }}) AS {{ m.name | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM raw_metrics
    WHERE source = $source AND ts > $start - {{ l.interval }} - {{ tolerance }} AND ts < $end - {{ l.interval }}
    GROUP BY host, ts
),
latest_{{ l.name }} AS (
    -- per metric, the latest sample at or before each of those timestamps, and when it was taken
    SELECT
        host,
        shifted__ts,
{%- for m in metrics %}
        last_value({{ m.name | ident }} IGNORE NULLS) OVER w AS {{ ("value__" ~ m.name) | ident }},
        last_value(CASE WHEN {{ m.name | ident }} IS NOT NULL THEN shifted__ts END IGNORE NULLS) OVER w AS {{ ("at__" ~ m.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM history_{{ l.name }}
    WINDOW w AS (PARTITION BY host ORDER BY shifted__ts ROWS UNBOUNDED PRECEDING)
),
{%- endfor %}
targets AS (
    SELECT * FROM feat_base WHERE ts >= $start
)
SELECT
    t.host,
    t.ts,
{%- for m in metrics %}{% set outer_last = loop.last %}{% for l in lags %}
    t.{{ m.name | ident }} - CASE WHEN l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} > t.ts - {{ tolerance }}
        THEN l_{{ l.name }}.{{ ("value__" ~ m.name) | ident }} END AS {{ (m.name ~ "__diff_" ~ l.name) | ident }},
    coalesce(l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} <= t.ts - {{ tolerance }}, TRUE) AS {{ (m.name ~ "__missing_" ~ l.name) | ident }}{{ "," if not (outer_last and loop.last) }}
{%- endfor %}{% endfor %}
FROM targets AS t
{%- for l in lags %}
ASOF LEFT JOIN latest_{{ l.name }} AS l_{{ l.name }}
    ON t.host = l_{{ l.name }}.host AND t.ts >= l_{{ l.name }}.shifted__ts
{%- endfor %}
