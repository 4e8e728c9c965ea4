-- relation: feat_seasonality
-- family: seasonality
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- lags: 1d 7d
-- windows: 15m
-- The value "at the same time" one lag earlier is the latest sample of the metric with ts in
-- (t - lag - 5m, t - lag]; call its time s. The 15-minute window one lag earlier is (s - 15m, s],
-- compared with the window (t - 15m, t] of feat_rolling: a smoothed comparison that a single
-- noisy sample cannot swing, for shifts in level (mean) and in noise (std).
-- Reads raw_metrics over (start - lag - 5m - 15m, end - lag) for each lag.
-- columns:
--   {metric}__diff_{lag}           value minus the value at the same time one lag earlier; NULL
--                                  when either is missing
--   {metric}__missing_{lag}        TRUE when the metric has no sample at the same time one lag
--                                  earlier
--   {metric}__mean_15m_diff_{lag}  mean of the 15-minute window minus that mean one lag earlier
--                                  (window ending at the same sample); NULL when that is missing
--   {metric}__std_15m_ratio_{lag}  standard deviation (n - 1) of the 15-minute window over that of
--                                  the window one lag earlier; NULL when either is NULL or the
--                                  earlier one is 0
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
    WHERE source = $source AND ts > $start - {{ l.interval }} - {{ tolerance }} - INTERVAL '{{ windows[0].seconds }} seconds'
        AND ts < $end - {{ l.interval }}
    GROUP BY host, ts
),
windowed_{{ l.name }} AS (
    -- the 15-minute window (s - 15m, s] at each of those timestamps
    SELECT
        *,
{%- for m in metrics %}
        avg({{ m.name | ident }}) OVER w AS {{ ("mean__" ~ m.name) | ident }},
        stddev_samp({{ m.name | ident }}) OVER w AS {{ ("std__" ~ m.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM history_{{ l.name }}
    WINDOW w AS (PARTITION BY host ORDER BY shifted__ts RANGE BETWEEN {{ windows[0].frame }} PRECEDING AND CURRENT ROW)
),
latest_{{ l.name }} AS (
    -- per metric, the latest sample at or before each of those timestamps, and when it was taken
    SELECT
        host,
        shifted__ts,
{%- for m in metrics %}
        last_value({{ m.name | ident }} IGNORE NULLS) OVER w AS {{ ("value__" ~ m.name) | ident }},
        last_value(CASE WHEN {{ m.name | ident }} IS NOT NULL THEN shifted__ts END IGNORE NULLS) OVER w AS {{ ("at__" ~ m.name) | ident }},
        last_value(CASE WHEN {{ m.name | ident }} IS NOT NULL THEN {{ ("mean__" ~ m.name) | ident }} END IGNORE NULLS) OVER w AS {{ ("mean__" ~ m.name) | ident }},
        -- a window of one sample has no std: -1 stands for it, so IGNORE NULLS does not reach back
        last_value(CASE WHEN {{ m.name | ident }} IS NOT NULL THEN coalesce({{ ("std__" ~ m.name) | ident }}, -1) END IGNORE NULLS) OVER w AS {{ ("std__" ~ m.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM windowed_{{ l.name }}
    WINDOW w AS (PARTITION BY host ORDER BY shifted__ts ROWS UNBOUNDED PRECEDING)
),
{%- endfor %}
targets AS (
    SELECT
        b.*,
{%- for m in metrics %}
        r.{{ (m.name ~ "__mean_" ~ windows[0].name) | ident }} AS {{ ("mean__" ~ m.name) | ident }},
        r.{{ (m.name ~ "__std_" ~ windows[0].name) | ident }} AS {{ ("std__" ~ m.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM feat_base AS b
    JOIN feat_rolling AS r USING (host, ts)
)
SELECT
    t.host,
    t.ts,
{%- for m in metrics %}{% set outer_last = loop.last %}{% for l in lags %}
    t.{{ m.name | ident }} - CASE WHEN l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} > t.ts - {{ tolerance }}
        THEN l_{{ l.name }}.{{ ("value__" ~ m.name) | ident }} END AS {{ (m.name ~ "__diff_" ~ l.name) | ident }},
    coalesce(l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} <= t.ts - {{ tolerance }}, TRUE) AS {{ (m.name ~ "__missing_" ~ l.name) | ident }},
    t.{{ ("mean__" ~ m.name) | ident }} - CASE WHEN l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} > t.ts - {{ tolerance }}
        THEN l_{{ l.name }}.{{ ("mean__" ~ m.name) | ident }} END AS {{ (m.name ~ "__mean_15m_diff_" ~ l.name) | ident }},
    t.{{ ("std__" ~ m.name) | ident }} / CASE WHEN l_{{ l.name }}.{{ ("at__" ~ m.name) | ident }} > t.ts - {{ tolerance }}
        THEN nullif(nullif(l_{{ l.name }}.{{ ("std__" ~ m.name) | ident }}, -1), 0) END AS {{ (m.name ~ "__std_15m_ratio_" ~ l.name) | ident }}{{ "," if not (outer_last and loop.last) }}
{%- endfor %}{% endfor %}
FROM targets AS t
{%- for l in lags %}
ASOF LEFT JOIN latest_{{ l.name }} AS l_{{ l.name }}
    ON t.host = l_{{ l.name }}.host AND t.ts >= l_{{ l.name }}.shifted__ts
{%- endfor %}
