"""Batch scoring on a simulated fleet: scores, incidents across intervals, backfill equality in any
order (hypothesis interleavings), explanations, gaps, NaN features and refusals."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simfleet import (
    anomaly_home,
    clear_scores,
    environment,
    incidents_of,
    scores_of,
    simulated_fleet,
    small_model,
)

HOUR = timedelta(hours=1)
HOURS = 12  # of day 2, scored hour by hour and as backfills
MIX_HOURS = 6  # of day 2, scored in random interleavings


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """3 hosts x 2 days with faults, features built, a small model trained and promoted."""
    from anomaly.training import model_registry

    with anomaly_home(tmp_path_factory.mktemp("scoring-home")):
        sc, lake = simulated_fleet("score")
        with environment(ANOMALY_ALERT_MIN_EVENTS="1"):  # its validation span holds a few events
            record = small_model(sc, lake)
        model_registry.promote(record.version, reason="test", lake=lake)
        # The incident mechanics below need incidents that cross hours. This small model's own
        # alert threshold (tuned on a validation span of a few events) pages on a few minutes
        # only, so these tests page on every flagged point (the operator override);
        # test_incidents_are_runs_of_the_models_alert_points checks the model's own threshold.
        with environment(ANOMALY_ALERT_THRESHOLD=str(record.threshold)):
            yield sc, lake


def _score_hours(sc, lake, hours, day_start):
    from anomaly.scoring import score_interval

    for h in hours:
        score_interval(
            sc.source_name, day_start + h * HOUR, day_start + (h + 1) * HOUR, f"run-{h}", lake=lake
        )


def test_hourly_runs_equal_one_backfill_in_any_order_without_duplicates(fleet) -> None:
    from anomaly.scoring import score_interval

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    clear_scores(lake, sc.source_name)
    _score_hours(sc, lake, range(HOURS), day2)
    hourly, incidents = scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)
    assert len(hourly) > 0 and not hourly.duplicated(["host", "ts"]).any()
    assert incidents["points"].sum() == hourly["is_alert"].sum() > 0
    # an incident crossing an hour boundary is one incident, not one per hour
    crossing = incidents[incidents["start_ts"].dt.floor("h") != incidents["end_ts"].dt.floor("h")]
    assert len(crossing) > 0

    clear_scores(lake, sc.source_name)
    score_interval(sc.source_name, day2, day2 + HOURS * HOUR, "backfill", lake=lake)
    pd.testing.assert_frame_equal(scores_of(lake, sc.source_name), hourly)
    pd.testing.assert_frame_equal(incidents_of(lake, sc.source_name), incidents)


@pytest.fixture(scope="module")
def backfilled(fleet):
    """The reference: scores and incidents of MIX_HOURS of day 2 from one backfill."""
    from anomaly.scoring import score_interval

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    clear_scores(lake, sc.source_name)
    score_interval(sc.source_name, day2, day2 + MIX_HOURS * HOUR, "reference", lake=lake)
    return scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)


# a backfill or re-run of hours [a, b) of day 2
_jobs = st.tuples(st.integers(0, MIX_HOURS - 1), st.integers(1, 4)).map(
    lambda t: (t[0], min(MIX_HOURS, t[0] + t[1]))
)


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(extra=st.lists(_jobs, min_size=1, max_size=4), order=st.randoms(use_true_random=False))
def test_any_interleaving_of_runs_reruns_and_overlapping_backfills_gives_the_same_rows(
    fleet, backfilled, extra, order
) -> None:
    from anomaly.scoring import score_interval

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    reference_scores, reference_incidents = backfilled
    clear_scores(lake, sc.source_name)
    jobs = [(h, h + 1) for h in range(MIX_HOURS)] + extra  # every hour at least once
    order.shuffle(jobs)
    for a, b in jobs:
        score_interval(sc.source_name, day2 + a * HOUR, day2 + b * HOUR, f"mix-{a}-{b}", lake=lake)
    scores = scores_of(lake, sc.source_name)
    assert not scores.duplicated(["host", "ts"]).any()
    pd.testing.assert_frame_equal(scores, reference_scores, obj=f"scores after {jobs}")
    pd.testing.assert_frame_equal(
        incidents_of(lake, sc.source_name), reference_incidents, obj=f"incidents after {jobs}"
    )


def test_an_incident_open_at_the_end_of_an_interval_is_extended_with_the_same_id(fleet) -> None:
    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    clear_scores(lake, sc.source_name)
    _score_hours(sc, lake, range(HOURS), day2)
    full = incidents_of(lake, sc.source_name)
    # an incident that crosses an hour boundary, cut at the first boundary after its start
    crossing = full[full["start_ts"].dt.floor("h") + HOUR <= full["end_ts"]]
    assert len(crossing) > 0, full
    long = crossing.iloc[0]
    cut = long["start_ts"].floor("h") + HOUR
    clear_scores(lake, sc.source_name)
    first_hours = range(0, int((cut - pd.Timestamp(day2)) / HOUR))
    _score_hours(sc, lake, first_hours, day2)
    open_ = incidents_of(lake, sc.source_name)
    partial = open_[open_["incident_id"] == long["incident_id"]].iloc[0]
    assert partial["end_ts"] < long["end_ts"] and partial["points"] < long["points"]
    _score_hours(sc, lake, range(len(first_hours), HOURS), day2)
    after = incidents_of(lake, sc.source_name)
    pd.testing.assert_frame_equal(after, full)
    assert (after["incident_id"] == long["incident_id"]).sum() == 1


def test_incidents_are_runs_of_the_models_alert_points(fleet) -> None:
    """Without the override, a point raises an incident when its score reaches the model's alert
    threshold (tuned for event F1), not the lower point threshold behind is_anomaly."""
    from anomaly.scoring import score_interval
    from anomaly.training import model_registry

    sc, lake = fleet
    record = model_registry.champion(lake=lake)
    assert record.threshold < record.alert_threshold == record.metrics["alert_threshold"]
    assert record.metrics["alert_threshold_basis"].startswith("best event F1 on ")
    day2 = sc.start + timedelta(days=1)
    clear_scores(lake, sc.source_name)
    with environment(ANOMALY_ALERT_THRESHOLD=None):
        report = score_interval(sc.source_name, day2, day2 + 24 * HOUR, "own-threshold", lake=lake)
    scores, incidents = scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)
    assert (scores["is_alert"] == (scores["score"] >= record.alert_threshold)).all()
    assert (scores["is_anomaly"] == (scores["score"] >= record.threshold)).all()
    assert report.alerts == scores["is_alert"].sum() < report.anomalies == scores["is_anomaly"].sum()
    assert len(incidents) > 0 and incidents["points"].sum() == scores["is_alert"].sum()
    assert (incidents["peak_score"] >= record.alert_threshold).all()
    # every alert point is inside an incident of its host, and no other flagged point is
    inside = pd.Series(False, index=scores.index)
    for row in incidents.itertuples():
        inside |= (scores["host"] == row.host) & scores["ts"].between(row.start_ts, row.end_ts)
    assert (scores.loc[inside, "score"] >= record.alert_threshold).sum() == scores["is_alert"].sum()
    assert scores.loc[~inside, "is_alert"].sum() == 0
    assert scores.loc[~inside, "is_anomaly"].sum() > 0  # flagged, but below the alert threshold
    # an override below the point threshold pages at the point threshold, never lower
    clear_scores(lake, sc.source_name)
    with environment(ANOMALY_ALERT_THRESHOLD="0.0001"):
        score_interval(sc.source_name, day2, day2 + 24 * HOUR, "low-override", lake=lake)
    low = scores_of(lake, sc.source_name)
    assert low["is_alert"].equals(low["is_anomaly"]) and 0 < low["is_alert"].sum() < len(low)
    clear_scores(lake, sc.source_name)


def test_every_incident_is_explained_with_top_features_from_its_points(fleet) -> None:
    from anomaly.scoring import explain_incidents

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    clear_scores(lake, sc.source_name)
    _score_hours(sc, lake, range(6), day2)
    first = explain_incidents(sc.source_name, lake=lake)
    incidents = lake.query("SELECT * FROM incidents WHERE source = ?", [sc.source_name])
    assert first["explained"] == len(incidents) > 0 and incidents["explained_at"].notna().all()
    expl = lake.query(
        "SELECT e.* FROM incident_explanations e JOIN incidents i USING (incident_id) WHERE i.source = ?",
        [sc.source_name],
    )
    per = expl.sort_values(["incident_id", "rank"]).groupby("incident_id")["rank"].apply(list)
    assert set(per.index) == set(incidents["incident_id"]) and all(r == [1, 2, 3, 4, 5] for r in per)
    assert all(len(m) > 0 for m in incidents["top_metrics"])
    catalog = set(lake.query("SELECT name FROM feature_catalog")["name"])
    assert set(expl["feature"]) <= catalog
    # ranks follow |contribution|
    for _, g in expl.groupby("incident_id"):
        assert g.sort_values("rank")["contribution"].abs().is_monotonic_decreasing
    # nothing changed: nothing to explain again; a new hour explains only what it touched
    assert explain_incidents(sc.source_name, lake=lake)["explained"] == 0
    _score_hours(sc, lake, [6], day2)
    pending = lake.query(
        "SELECT count(*) AS n FROM incidents WHERE source = ? AND explained_at IS NULL", [sc.source_name]
    )
    assert explain_incidents(sc.source_name, lake=lake)["explained"] == pending["n"][0]


def test_points_without_features_are_not_scored_and_recorded(fleet) -> None:
    from anomaly.scoring import score_interval

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    start, end = day2 + 3 * HOUR, day2 + 4 * HOUR
    saved = lake.query(
        "SELECT * FROM features WHERE source = ? AND ts >= ? AND ts < ?", [sc.source_name, start, end]
    )
    host = sorted(saved["host"].unique())[0]
    gone = saved[(saved["host"] == host) & (saved["ts"] < start + timedelta(minutes=20))]

    def drop(con):
        con.execute(
            "DELETE FROM features WHERE source = ? AND host = ? AND ts >= ? AND ts < ?",
            [sc.source_name, host, start, start + timedelta(minutes=20)],
        )

    lake.write(drop)
    try:
        report = score_interval(sc.source_name, start, end, "gap", lake=lake)
        assert report.missing[host]["points"] == len(gone) > 0
        assert report.rows == len(saved) - len(gone) and report.expected_rows == len(saved)
        logged = lake.query("SELECT missing FROM score_log WHERE run_id = 'gap'")["missing"][0]
        assert json.loads(logged)[host]["points"] == len(gone)
    finally:

        def restore(con):
            con.register("gone", gone)
            con.execute("INSERT INTO features SELECT * FROM gone")

        lake.write(restore)


def test_refusals_name_what_is_wrong(fleet, tmp_path, monkeypatch) -> None:
    from anomaly.scoring import ScoringError, check_features, resolve_model, score_interval
    from anomaly.settings import get_settings
    from anomaly.store import Lake

    sc, lake = fleet
    record = resolve_model(lake=lake)
    with pytest.raises(ScoringError, match=r"2 feature\(s\) the feature store lacks: nope__a, nope__b"):
        check_features(
            dataclasses.replace(record, features=[*record.features, "nope__a", "nope__b"]), record.features
        )
    with pytest.raises(ScoringError, match="no model version 99"):
        resolve_model(99, lake=lake)
    monkeypatch.setenv("ANOMALY_HOME", str(tmp_path / "empty"))
    get_settings.cache_clear()
    try:
        with pytest.raises(ScoringError, match="anomaly models promote"):
            score_interval(sc.source_name, sc.start, sc.start + HOUR, "x", lake=Lake())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_nan_features_are_scored_the_way_the_model_was_trained(fleet) -> None:
    """NULL features (a metric a host stopped sending, a window not warmed up) reach the model as
    NaN: the boosted members route them as in training, the unsupervised ones impute the training
    medians; every row gets a finite score, the one the model itself gives those rows."""
    import numpy as np

    from anomaly.scoring import resolve_model, score_interval
    from anomaly.training import model_registry

    sc, lake = fleet
    day2 = sc.start + timedelta(days=1)
    start, end = day2 + 5 * HOUR, day2 + 6 * HOUR
    record = resolve_model(lake=lake)
    saved = lake.query(
        "SELECT * FROM features WHERE source = ? AND ts >= ? AND ts < ?", [sc.source_name, start, end]
    )
    host = sorted(saved["host"].unique())[0]
    blanked = [f for f in record.features if f.startswith(("cpu_util__", "mem_util__", "load1__"))]
    assert len(blanked) >= 10

    def blank(con):
        sets = ", ".join(f'"{c}" = NULL' for c in blanked)
        con.execute(
            f"UPDATE features SET {sets} WHERE source = ? AND host = ? AND ts >= ? AND ts < ?",
            [sc.source_name, host, start, end],
        )

    lake.write(blank)
    try:
        frame = lake.query(
            "SELECT * FROM features WHERE source = ? AND ts >= ? AND ts < ? ORDER BY host, ts",
            [sc.source_name, start, end],
        )
        assert frame.loc[frame["host"] == host, blanked].isna().all().all()
        report = score_interval(sc.source_name, start, end, "nan", lake=lake)
        scored = lake.query(
            "SELECT host, ts, score FROM scores WHERE source = ? AND ts >= ? AND ts < ? ORDER BY host, ts",
            [sc.source_name, start, end],
        )
        assert report.rows == len(scored) == len(saved) and not report.missing
        assert np.isfinite(scored["score"]).all()
        expected = model_registry.load(record).decision_function(frame[record.features])
        np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=1e-6)
    finally:

        def restore(con):
            con.execute(
                "DELETE FROM features WHERE source = ? AND ts >= ? AND ts < ?", [sc.source_name, start, end]
            )
            con.register("saved", saved)
            con.execute("INSERT INTO features SELECT * FROM saved")

        lake.write(restore)
