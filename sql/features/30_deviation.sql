-- relation: feat_deviation
-- family: deviation
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- windows: 1h
-- columns:
--   {metric}__zscore_{window}  (value - window mean) / window standard deviation; NULL without a
--                              value or when the deviation is NULL or 0
--   {metric}__ratio_{window}   value / window mean; NULL without a value or when the mean is 0
SELECT
    b.host,
    b.ts,
{%- for m in metrics %}{% set outer_last = loop.last %}{% for w in windows %}
    (b.{{ m.name | ident }} - r.{{ (m.name ~ "__mean_" ~ w.name) | ident }})
        / nullif(r.{{ (m.name ~ "__std_" ~ w.name) | ident }}, 0) AS {{ (m.name ~ "__zscore_" ~ w.name) | ident }},
    b.{{ m.name | ident }} / nullif(r.{{ (m.name ~ "__mean_" ~ w.name) | ident }}, 0) AS {{ (m.name ~ "__ratio_" ~ w.name) | ident }}{{ "," if not (outer_last and loop.last) }}
{%- endfor %}{% endfor %}
FROM feat_base AS b
JOIN feat_rolling AS r USING (host, ts)
