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
WITH targets AS (
    SELECT b.host, b.ts, c.metric
    FROM feat_base AS b
    CROSS JOIN (VALUES {% for m in metrics %}({{ m.name | literal }}){{ ", " if not loop.last }}{% endfor %}) AS c(metric)
    WHERE b.ts >= $start
),
pasts AS (
{%- for l in lags %}
    SELECT
        t.host,
        t.ts,
        t.metric,
        {{ l.name | literal }} AS lag,
        CASE WHEN h.shifted_ts > t.ts - {{ tolerance }} THEN h.value END AS past
    FROM targets AS t
    ASOF LEFT JOIN (
        SELECT host, metric, ts + {{ l.interval }} AS shifted_ts, value
        FROM raw_metrics
        WHERE source = $source AND ts > $start - {{ l.interval }} - {{ tolerance }} AND ts < $end - {{ l.interval }}
    ) AS h
        ON t.host = h.host AND t.metric = h.metric AND t.ts >= h.shifted_ts
{%- if not loop.last %}
    UNION ALL
{%- endif %}
{%- endfor %}
),
wide AS (
    SELECT
        host,
        ts,
{%- for m in metrics %}{% set outer_last = loop.last %}{% for l in lags %}
        max(past) FILTER (WHERE metric = {{ m.name | literal }} AND lag = {{ l.name | literal }}) AS {{ ("past_" ~ l.name ~ "__" ~ m.name) | ident }}{{ "," if not (outer_last and loop.last) }}
{%- endfor %}{% endfor %}
    FROM pasts
    GROUP BY host, ts
)
SELECT
    b.host,
    b.ts,
{%- for m in metrics %}{% set outer_last = loop.last %}{% for l in lags %}
    b.{{ m.name | ident }} - w.{{ ("past_" ~ l.name ~ "__" ~ m.name) | ident }} AS {{ (m.name ~ "__diff_" ~ l.name) | ident }},
    w.{{ ("past_" ~ l.name ~ "__" ~ m.name) | ident }} IS NULL AS {{ (m.name ~ "__missing_" ~ l.name) | ident }}{{ "," if not (outer_last and loop.last) }}
{%- endfor %}{% endfor %}
FROM feat_base AS b
JOIN wide AS w USING (host, ts)
