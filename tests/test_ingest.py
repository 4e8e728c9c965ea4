"""Ingest: every kind of bad input gets a clear reason and lands in quarantine; nothing is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.ingest import IngestRejected, ingest_interval
from anomaly.validation import ValidationFailed
from tests.conftest import FrameSource, grid_frame

START = datetime(2026, 3, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)


def _ingest(frame, run_id="run-1", source="files", start=START, end=END):
    return ingest_interval(source, start, end, run_id, source=FrameSource(frame, source))


def _quarantine(lake, run_id="run-1"):
    return lake.query("SELECT * FROM quarantine WHERE run_id = ? ORDER BY reason, host, metric, ts", [run_id])


def test_clean_batch_loads_every_row_exactly(lake) -> None:
    frame = grid_frame(START, END)
    report = _ingest(frame)
    assert report.rows_loaded == len(frame) == 240
    got = lake.query("SELECT ts, host, metric, value FROM raw_metrics ORDER BY host, metric, ts")
    want = frame.sort_values(["host", "metric", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert lake.query("SELECT count(*) AS n FROM quarantine")["n"][0] == 0
    hosts = lake.query("SELECT host, first_seen, last_seen FROM hosts ORDER BY host")
    assert hosts["host"].tolist() == ["h1", "h2"]
    assert hosts["first_seen"][0] == pd.Timestamp(START)


def test_rerun_replaces_the_interval_instead_of_adding(lake) -> None:
    frame = grid_frame(START, END)
    _ingest(frame, "run-1")
    changed = frame.copy()
    changed["value"] += 0.125
    _ingest(changed, "run-2")
    got = lake.query("SELECT count(*) AS n, sum(value) AS s, min(run_id) AS r FROM raw_metrics")
    assert got["n"][0] == len(frame)
    assert got["s"][0] == pytest.approx(changed["value"].sum())
    assert got["r"][0] == "run-2"


@pytest.mark.parametrize(
    ("corrupt", "reason", "raw"),
    [
        (
            lambda f: f.assign(value=f["value"].astype(object)).pipe(_set, "value", "n/a"),
            "non_numeric",
            "n/a",
        ),
        (lambda f: _set(f, "value", np.nan), "nan_value", "nan"),
        (lambda f: _set(f, "value", np.inf), "infinite_value", "inf"),
        (lambda f: _set(f, "ts", pd.Timestamp(END)), "outside_interval", None),
        (lambda f: _set(f, "host", ""), "missing_key", None),
    ],
    ids=["non_numeric", "nan", "infinite", "outside_interval", "empty_host"],
)
def test_bad_row_is_quarantined_with_reason_and_rest_loads(lake, corrupt, reason, raw) -> None:
    frame = corrupt(grid_frame(START, END))
    report = _ingest(frame)
    assert report.rows_loaded == len(frame) - 1
    assert report.rejects == {reason: 1}
    q = _quarantine(lake)
    assert q["reason"].tolist() == [reason]
    assert q["detail"][0]
    if raw is not None:
        assert q["value_raw"][0] == raw
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == len(frame) - 1


def _set(frame: pd.DataFrame, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    if column == "ts":
        frame[column] = frame[column].astype(object)
    frame.loc[0, column] = value
    return frame


def test_duplicates_identical_copy_loads_once_conflicting_values_load_none(lake) -> None:
    frame = grid_frame(START, END, hosts=("h1", "h2", "h3", "h4"))
    twin = frame.iloc[[0]]
    clash = frame.iloc[[1]].assign(value=frame["value"].iloc[1] + 0.125)
    report = _ingest(pd.concat([frame, twin, clash], ignore_index=True))
    assert report.rejects == {"duplicate_copy": 1, "duplicate": 2}
    loaded = lake.query("SELECT count(*) AS n, count(DISTINCT (host, metric, ts)) AS k FROM raw_metrics")
    assert loaded["n"][0] == loaded["k"][0] == len(frame) - 1  # the clashing key is held back whole
    assert sorted(_quarantine(lake)["reason"]) == ["duplicate", "duplicate", "duplicate_copy"]


def test_naive_timestamps_reject_the_batch_and_keep_the_interval(lake) -> None:
    good = grid_frame(START, END)
    _ingest(good, "run-0")
    naive = good.assign(ts=good["ts"].dt.tz_localize(None))
    with pytest.raises(ValidationFailed) as err:  # the suite runs on the batch as sent
        _ingest(naive, "run-1")
    message = str(err.value)
    assert "expectation raw.ts_type (ts is a timestamp with a time zone" in message
    assert "observed datetime64" in message
    assert "naive_timestamp" in message and "no time zone" in message
    assert "[2026-03-01T10:00:00+00:00, 2026-03-01T11:00:00+00:00)" in message
    # the interval keeps what it had; every row of the bad batch is kept in quarantine
    assert lake.query("SELECT count(*) AS n FROM raw_metrics WHERE run_id = 'run-0'")["n"][0] == len(good)
    q = _quarantine(lake)
    assert len(q) == len(good) and set(q["reason"]) == {"naive_timestamp"}
    held = lake.query("SELECT suite, reason FROM quarantine_batches WHERE run_id = 'run-1'")
    assert held.to_dict("records") == [{"suite": "raw_metrics", "reason": "raw.ts_type, raw.ts_in_interval"}]
    log = lake.query("SELECT status, rows_loaded FROM ingest_log WHERE run_id = 'run-1'")
    assert log.to_dict("records") == [{"status": "rejected", "rows_loaded": 0}]


def test_reject_share_over_threshold_fails_and_quarantines_everything(lake, monkeypatch) -> None:
    from anomaly.settings import get_settings

    monkeypatch.setenv("ANOMALY_MAX_REJECT_SHARE", "0.0")
    get_settings.cache_clear()
    frame = _set(grid_frame(START, END), "value", np.nan)
    with pytest.raises(
        ValidationFailed, match=r"suite raw_metrics, expectation raw.value_not_nan .*1 unexpected"
    ):
        ingest_interval("files", START, END, "run-1", source=FrameSource(frame))
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 0
    q = _quarantine(lake)
    assert q["reason"].value_counts().to_dict() == {"validation_failed": 240}


def test_same_key_from_another_source_is_quarantined_not_overwritten(lake) -> None:
    frame = grid_frame(START, END)
    _ingest(frame, "run-a", source="files")
    other_hosts = grid_frame(START, END, hosts=("h3", "h4", "h5", "h6"))
    report = _ingest(pd.concat([frame.iloc[:3], other_hosts]), "run-b", source="postgres")
    assert report.rejects == {"source_conflict": 3}
    owners = lake.query("SELECT host, min(source) AS s FROM raw_metrics WHERE host = 'h1' GROUP BY host")
    assert owners["s"].tolist() == ["files"]
    assert "already loaded from source 'files'" in _quarantine(lake, "run-b")["detail"][0]


def test_rerun_of_a_run_is_a_new_batch_and_keeps_the_history(lake) -> None:
    """A cleared and re-run Airflow run keeps its run id: each attempt is its own batch."""
    frame = _set(grid_frame(START, END), "value", np.inf)
    _ingest(frame, "run-1")
    _ingest(frame, "run-1")
    q = _quarantine(lake)
    assert len(q) == 2 and q["batch_id"].nunique() == 2 and set(q["reason"]) == {"infinite_value"}
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == len(frame) - 1


def test_staging_again_before_validation_replaces_the_waiting_batch(lake) -> None:
    """An ingest task retried after it staged (its batch not validated yet) leaves one batch."""
    from anomaly.ingest import release_interval, stage_interval

    frame = _set(grid_frame(START, END), "value", "n/a")
    stage_interval("files", START, END, "run-1", source=FrameSource(frame))
    stage_interval("files", START, END, "run-1", source=FrameSource(frame))
    assert len(_quarantine(lake)) == 1
    assert lake.query("SELECT count(DISTINCT batch_id) AS n FROM raw_staging")["n"][0] == 1
    assert release_interval("files", START, END, "run-1").rows_loaded == len(frame) - 1
    assert lake.query("SELECT count(*) AS n FROM raw_staging")["n"][0] == 0


def test_interval_bounds_must_be_aware(lake) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ingest_interval(
            "files", START.replace(tzinfo=None), END, "r", source=FrameSource(grid_frame(START, END))
        )


def test_derived_dataset_repeats_live_keys_in_its_own_namespace(lake) -> None:
    """A scenario or an injected copy (source not a live source name) may hold the same keys."""
    frame = grid_frame(START, END)
    _ingest(frame, "run-a", source="files")
    report = _ingest(frame, "run-b", source="files+faults")
    assert report.rows_loaded == len(frame) and report.rejects == {}
    per_source = lake.query("SELECT source, count(*) AS n FROM raw_metrics GROUP BY ALL ORDER BY ALL")
    assert per_source.to_dict("records") == [
        {"source": "files", "n": 240},
        {"source": "files+faults", "n": 240},
    ]


def test_out_of_range_timestamps_and_non_text_keys_are_quarantined_not_crashes(lake) -> None:
    frame = grid_frame(START, END, hosts=("h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8")).astype(
        {"ts": object, "host": object}
    )
    frame.loc[0, "ts"] = "3026-03-01T10:00Z"  # beyond the nanosecond range: a timestamp, not a crash
    frame.loc[1, "host"] = 1  # an int host would collide with '1' after a cast
    frame.loc[2, "host"] = "  h1  "  # padded: the same host as 'h1' (and the same key as before)
    report = _ingest(frame)
    assert report.rejects == {"outside_interval": 1, "bad_key": 1}
    hosts = set(lake.query("SELECT DISTINCT host FROM raw_metrics")["host"])
    assert "  h1  " not in hosts and "h1" in hosts


def test_bool_and_missing_values_get_their_own_reasons(lake) -> None:
    frame = grid_frame(START, END, hosts=("h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"))
    as_object = frame.astype({"value": object})
    as_object.loc[0, "value"] = True
    report = _ingest(as_object, "run-1")
    assert report.rejects == {"non_numeric": 1}
    nullable = frame.astype({"value": "Float64"})
    nullable.loc[0, "value"] = pd.NA
    report = _ingest(nullable, "run-2")
    assert report.rejects == {"null_value": 1}


def test_empty_or_shrunken_answer_does_not_delete_loaded_rows(lake) -> None:
    frame = grid_frame(START, END)
    _ingest(frame, "run-1")
    with pytest.raises(IngestRejected, match=r"returned no rows, but the interval holds 240 rows"):
        _ingest(frame.iloc[:0], "run-2")
    with pytest.raises(IngestRejected, match=r"no rows for metric\(s\) load1"):
        _ingest(frame[frame["metric"] == "cpu_util"], "run-3")
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 240
    # on purpose: allowed, and the interval really empties
    ingest_interval("files", START, END, "run-4", source=FrameSource(frame.iloc[:0]), allow_shrink=True)
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 0


def test_identical_copies_do_not_count_towards_the_reject_share(lake) -> None:
    frame = grid_frame(START, END)
    doubled = pd.concat([frame, frame.iloc[:10]], ignore_index=True)  # overlapping files, say
    report = _ingest(doubled)
    assert report.rows_loaded == len(frame) and report.rejects == {"duplicate_copy": 10}
