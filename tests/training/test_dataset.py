"""Training sets: labels joined point-in-time, rebuilt exactly from a snapshot; time splits."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.training.dataset import TrainingSetError, build_training_set, time_split
from tests.simfleet import simulated_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """3 hosts x 2 days of a simulated scenario with faults, its features built (one lake per module)."""
    from anomaly.settings import get_settings

    old = os.environ.get("ANOMALY_HOME")
    os.environ["ANOMALY_HOME"] = str(tmp_path_factory.mktemp("training-home"))
    get_settings.cache_clear()
    sc, lake = simulated_fleet("train")
    yield sc, lake
    if old is None:
        os.environ.pop("ANOMALY_HOME", None)
    else:
        os.environ["ANOMALY_HOME"] = old
    get_settings.cache_clear()


def test_labels_mark_exactly_the_points_inside_their_windows(fleet) -> None:
    sc, lake = fleet
    ts = build_training_set(sc.source_name, sc.start, sc.end, lake=lake)
    labels = lake.query(
        "SELECT label_id, host, start_ts, end_ts, type FROM labels WHERE dataset = ?", [sc.source_name]
    )
    frame = ts.frame
    # independent check: a point is positive iff a window of its host covers it
    expected = np.zeros(len(frame), dtype=bool)
    for lab in labels.itertuples():
        expected |= (
            (frame["host"] == lab.host) & (frame["ts"] >= lab.start_ts) & (frame["ts"] < lab.end_ts)
        ).to_numpy()
    assert (frame["label"].to_numpy() == expected).all()
    assert set(frame.loc[frame["label"] == 1, "event_id"]) <= set(labels["label_id"])
    info = ts.describe()
    assert 0 < info["positive_share"] < 1 and info["features"] == len(ts.features) >= 40
    assert ts.X.dtypes.eq("float32").all() and not frame.duplicated(["host", "ts"]).any()


def test_a_snapshot_rebuilds_the_same_set_whatever_was_written_after(fleet) -> None:
    sc, lake = fleet
    first = build_training_set(sc.source_name, sc.start, sc.end, lake=lake)
    # after the snapshot: a new label, and the features of a span rewritten
    host = first.frame["host"].iloc[0]
    late = pd.DataFrame(
        {
            "label_id": ["late-1"],
            "host": [host],
            "start_ts": [sc.start],
            "end_ts": [sc.start + timedelta(hours=2)],
            "type": ["incident"],
            "source": ["incident"],
            "dataset": [sc.source_name],
        }
    )

    def add_label(con) -> None:
        con.register("late", late)
        con.execute(
            "INSERT INTO labels (label_id, host, start_ts, end_ts, type, source, dataset, created_at) "
            "SELECT label_id, host, start_ts, end_ts, type, source, dataset, now() FROM late"
        )

    lake.write(add_label)
    lake.write(
        lambda con: con.execute("UPDATE features SET cpu_util__mean_5m = -1 WHERE ts < ?", [sc.start + HOUR])
    )
    again = build_training_set(sc.source_name, sc.start, sc.end, lake=lake, snapshot=first.snapshot)
    pd.testing.assert_frame_equal(again.frame, first.frame)
    now = build_training_set(sc.source_name, sc.start, sc.end, lake=lake)
    assert now.snapshot > first.snapshot
    assert (now.frame["event_id"] == "late-1").sum() > 0
    assert (now.frame["cpu_util__mean_5m"] == -1).any() and not (first.frame["cpu_util__mean_5m"] == -1).any()


HOUR = timedelta(hours=1)


def test_tolerance_widens_windows(fleet) -> None:
    sc, lake = fleet
    exact = build_training_set(sc.source_name, sc.start, sc.end, lake=lake)
    wide = build_training_set(sc.source_name, sc.start, sc.end, lake=lake, tolerance=timedelta(minutes=5))
    assert wide.y.sum() > exact.y.sum()
    assert ((exact.y == 1) <= (wide.y == 1)).all()  # every exact positive stays positive
    assert wide.record()["tolerance_seconds"] == 300


def test_clear_errors_and_nothing_built(fleet) -> None:
    sc, lake = fleet
    with pytest.raises(TrainingSetError, match=r"not in feature_catalog .*no_such_feature"):
        build_training_set(sc.source_name, sc.start, sc.end, lake=lake, features=["no_such_feature"])
    with pytest.raises(TrainingSetError, match=r"no positive rows .*labels of dataset 'nobody'"):
        build_training_set(sc.source_name, sc.start, sc.end, lake=lake, labels_dataset="nobody")
    with pytest.raises(TrainingSetError, match=r"feature rows .*need at least 100"):
        build_training_set(sc.source_name, sc.start, sc.start + timedelta(minutes=10), lake=lake)
    with pytest.raises(TrainingSetError, match=r"snapshot 999999 does not exist"):
        build_training_set(sc.source_name, sc.start, sc.end, lake=lake, snapshot=999_999)


def test_time_split_is_ordered_with_embargo_and_can_hold_out_hosts() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ts = (
        pd.Series(pd.date_range(t0, periods=10 * 24 * 60, freq="min", tz="UTC"))
        .repeat(2)
        .reset_index(drop=True)
    )
    hosts = pd.Series(["a", "b"] * (len(ts) // 2))
    split = time_split(ts, embargo=timedelta(hours=1))
    tr, va, te = ts[split.train], ts[split.validation], ts[split.test]
    assert tr.max() + timedelta(hours=1) <= va.min() and va.max() + timedelta(hours=1) <= te.min()
    assert not (split.train & split.validation).any() and not (split.validation & split.test).any()
    held = time_split(ts, hosts=hosts, test_hosts=["b"])
    assert set(hosts[held.test]) == {"b"} and set(hosts[held.train | held.validation]) == {"a"}
    with pytest.raises(TrainingSetError, match="empty"):
        time_split(ts.iloc[:60], embargo=timedelta(hours=1))


def test_train_model_registers_a_version_and_bad_input_registers_nothing(fleet, monkeypatch) -> None:
    from anomaly.training import model_registry as reg
    from anomaly.training.train import train_model

    sc, lake = fleet
    fast = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1, "random_state": 0}
    with pytest.raises(TrainingSetError, match="no positive rows"):
        train_model(sc.source_name, sc.start, sc.end, labels_dataset="nobody", params=fast, lake=lake)
    assert reg.list_models(lake=lake).empty
    result = train_model(sc.source_name, sc.start, sc.end, params=fast, lake=lake, run_id="t1")
    record = reg.get(result.version, lake=lake)
    assert record.run_id == "t1" and record.snapshot == result.training_set.snapshot
    assert record.features == result.training_set.features and record.threshold == result.threshold
    assert set(record.training["split"]) >= {"train_end", "validation_start", "test_start"}
    assert record.status in (reg.CANDIDATE, reg.CHAMPION) and record.reason == result.decision
    shares = record.metrics["class_shares"]
    assert (
        0 < shares["train_positive_share"] < 1
        and shares["train_negative_share"] == 1 - shares["train_positive_share"]
    )
    # The members learn from the whole train span, the combiner from the validation span (the
    # thresholds' span), not from a cut of the train span.
    assert result.model.n_train_ == shares["train_rows"] == int(result.split.train.sum())
    assert result.model.n_validation_ == len(result.validation_labels) == int(result.split.validation.sum())
    # 2 validation events: too few to resample, the threshold reaches the validation recall.
    events = result.training_set.frame.loc[result.split.validation, "event_id"].nunique()
    assert events == 2
    assert record.metrics["point_threshold_basis"] == (
        "recall 0.9 on the validation span (no confidence bound: 2 validation events, fewer than "
        "the 20 a resampled bound needs)"
    )
    from anomaly.training import train as train_module
    from anomaly.training.train import fit_and_evaluate

    monkeypatch.setattr(train_module, "MIN_CONFIDENCE_EVENTS", 2)
    bounded = fit_and_evaluate(result.training_set, params=fast)
    assert bounded.metrics["point_threshold_basis"] == (
        "recall 0.9 on the validation span, at confidence 0.9 over 1000 resamples of its 2 events"
    )
    assert bounded.threshold <= result.threshold  # the bound only ever lowers it
    with pytest.raises(ValueError, match="combiner_span must be 'validation' or 'train', got 'test'"):
        fit_and_evaluate(result.training_set, params=fast, combiner_span="test")
    with pytest.raises(ValueError, match="they go with combiner_span='validation' only"):
        fit_and_evaluate(result.training_set, params=fast, combiner_span="train", prefit={"xgboost": None})
