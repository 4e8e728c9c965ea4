-- scores.is_alert: score >= the model's alert threshold (tuned on validation data for the best
-- event F1), the points incidents are made of. is_anomaly (score >= the point threshold, tuned for
-- point recall) flags more points, borderline ones included; a run of them alone raises no
-- incident. NULL on rows scored before this column existed: incidents then use is_anomaly.
ALTER TABLE scores ADD COLUMN is_alert BOOLEAN;
