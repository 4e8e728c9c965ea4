-- relation: feat_time
-- family: time
-- grain: one row per feat_base row inside the interval [$start, $end) (host x timestamp).
-- All in UTC.
-- columns:
--   hour_sin    sin(2 pi x seconds since UTC midnight / 86400)
--   hour_cos    cos(2 pi x seconds since UTC midnight / 86400)
--   dow_sin     sin(2 pi x day of week / 7), Monday = 0
--   dow_cos     cos(2 pi x day of week / 7), Monday = 0
--   is_weekend  TRUE on Saturday and Sunday (UTC)
SELECT
    host,
    ts,
    sin(2 * pi() * ((epoch_us(ts) - epoch_us(date_trunc('day', timezone('UTC', ts)))) / 1e6) / 86400) AS hour_sin,
    cos(2 * pi() * ((epoch_us(ts) - epoch_us(date_trunc('day', timezone('UTC', ts)))) / 1e6) / 86400) AS hour_cos,
    sin(2 * pi() * (isodow(timezone('UTC', ts)) - 1) / 7) AS dow_sin,
    cos(2 * pi() * (isodow(timezone('UTC', ts)) - 1) / 7) AS dow_cos,
    isodow(timezone('UTC', ts)) >= 6 AS is_weekend
FROM feat_base
WHERE ts >= $start
