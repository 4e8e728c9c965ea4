"""Drift checks: PSI conventions, and a real check on a real lake with a registered model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly import registry
from anomaly.drift import (
    EPS,
    DriftError,
    bin_shares,
    check_drift,
    profile_path,
    psi,
    quantile_edges,
    reference_profile,
)
from anomaly.training import model_registry as reg
from anomaly.training.dataset import current_snapshot
from anomaly.training.ensemble import AnomalyEnsemble
from anomaly.training.metrics import evaluate, tune_threshold

SOURCE = "sim"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
FEATURES = [f"f{i}" for i in range(8)]
INFORMATIVE = FEATURES[:3]  # shifted during events: what the model learns from
SHIFTED = FEATURES[4:]  # moved in the drifted window; the model barely uses them
FAST = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1, "random_state": 0}
EVERY, LENGTH = 150, 12  # an event of 12 minutes every 150 minutes per host (8 % of points)


# --------------------------------------------------------------------------- psi


def test_psi_of_the_same_distribution_is_near_zero_and_of_a_shifted_one_large() -> None:
    rng = np.random.default_rng()
    reference = rng.normal(size=20_000)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, rng.normal(size=5_000)) < 0.02  # sampling noise only
    assert psi(reference, rng.normal(0.8, 1.0, size=5_000)) > 0.25
    assert psi(reference, rng.normal(0.0, 2.5, size=5_000)) > 0.25  # wider, same mean
    # values beyond the reference's range land in the open-ended outer bins
    assert psi(reference, np.full(1_000, 1e9)) > 5


def test_psi_counts_missing_values_in_their_own_bin() -> None:
    rng = np.random.default_rng()
    reference = rng.normal(size=10_000)
    reference[:500] = np.nan  # 5 % missing in the reference
    current = rng.normal(size=10_000)
    current[:500] = np.nan
    assert psi(reference, current) < 0.02
    current[:4_000] = np.nan  # the feature starts coming through as NULL: 40 % missing
    assert psi(reference, current) > 0.25
    assert psi(reference, np.full(100, np.nan)) > 2  # all NULL
    assert psi(reference, np.array([1.0, np.inf, -np.inf, 2.0]), bins=4) > 0  # inf counts as missing
    shares = bin_shares([0.0, 1.0, np.nan, np.inf], np.array([0.5]))
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.5])


def test_psi_of_a_constant_or_discrete_reference() -> None:
    constant = np.full(1_000, 3.0)
    np.testing.assert_array_equal(quantile_edges(constant)[-1:], [3.0])
    assert psi(constant, constant) == 0.0
    assert psi(constant, np.full(100, 3.5)) > 5  # above the constant
    assert psi(constant, np.full(100, 2.5)) > 5  # below it: a bin of its own too
    assert psi(np.full(10, np.nan), np.full(10, np.nan)) == 0.0  # never any value: nothing moved
    assert psi(np.full(10, np.nan), np.ones(10)) > 5
    # a 0/1 flag on 5 % of the points: two bins, so a change of its share is seen
    flag = (np.arange(2_000) % 20 == 0).astype(float)
    assert quantile_edges(flag).tolist() == [0.0]
    assert psi(flag, flag[::-1]) == 0.0
    assert psi(flag, (np.arange(2_000) % 4 == 0).astype(float)) > 0.25
    # an empty bin is floored at EPS: large and finite, never inf
    assert np.isfinite(psi(constant, np.full(10, 9.0)))
    assert psi(constant, np.full(10, 9.0)) == pytest.approx(
        2 * (1 - EPS) * np.log(1 / EPS),
        rel=1e-9,  # the "at" bin emptied, the "above" bin filled
    )
    with pytest.raises(ValueError, match="empty"):
        psi([], [1.0])
    with pytest.raises(ValueError, match="empty"):
        psi([1.0], [])


# --------------------------------------------------------------------------- end to end


def _points(rng: np.random.Generator, start: datetime, minutes: int, hosts: int, shift=()) -> pd.DataFrame:
    """A minute grid of noise per host; events shift INFORMATIVE by 4 for LENGTH minutes out of
    EVERY, hosts' events spread evenly in time; ``shift`` moves those features by 2 everywhere."""
    frames = []
    for h in range(hosts):
        x = rng.normal(size=(minutes, len(FEATURES)))
        phase = (np.arange(minutes) + h * EVERY // hosts) % EVERY
        in_event = phase >= EVERY - LENGTH
        x[np.ix_(in_event, [FEATURES.index(f) for f in INFORMATIVE])] += 4.0
        x[:, [FEATURES.index(f) for f in shift]] += 2.0
        f = pd.DataFrame(x, columns=FEATURES)
        f.insert(
            0, "ts", pd.date_range(start, periods=minutes, freq="min", tz="UTC").astype("datetime64[us, UTC]")
        )
        f.insert(0, "host", f"h{h:02d}")
        f.insert(0, "source", SOURCE)
        f["event_id"] = np.where(in_event, f"h{h}", None)
        frames.append(f)
    return pd.concat(frames, ignore_index=True).sort_values(["ts", "host"], ignore_index=True)


def _store_features(lake, points: pd.DataFrame, *, create: bool = False) -> int:
    """Add ``points``' feature rows to ``features`` (creating it); returns the lake snapshot after."""
    rows = points[["source", "host", "ts", *FEATURES]]

    def work(con) -> None:
        con.register("new_rows", rows)
        if create:
            con.execute(f"CREATE TABLE {registry.FEATURES} AS SELECT * FROM new_rows")
        else:
            con.execute(f"INSERT INTO {registry.FEATURES} SELECT * FROM new_rows")
        con.unregister("new_rows")

    lake.write(work)
    with lake.connection() as con:
        return current_snapshot(con)


def _store_scores(lake, points: pd.DataFrame, model: AnomalyEnsemble, record) -> None:
    scores = model.decision_function(points[FEATURES])
    rows = pd.DataFrame(
        {
            "source": SOURCE,
            "host": points["host"],
            "ts": points["ts"],
            "score": scores,
            "is_anomaly": scores >= record.threshold,
            "is_alert": scores >= record.alert_threshold,
            "model_version": record.version,
            "run_id": "score-run",
            "scored_at": pd.Timestamp("2026-07-01", tz="UTC"),
        }
    )

    def work(con) -> None:
        con.register("new_scores", rows)
        con.execute(f"INSERT INTO {registry.SCORES} BY NAME SELECT * FROM new_scores")
        con.unregister("new_scores")

    lake.write(work)


def _drift_rows(lake, window_start: datetime) -> pd.DataFrame:
    return lake.query(
        f"SELECT * EXCLUDE (checked_at) FROM {registry.DRIFT} WHERE window_start = ? ORDER BY kind, name",
        [window_start],
    )


def test_a_drift_check_end_to_end(lake, anomaly_home) -> None:
    rng = np.random.default_rng()
    # ---- a model trained on the features of one day, registered at the lake's snapshot
    history = _points(rng, T0, minutes=1440, hosts=6)
    snapshot = _store_features(lake, history, create=True)
    history["label"] = history["event_id"].notna().astype("int8")
    half = len(history) // 2
    train, test = history.iloc[:half], history.iloc[half:]
    model = AnomalyEnsemble(**FAST).fit(train[FEATURES], train["label"].to_numpy(), time=train["ts"])
    test_scores = model.decision_function(test[FEATURES])
    threshold = tune_threshold(test["label"].to_numpy(), test_scores, 0.9)
    training = {
        "source": SOURCE,
        "snapshot": snapshot,
        "start": T0,
        "end": T0 + timedelta(days=1),
        "features": FEATURES,
        "split": {"test_start": test["ts"].min().isoformat()},
    }
    metrics = evaluate(test.assign(fault_type="shift"), test_scores, threshold)
    record = reg.register(
        model, training=training, threshold=threshold, metrics=metrics, run_id="t", lake=lake
    )

    # ---- two windows a day later: one like the training data, one with four features moved
    stable_start = T0 + timedelta(days=2)
    drift_start = stable_start + timedelta(hours=1)
    stable = _points(rng, stable_start, minutes=60, hosts=30)
    moved = _points(rng, drift_start, minutes=60, hosts=30, shift=SHIFTED)
    # rows written into the training range after the model's snapshot never reach its reference
    late = _points(rng, T0, minutes=60, hosts=1, shift=FEATURES).assign(host="late")
    _store_features(lake, pd.concat([stable, moved, late]))

    with pytest.raises(DriftError, match="anomaly models promote"):
        check_drift(SOURCE, stable_start, drift_start, lake=lake)  # no champion yet
    reg.promote(record.version, lake=lake)
    with pytest.raises(DriftError, match=r"no scores by model v1 .* score the window first"):
        check_drift(SOURCE, stable_start, drift_start, lake=lake)
    _store_scores(lake, pd.concat([stable, moved]), model, record)

    # ---- the stable window
    result = check_drift(SOURCE, stable_start, drift_start, run_id="r1", lake=lake)
    assert not result.drifted, result.reasons
    assert result.reasons == [] and result.drifted_features == []
    assert (result.model_version, result.window_rows, result.scored_rows) == (1, 1800, 1800)
    assert result.score_psi < 0.25
    assert result.alert_rate <= result.alert_rate_limit
    assert result.expected_alert_rate == pytest.approx(metrics["point"]["flagged"] / len(test))
    assert max(result.feature_psi.values()) < 0.25
    cached = profile_path(record)
    assert cached.exists()
    assert reference_profile(record, lake=lake).rows == len(history)  # read at the snapshot
    stamp = cached.stat().st_mtime_ns

    # ---- the drifted window: the moved features are named, worst first
    drifted = check_drift(SOURCE, drift_start, drift_start + timedelta(hours=1), run_id="r2", lake=lake)
    assert drifted.drifted
    assert sorted(drifted.drifted_features) == sorted(SHIFTED)
    assert list(drifted.feature_psi)[: len(SHIFTED)] == drifted.drifted_features
    assert all(drifted.feature_psi[f] > 1.0 for f in SHIFTED)
    assert drifted.reasons[0].startswith(f"{len(SHIFTED)} features drifted")
    assert cached.stat().st_mtime_ns == stamp  # the reference was read, not recomputed

    rows = _drift_rows(lake, drift_start)
    assert len(rows) == drifted.rows == len(FEATURES) + 2
    assert rows["kind"].value_counts().to_dict() == {"feature": len(FEATURES), "score": 1, "alert_rate": 1}
    feature_rows = rows[rows["kind"] == "feature"].set_index("name")
    assert sorted(feature_rows.index[feature_rows["drifted"]]) == sorted(SHIFTED)
    assert feature_rows["value"].to_dict() == pytest.approx(drifted.feature_psi)
    assert (feature_rows["threshold"] == 0.25).all() and feature_rows["reference"].isna().all()
    alert = rows[rows["kind"] == "alert_rate"].iloc[0]
    assert (alert["value"], alert["reference"], alert["threshold"]) == pytest.approx(
        (drifted.alert_rate, drifted.expected_alert_rate, drifted.alert_rate_limit)
    )
    assert set(rows["run_id"]) == {"r2"} and set(rows["model_version"]) == {1}
    assert set(rows["report_path"]) == {str(drifted.report)}

    # ---- the report: one page per check, self-contained, plots embedded
    page = drifted.report.read_text()
    assert drifted.report.parent == anomaly_home.resolve() / "reports" / "drift"
    assert page.count('src="data:image/png;base64,') == 3
    assert "DRIFTED" in page and all(f in page for f in SHIFTED)
    assert "http://" not in page and "https://" not in page
    assert "no drift" in result.report.read_text()

    # ---- a re-run replaces the window's rows: same rows, no duplicates
    again = check_drift(SOURCE, drift_start, drift_start + timedelta(hours=1), run_id="r2", lake=lake)
    assert again.drifted_features == drifted.drifted_features and again.report == drifted.report
    pd.testing.assert_frame_equal(_drift_rows(lake, drift_start), rows)
    assert len(lake.query(f"SELECT * FROM {registry.DRIFT}")) == 2 * (len(FEATURES) + 2)
    assert cached.stat().st_mtime_ns == stamp

    # ---- the cache: recomputing gives the same reference (deterministic sample, same scores)
    content = cached.read_text()
    reference_profile(record, lake=lake, refresh=True)
    assert cached.stat().st_mtime_ns != stamp and cached.read_text() == content

    # ---- clear errors: a feature column gone from the table is named
    lake.write(lambda con: con.execute(f"ALTER TABLE {registry.FEATURES} DROP COLUMN f7"))
    with pytest.raises(DriftError, match=r"needs feature\(s\) missing from the features table: f7"):
        check_drift(SOURCE, stable_start, drift_start, lake=lake)
    with pytest.raises(DriftError, match="no model version 9"):
        check_drift(SOURCE, stable_start, drift_start, model_version=9, lake=lake)
