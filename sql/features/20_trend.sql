-- relation: feat_trend
-- family: trend
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- windows: 15m 1h
-- columns:
--   {metric}__slope_{window}  least-squares slope of the metric against time, per second, over the
--                             samples in (t - window, t]; NULL below 2 samples
--   {metric}__rate            first difference per second from the previous sample of the metric in
--                             (t - 1h, t); for counters a drop is a reset, so the rate is value / dt;
--                             NULL without a current or previous sample
-- Time differences are taken in integer microseconds, then seconds: epoch() of a timestamp near
-- 1.7e9 s is already rounded to ~0.24 us, which cost rates and slopes 1e-8 relative. Slopes take
-- time from $start (any anchor gives the same slope, small numbers keep more digits).
WITH prev AS (
    SELECT
        host,
        ts,
        (epoch_us(ts) - epoch_us($start)) / 1e6 AS t__seconds,
{%- for w in windows %}
        {{ ("rows_" ~ w.name) | ident }},
{%- endfor %}
{%- for m in metrics %}
        {{ m.name | ident }},
        lag({{ m.name | ident }} IGNORE NULLS) OVER w AS {{ ("prev__" ~ m.name) | ident }},
        lag(CASE WHEN {{ m.name | ident }} IS NOT NULL THEN ts END IGNORE NULLS) OVER w AS {{ ("prev_ts__" ~ m.name) | ident }}{{ "," if not loop.last }}
{%- endfor %}
    FROM feat_base
    WINDOW w AS (PARTITION BY host ORDER BY ts)
),
slopes AS (
    SELECT
        host,
        ts,
    {%- for m in metrics %}{% set outer_last = loop.last %}
    {%- for w in windows %}
        regr_slope({{ m.name | ident }}, t__seconds) OVER w_{{ w.name }} AS {{ ("raw_slope_" ~ w.name ~ "__" ~ m.name) | ident }},
    {%- endfor %}
        CASE
            WHEN {{ ("prev_ts__" ~ m.name) | ident }} IS NULL OR {{ ("prev_ts__" ~ m.name) | ident }} <= ts - INTERVAL 1 HOUR THEN NULL
    {%- if m.kind == "counter" %}
            WHEN {{ m.name | ident }} < {{ ("prev__" ~ m.name) | ident }}
                THEN {{ m.name | ident }} / ((epoch_us(ts) - epoch_us({{ ("prev_ts__" ~ m.name) | ident }})) / 1e6)
    {%- endif %}
            ELSE ({{ m.name | ident }} - {{ ("prev__" ~ m.name) | ident }}) / ((epoch_us(ts) - epoch_us({{ ("prev_ts__" ~ m.name) | ident }})) / 1e6)
        END AS {{ (m.name ~ "__rate") | ident }}{{ "," if not outer_last }}
    {%- endfor %}
    FROM prev
    WINDOW
    {%- for w in windows %}
        w_{{ w.name }} AS (PARTITION BY host ORDER BY ts ROWS BETWEEN {{ ("rows_" ~ w.name) | ident }} - 1 PRECEDING AND CURRENT ROW){{ "," if not loop.last }}
    {%- endfor %}
)
-- regr_slope gives NaN below 2 samples: that is NULL here
SELECT
    host,
    ts,
{%- for m in metrics %}{% set outer_last = loop.last %}
{%- for w in windows %}
    CASE WHEN NOT isnan({{ ("raw_slope_" ~ w.name ~ "__" ~ m.name) | ident }}) THEN {{ ("raw_slope_" ~ w.name ~ "__" ~ m.name) | ident }} END
        AS {{ (m.name ~ "__slope_" ~ w.name) | ident }},
{%- endfor %}
    {{ (m.name ~ "__rate") | ident }}{{ "," if not outer_last }}
{%- endfor %}
FROM slopes
WHERE ts >= $start  -- the lookback rows only feed the windows
