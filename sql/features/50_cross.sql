-- relation: feat_cross
-- family: cross
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- windows: 15m 1h
-- Pairs come from ANOMALY_FEATURE_PAIRS and ratios from ANOMALY_FEATURE_RATIOS; a pair or ratio
-- whose metrics are not both in metric_catalog is left out.
-- columns:
--   corr__{pair}_{window}  Pearson correlation of the two metrics over the samples in
--                          (t - window, t] where both exist; NULL below 2 such samples or when
--                          either is constant
--   {ratio}                numerator / denominator at t (bytes per packet, say); NULL when either
--                          is missing or the denominator is 0
SELECT
    host,
    ts
{%- for p in pairs %}{% for w in windows %},
    CASE WHEN count({{ p.a | ident }} + {{ p.b | ident }}) OVER w_{{ w.name }} >= 2
              AND NOT isnan(corr({{ p.a | ident }}, {{ p.b | ident }}) OVER w_{{ w.name }})
         THEN greatest(-1.0, least(1.0, corr({{ p.a | ident }}, {{ p.b | ident }}) OVER w_{{ w.name }}))
    END AS {{ ("corr__" ~ p.name ~ "_" ~ w.name) | ident }}
{%- endfor %}{% endfor %}
{%- for r in ratios %},
    {{ r.num | ident }} / nullif({{ r.den | ident }}, 0) AS {{ r.name | ident }}
{%- endfor %}
FROM feat_base
{%- if pairs %}
WINDOW
{%- for w in windows %}
    w_{{ w.name }} AS (PARTITION BY host ORDER BY ts ROWS BETWEEN {{ ("rows_" ~ w.name) | ident }} - 1 PRECEDING AND CURRENT ROW){{ "," if not loop.last }}
{%- endfor %}
{%- endif %}
{%- if pairs %}
QUALIFY ts >= $start  -- the lookback rows only feed the windows
{%- else %}
WHERE ts >= $start
{%- endif %}
