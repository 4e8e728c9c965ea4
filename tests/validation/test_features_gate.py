"""The features gate: the ``features`` suite on a built interval, quarantine to Parquet, release;
and the ``scores`` suite the scoring DAG will use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.validation import ValidationFailed

T0 = datetime(2026, 4, 6, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def built(lake, monkeypatch):
    """Two hours of a 3-host simulated fleet, ingested, built and validated."""
    from anomaly.features import build_features, validate_features
    from anomaly.ingest import ingest_interval
    from anomaly.settings import get_settings

    monkeypatch.setenv("ANOMALY_SIM_HOSTS", "3")
    get_settings.cache_clear()
    for i in range(2):
        start = T0 + i * HOUR
        ingest_interval("simulation", start, start + HOUR, f"r{i}")
        build_features("simulation", start, start + HOUR, f"r{i}")
    report = validate_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1")
    return lake, report


def _interval_rows(lake, start=T0 + HOUR):
    return lake.query(
        "SELECT count(*) AS n FROM features WHERE source = 'simulation' AND ts >= ? AND ts < ?",
        [start, start + HOUR],
    )["n"][0]


def test_clean_interval_passes_and_is_recorded(built) -> None:
    lake, report = built
    assert report.status in ("passed", "warning") and report.rows == 3 * 60
    got = lake.query(
        "SELECT expectation, severity, success FROM validation_results WHERE suite = 'features' AND run_id = 'r1'"
    )
    names = set(got["expectation"])
    assert {"features.finite", "features.correlation_min", "features.correlation_max"} <= names
    assert got.loc[got["severity"] == "critical", "success"].all()
    assert _interval_rows(lake) == 3 * 60


def test_infinite_feature_quarantines_the_interval_to_parquet_and_a_rebuild_releases_it(built) -> None:
    from anomaly.features import FeatureError, build_features, validate_features

    lake, _ = built
    before = lake.query("SELECT * FROM features WHERE ts >= ? ORDER BY host, ts", [T0 + HOUR])
    # a fault we cannot cause through the product's SQL (it guards its divisions): write it in
    lake.write(
        lambda con: con.execute(
            "UPDATE features SET cpu_util__mean_5m = 'inf'::DOUBLE WHERE ts >= ? AND ts < ? AND host = "
            "(SELECT min(host) FROM features)",
            [T0 + HOUR, T0 + HOUR + timedelta(minutes=10)],
        )
    )
    with pytest.raises(ValidationFailed) as err:
        validate_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1-check")
    message = str(err.value)
    assert "suite features, expectation features.finite" in message
    assert "feature=cpu_util__mean_5m" in message and "nonfinite=10" in message
    assert "[2026-04-06T01:00:00+00:00, 2026-04-06T02:00:00+00:00)" in message

    # moved, not deleted: the interval's rows are in the Parquet file named by quarantine_batches
    assert _interval_rows(lake) == 0
    assert _interval_rows(lake, T0) == 3 * 60  # the previous interval is untouched
    held = lake.query("SELECT * FROM quarantine_batches WHERE suite = 'features'")
    assert len(held) == 1 and held["reason"][0] == "features.finite" and held["rows"][0] == len(before)
    kept = pd.read_parquet(held["location"][0])
    assert len(kept) == len(before) and np.isinf(kept["cpu_util__mean_5m"]).sum() == 10
    pd.testing.assert_series_equal(kept["load1__mean_1h"], before["load1__mean_1h"], check_names=False)

    failed = lake.query(
        "SELECT observed_value, report FROM validation_results WHERE run_id = 'r1-check' "
        "AND expectation = 'features.finite'"
    )
    assert failed["observed_value"][0].startswith("1 unexpected")
    assert "Failed" in Path(failed["report"][0]).read_text()

    # validating again without a rebuild would validate nothing: refused, nothing released
    with pytest.raises(FeatureError, match=r"hold 0 rows but the latest build wrote 180: rebuild"):
        validate_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1-check")
    assert lake.query("SELECT released_at FROM quarantine_batches")["released_at"].isna().all()

    build_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1-fix")
    validate_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1-fix")
    assert _interval_rows(lake) == 3 * 60
    released = lake.query("SELECT released_at, released_by_run FROM quarantine_batches")
    assert released["released_by_run"].tolist() == ["r1-fix"] and released["released_at"].notna().all()


def test_correlation_out_of_range_fails(built) -> None:
    from anomaly.features import validate_features

    lake, _ = built
    lake.write(
        lambda con: con.execute(
            "UPDATE features SET corr__cpu_util__load1_15m = 1.5 WHERE ts >= ?", [T0 + HOUR]
        )
    )
    with pytest.raises(
        ValidationFailed, match=r"features.correlation_max .*feature=corr__cpu_util__load1_15m"
    ):
        validate_features("simulation", T0 + HOUR, T0 + 2 * HOUR, "r1-corr")


def _scores(n=50):
    ts = pd.date_range(T0, periods=n, freq="min", tz="UTC").astype("datetime64[us, UTC]")
    return pd.DataFrame({"host": "web-01", "ts": ts, "score": np.linspace(0, 1, n), "is_anomaly": False})


@pytest.mark.parametrize(
    ("corrupt", "expectation"),
    [
        (lambda f: f.assign(score=f["score"] * 1.5), "scores.probability"),
        (lambda f: pd.concat([f, f.tail(3)], ignore_index=True), "scores.unique"),
        (lambda f: f.assign(score=f["score"].where(f.index % 2 == 0)), "scores.score_not_null"),
    ],
    ids=["probability", "unique", "null"],
)
def test_scores_suite(corrupt, expectation) -> None:
    from anomaly.validation.gate import validate_scores

    assert validate_scores(_scores()).status == "passed"
    run = validate_scores(corrupt(_scores()))
    assert [o.name for o in run.failed] == [expectation]


def test_null_share_judges_seasonal_values_but_not_std_ratios_of_constant_metrics(lake) -> None:
    """A std ratio is NULL wherever the metric was constant a lag earlier (swap on a host without
    memory pressure): by design, like a correlation, so it is not judged; a seasonal difference
    that is mostly NULL after its lag has warmed up is."""
    from anomaly.validation.gate import validate_features_profile

    def row(feature: str, null_share: float) -> dict:
        return {
            "feature": feature,
            "family": "seasonality",
            "kind": "std_ratio" if "__std_15m_ratio_" in feature else "value",
            "window_seconds": 86_400,
            "rows": 100,
            "nonfinite": 0,
            "warm_rows": 100,
            "warm_nulls": int(100 * null_share),
            "null_share": null_share,
            "min": 0.0,
            "max": 1.0,
            "count_excess": None,
        }

    def null_share_outcome(profile: pd.DataFrame):
        run = validate_features_profile(profile)
        return next(o for o in run.outcomes if o.name == "features.null_share")

    constant_swap = pd.DataFrame([row("cpu_util__diff_1d", 0.01), row("swap_util__std_15m_ratio_1d", 0.99)])
    assert null_share_outcome(constant_swap).success
    missing_history = pd.DataFrame([row("cpu_util__diff_1d", 0.95), row("swap_util__std_15m_ratio_1d", 0.99)])
    outcome = null_share_outcome(missing_history)
    assert not outcome.success and outcome.unexpected_count == 1
