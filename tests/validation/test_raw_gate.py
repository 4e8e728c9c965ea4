"""The raw gate end to end: a staged batch meets the ``raw_metrics`` and ``raw_completeness`` suites.

Which layer stops what (see anomaly/checks.py and anomaly/validation/suites.py):

* Parse tier, at staging (``stage_interval``): rows whose host is missing or not text, or whose
  value is not a number, cannot be staged (``raw_staging`` has typed NOT NULL columns). Over
  ``ANOMALY_MAX_REJECT_SHARE`` of them and the batch is refused with ``IngestRejected``; Great
  Expectations never sees it. ``raw.host_not_null``, ``raw.host_type``, ``raw.value_type`` and
  ``raw.ts_type`` are therefore checked here directly on the engine.
* Great Expectations, at release (``release_interval``): NaN, infinity, duplicate keys, values out
  of their kind's range, timestamps outside the interval. Row-level expectations carry
  ``mostly = 1 - ANOMALY_MAX_REJECT_SHARE``: a few bad rows pass the suite and are quarantined
  one by one; more fail the batch (``ValidationFailed``, whole batch to quarantine).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.ingest import IngestRejected, ingest_interval
from anomaly.settings import get_settings
from anomaly.validation import ValidationFailed
from tests.conftest import FrameSource, grid_frame

START = datetime(2026, 3, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
INTERVAL = "[2026-03-01T10:00:00+00:00, 2026-03-01T11:00:00+00:00)"
# one metric per kind with a range (plus a gauge, which has none); requests_total is added to
# metric_catalog as a user metric of kind counter (the default catalog has no counter)
METRICS = ("cpu_util", "load1", "net_in_bytes", "requests_total")
HOSTS = ("h1", "h2")
KINDS = {"cpu_util": "ratio", "load1": "gauge", "net_in_bytes": "rate", "requests_total": "counter"}
KEY = ("host", "metric", "ts")


def _add_counter_metric(lake) -> None:
    lake.write(
        lambda con: con.execute(
            "INSERT INTO metric_catalog VALUES "
            "('requests_total', 'requests', 'counter', 'HTTP requests', 'user')"
        )
    )


@pytest.fixture
def lake(lake):
    _add_counter_metric(lake)
    return lake


def _frame(start=START, end=END, hosts=HOSTS) -> pd.DataFrame:
    return grid_frame(start, end, hosts=hosts, metrics=METRICS)  # 2 hosts x 4 metrics x 60 = 480 rows


def _ingest(lake, frame, run_id, start=START, end=END):
    return ingest_interval("files", start, end, run_id, source=FrameSource(frame), lake=lake)


def _q(lake, sql, *params) -> pd.DataFrame:
    return lake.query(sql, list(params)) if params else lake.query(sql)


def _text(html: str) -> str:
    """A page's visible text, whitespace collapsed (scripts and styles dropped)."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _index_row(run_id: str, suite: str) -> str:
    index = get_settings().validation_reports_dir / "index.html"
    rows = re.findall(r"<tr>.*?</tr>", index.read_text(), flags=re.S)
    mine = [r for r in rows if f"<code>{run_id}</code>" in r and f"<td>{suite}</td>" in r]
    assert len(mine) == 1, f"index.html lists {len(mine)} rows for {run_id} {suite}"
    return mine[0]


def _every_5th(frame: pd.DataFrame, metric: str) -> pd.Index:
    return frame.index[frame["metric"] == metric][::5]  # 24 of a metric's 120 rows


# --- one bad batch per critical expectation -------------------------------------------------------
def _nan(f):
    f.loc[_every_5th(f, "load1"), "value"] = np.nan
    return f


def _inf(f):
    f.loc[_every_5th(f, "load1"), "value"] = np.inf
    return f


def _duplicate(f):
    clash = f.loc[_every_5th(f, "load1")].assign(value=lambda d: d["value"] + 0.5)
    return pd.concat([f, clash], ignore_index=True)


def _ratio_above_1(f):
    f.loc[_every_5th(f, "cpu_util"), "value"] = 1.5
    return f


def _negative_counter(f):
    f.loc[_every_5th(f, "requests_total"), "value"] = -3.0
    return f


def _negative_rate(f):
    f.loc[_every_5th(f, "net_in_bytes"), "value"] = -3.0
    return f


def _outside(f):
    rows = _every_5th(f, "load1")  # the first is 10:00 -> 11:00, exactly the (exclusive) end
    f.loc[rows, "ts"] = f.loc[rows, "ts"] + pd.Timedelta(hours=1)
    return f


CRITICAL_CASES = {
    # id: corrupt, failing expectation, its observed value, its column, an example in the message
    "nan": (_nan, "raw.value_not_nan", "24 unexpected of 480 rows (5.00%)", "value", "value=nan host=h1"),
    "infinity": (_inf, "raw.value_finite", "24 unexpected of 480 rows (5.00%)", "value", "value=inf host=h1"),
    "duplicate_key": (
        _duplicate,
        "raw.key_unique",
        "48 unexpected of 504 rows (9.52%)",
        None,
        "host=h1 metric=load1",
    ),
    "ratio_out_of_range": (
        _ratio_above_1,
        "raw.range_ratio",
        "24 unexpected of 120 rows (20.00%)",
        "value",
        "value=1.5",
    ),
    "negative_counter": (
        _negative_counter,
        "raw.range_counter",
        "24 unexpected of 120 rows (20.00%)",
        "value",
        "value=-3.0",
    ),
    # the first shifted row lands exactly on the interval's (exclusive) end
    "ts_outside_interval": (
        _outside,
        "raw.ts_in_interval",
        "24 unexpected of 480 rows (5.00%)",
        "ts",
        "ts={end} host=h1",
    ),
}


@pytest.fixture(scope="module")
def loaded_lake(tmp_path_factory):
    """One lake for the critical cases, each on its own hour, all loaded by ONE earlier good run
    (an ingest costs about a second; the cases touch disjoint intervals and run ids)."""
    from anomaly.store import Lake

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANOMALY_HOME", str(tmp_path_factory.mktemp("raw-gate") / "anomaly"))
        get_settings.cache_clear()
        lake = Lake()
        lake.init()
        _add_counter_metric(lake)
        end = START + timedelta(hours=len(CRITICAL_CASES))
        _ingest(lake, _frame(START, end), "run-good", START, end)
        yield lake
        lake.close()
    get_settings.cache_clear()


@pytest.mark.parametrize("case", list(CRITICAL_CASES))
def test_critical_failure_quarantines_batch_then_fixed_rerun_releases(loaded_lake, case) -> None:
    lake = loaded_lake
    corrupt, expectation, observed, column, example = CRITICAL_CASES[case]
    start = START + timedelta(hours=list(CRITICAL_CASES).index(case))  # each case its own hour
    end = start + timedelta(hours=1)
    interval = f"[{start.isoformat()}, {end.isoformat()})"
    example = example.format(end=end.isoformat())
    bad_run, fixed_run = f"run-bad-{case}", f"run-fixed-{case}"
    in_interval = "source = 'files' AND interval_start = ? AND interval_end = ?"
    good = _q(lake, "SELECT * FROM raw_metrics WHERE ts >= ? AND ts < ? ORDER BY ALL", start, end)
    assert len(good) == 480 and set(good["run_id"]) == {"run-good"}
    bad = corrupt(_frame(start, end))

    with pytest.raises(ValidationFailed) as err:
        _ingest(lake, bad, bad_run, start, end)

    # the message names the suite, the expectation, the observed value and the interval
    message = str(err.value)
    assert f"interval {interval}, run '{bad_run}'" in message
    assert f"suite raw_metrics, expectation {expectation} (" in message
    assert f"critical): observed {observed}, e.g. " in message and example in message
    assert "suite raw_completeness" not in message  # exactly one failure: the one this batch targets
    assert err.value.retryable is False

    # raw_metrics keeps what the good run loaded for the interval
    kept = _q(lake, "SELECT * FROM raw_metrics WHERE ts >= ? AND ts < ? ORDER BY ALL", start, end)
    pd.testing.assert_frame_equal(kept, good)

    # every row of the bad batch is in quarantine, as it came
    q = _q(lake, "SELECT * FROM quarantine WHERE run_id = ?", bad_run)
    assert len(q) == len(bad)
    assert set(q["reason"]) == {"validation_failed"} and set(q["detail"]) == {f"batch failed {expectation}"}
    order = ["host", "metric", "ts", "value"]
    pd.testing.assert_frame_equal(
        q[["ts", "host", "metric", "value"]].sort_values(order, ignore_index=True),
        bad.sort_values(order, ignore_index=True),
        check_dtype=False,
    )
    batches = _q(lake, f"SELECT * FROM quarantine_batches WHERE {in_interval}", start, end)
    assert len(batches) == 1
    b = batches.iloc[0]
    assert (b["run_id"], b["suite"], b["reason"]) == (bad_run, "raw_metrics", expectation)
    assert b["rows"] == len(bad) and b["location"] == "table quarantine" and b["detail"] == message
    assert pd.isna(b["released_at"]) and b["released_by_run"] is None
    assert _q(lake, "SELECT count(*) AS n FROM raw_staging")["n"][0] == 0
    log = _q(lake, "SELECT status FROM ingest_log WHERE run_id = ? ORDER BY finished_at", bad_run)
    assert log["status"].tolist() == ["staged", "quarantined"]

    # validation_results: one row per expectation of both suites; the failure with its numbers
    results = _q(lake, "SELECT * FROM validation_results WHERE run_id = ?", bad_run)
    assert set(results["suite"]) == {"raw_metrics", "raw_completeness"}
    assert not results.duplicated(["suite", "expectation"]).any()
    assert (results["interval_start"] == pd.Timestamp(start)).all()
    assert (results["interval_end"] == pd.Timestamp(end)).all()
    failed = results[~results["success"]]
    assert failed["expectation"].tolist() == [expectation]
    f = failed.iloc[0]
    assert (f["suite"], f["severity"], f["observed_value"], f["column"]) == (
        "raw_metrics",
        "critical",
        observed,
        column,
    )
    assert f["unexpected_count"] == int(observed.split()[0]) and example in f["examples"]

    # Data Docs: the run's page shows the failure; the index lists the run as failed
    page = Path(f["report"])
    assert page.is_file() and page.is_relative_to(get_settings().validation_reports_dir)
    text = _text(page.read_text())
    assert "Status: Failed" in text and "Unsuccessful Expectations 1" in text
    assert f"run id {bad_run}" in text and "status failed" in text  # our summary header
    assert f"{int(observed.split()[0])} unexpected values found" in text
    row = _index_row(bad_run, "raw_metrics")
    assert ">failed</td>" in row and f">{expectation}</span>" in row
    assert ">passed</td>" in _index_row(bad_run, "raw_completeness")

    # the source is fixed and the interval re-run: it passes and releases the interval
    fixed = _frame(start, end).assign(value=lambda d: d["value"] + 0.125)
    report = _ingest(lake, fixed, fixed_run, start, end)
    assert report.rows_loaded == len(fixed) and report.rejects == {}
    assert report.validation == {"raw_metrics": "passed", "raw_completeness": "passed"}
    loaded = _q(lake, "SELECT run_id, value FROM raw_metrics WHERE ts >= ? AND ts < ?", start, end)
    assert set(loaded["run_id"]) == {fixed_run} and len(loaded) == len(fixed)
    assert loaded["value"].sum() == pytest.approx(fixed["value"].sum())
    assert len(_q(lake, "SELECT * FROM quarantine WHERE run_id = ?", bad_run)) == len(bad)  # nothing deleted
    released = _q(
        lake, f"SELECT released_at, released_by_run FROM quarantine_batches WHERE {in_interval}", start, end
    )
    assert len(released) == 1 and released["released_by_run"][0] == fixed_run
    assert pd.notna(released["released_at"][0])
    fixed_results = _q(lake, "SELECT success FROM validation_results WHERE run_id = ?", fixed_run)
    assert len(fixed_results) == len(results) and fixed_results["success"].all()
    assert ">passed</td>" in _index_row(fixed_run, "raw_metrics")


def test_a_few_bad_rows_pass_the_suite_and_are_quarantined_one_by_one(lake) -> None:
    """Under ANOMALY_MAX_REJECT_SHARE (1%) every row-level expectation passes; the rows go to
    quarantine with their own reason at release and the rest load."""
    frame = _frame(hosts=tuple(f"h{i}" for i in range(8)))  # 1,920 rows
    rows = {m: frame.index[frame["metric"] == m] for m in METRICS}
    frame.loc[rows["load1"][0], "value"] = np.nan
    frame.loc[rows["load1"][1], "value"] = np.inf
    frame.loc[rows["load1"][2], "ts"] += pd.Timedelta(hours=1)
    frame.loc[rows["cpu_util"][0], "value"] = 1.5
    frame.loc[rows["requests_total"][0], "value"] = -3.0
    frame.loc[rows["net_in_bytes"][0], "value"] = -3.0
    frame = pd.concat([frame, frame.loc[[rows["load1"][5]]].assign(value=9.0)], ignore_index=True)

    report = _ingest(lake, frame, "run-1")

    assert report.rejects == {
        "nan_value": 1,
        "infinite_value": 1,
        "outside_interval": 1,
        "out_of_range": 3,
        "duplicate": 2,  # both values of the clashing key are held back
    }
    assert report.rows_loaded == len(frame) - 8 == 1913
    assert _q(lake, "SELECT count(*) AS n FROM raw_metrics")["n"][0] == 1913
    q = _q(lake, "SELECT reason, metric, detail FROM quarantine WHERE run_id = 'run-1'")
    assert q["reason"].value_counts().to_dict() == report.rejects
    details = set(q.loc[q["reason"] == "out_of_range", "detail"])
    assert details == {
        "ratio value outside [0, 1]",
        "counter value outside [0, inf)",
        "rate value outside [0, inf)",
    }
    assert _q(lake, "SELECT count(*) AS n FROM quarantine_batches")["n"][0] == 0

    # the suite passed, and validation_results still counts what each expectation saw
    results = _q(lake, "SELECT * FROM validation_results WHERE run_id = 'run-1' AND suite = 'raw_metrics'")
    assert results.loc[results["severity"] == "critical", "success"].all()
    seen = results.set_index("expectation")
    for name, n in {
        "raw.value_not_nan": 1,
        "raw.value_finite": 1,
        "raw.ts_in_interval": 1,
        "raw.key_unique": 2,
        "raw.range_ratio": 1,
        "raw.range_counter": 1,
        "raw.range_rate": 1,
    }.items():
        assert seen.loc[name, "unexpected_count"] == n, name
    assert seen.loc["raw.value_not_nan", "observed_value"] == "1 unexpected of 1921 rows (0.05%)"
    # a new fleet: known_hosts warns, and the run goes on
    assert report.validation["raw_metrics"] == "warning"
    assert [w.split(" (")[0] for w in report.warnings] == ["raw_metrics: raw.known_hosts"]


# --- missing host, wrong type: the parse tier catches them at staging --------------------------------
def _host_missing(f):
    f = f.astype({"host": object})
    f.loc[_every_5th(f, "load1"), "host"] = None
    return f


def _host_not_text(f):
    f = f.astype({"host": object})
    f.loc[_every_5th(f, "load1"), "host"] = 7
    return f


def _value_text(f):
    f = f.astype({"value": object})
    f.loc[_every_5th(f, "load1"), "value"] = "n/a"
    return f


PARSE_CASES = {
    "run-no-host": (_host_missing, "missing_key", "host or metric is empty", "raw.host_not_null"),
    "run-int-host": (_host_not_text, "bad_key", "host or metric is not text", "raw.host_type"),
    "run-text-value": (_value_text, "non_numeric", "value is not a number", "raw.value_type"),
}


def test_missing_host_or_wrong_type_fails_the_suite_on_the_batch_as_sent(lake) -> None:
    """Over 1% of rows that cannot be typed: nothing is staged; the raw suite runs on the batch as
    the source sent it and names the expectation; the whole batch goes to quarantine and
    quarantine_batches, with its Data Docs page; the interval keeps its rows.

    (One lake for the three batches: each fails before anything is staged.)
    """
    good = _frame()
    _ingest(lake, good, "run-good")
    for run_id, (corrupt, reason, says, expectation) in PARSE_CASES.items():
        with pytest.raises(ValidationFailed) as err:
            _ingest(lake, corrupt(_frame()), run_id)

        message = str(err.value)
        assert (
            f"interval {INTERVAL}, run '{run_id}': suite raw_metrics, expectation {expectation} (" in message
        )
        assert "observed 24 unexpected of 480 rows" in message or "observed " in message
        assert "24 of 480 rows do not parse (5.0% > ANOMALY_MAX_REJECT_SHARE=1.0%)" in message
        assert f"{reason}: 24 ({says};" in message and "all 480 rows are in table quarantine" in message
        q = _q(lake, "SELECT reason FROM quarantine WHERE run_id = ?", run_id)
        assert q["reason"].value_counts().to_dict() == {"batch_rejected": 456, reason: 24}, run_id
        log = _q(lake, "SELECT status FROM ingest_log WHERE run_id = ?", run_id)
        assert log["status"].tolist() == ["rejected"], run_id
        assert _q(lake, "SELECT count(*) AS n FROM raw_staging WHERE run_id = ?", run_id)["n"][0] == 0
        held = _q(lake, "SELECT suite, reason, rows FROM quarantine_batches WHERE run_id = ?", run_id)
        assert held["suite"].tolist() == ["raw_metrics"] and held["rows"].tolist() == [480]
        assert expectation in held["reason"][0]
        failed = _q(
            lake,
            "SELECT severity, report FROM validation_results WHERE run_id = ? AND expectation = ?",
            run_id,
            expectation,
        )
        assert failed["severity"].tolist() == ["critical"]
        assert "Failed" in Path(failed["report"][0]).read_text()

    kept = _q(lake, "SELECT run_id, count(*) AS n FROM raw_metrics GROUP BY run_id")
    assert kept.to_dict("records") == [{"run_id": "run-good", "n": len(good)}]


@pytest.mark.parametrize(
    ("corrupt", "expectation", "observed"),
    [
        (_host_missing, "raw.host_not_null", "24 unexpected of 480 rows (5.00%)"),
        (_host_not_text, "raw.host_type", "24 unexpected of 480 rows (5.00%)"),
        (lambda f: f.assign(host=f["host"].map({"h1": 1, "h2": 2})), "raw.host_type", "int64"),
        (
            lambda f: f.assign(value=f["value"].astype(str)),
            "raw.value_type",
            "480 unexpected of 480 rows (100.00%)",
        ),
        # an object column of floats and a few strings: no value in it is a numpy float64
        (_value_text, "raw.value_type", "480 unexpected of 480 rows (100.00%)"),
        (lambda f: f.assign(ts=f["ts"].dt.tz_localize(None)), "raw.ts_type", "datetime64"),
        (lambda f: f.assign(extra=1), "raw.columns", "['extra', 'host', 'metric', 'ts', 'value']"),
        # and a kind range of the default catalog (the end-to-end cases use the counter's)
        (_negative_rate, "raw.range_rate", "24 unexpected of 120 rows (20.00%)"),
    ],
    ids=[
        "host_null",
        "host_int_some",
        "host_int_column",
        "value_str",
        "value_mixed",
        "ts_naive",
        "extra_col",
        "negative_rate",
    ],
)
def test_critical_expectations_on_the_engine(corrupt, expectation, observed) -> None:
    """What ``raw_staging`` cannot hold (null host, wrong types, extra columns) never reaches the
    suite through ingest: the suite still stops it when given such a frame directly."""
    from anomaly.validation import engine, gate, suites

    checks = suites.raw_suite(START, END, KINDS, HOSTS, 0.01)
    run = engine.run(
        suites.RAW, corrupt(_frame()), checks, text_columns=("host", "metric"), index_columns=KEY
    )

    outcome = next(o for o in run.outcomes if o.name == expectation)
    assert (outcome.success, outcome.severity, outcome.observed) == (False, "critical", observed)
    assert outcome in run.failed and run.status == "failed"
    message = gate.failure_message([run], "files", START, END, "run-x")
    assert f"interval {INTERVAL}" in message
    assert f"suite raw_metrics, expectation {expectation} (" in message and f"observed {observed}" in message


def test_clean_batch_passes_every_expectation_on_the_engine() -> None:
    from anomaly.validation import engine, suites

    checks = suites.raw_suite(START, END, KINDS, HOSTS, 0.01)
    run = engine.run(suites.RAW, _frame(), checks, text_columns=("host", "metric"), index_columns=KEY)
    assert run.status == "passed" and run.rows == 480
    assert [o.name for o in run.outcomes] == [c.name for c in checks]
    assert all(o.success and o.unexpected_count in (0, None) for o in run.outcomes)


def test_an_expectation_that_raises_reports_the_error_as_observed_value() -> None:
    from anomaly.validation import engine, suites

    checks = [c for c in suites.raw_suite(START, END, KINDS, HOSTS, 0.01) if c.name == "raw.value_finite"]
    run = engine.run(suites.RAW, _value_text(_frame()), checks)  # "n/a" <= 1.8e308 raises in pandas
    (outcome,) = run.outcomes
    assert not outcome.success
    assert outcome.observed.startswith("error: ")


# --- a host that stopped reporting: raw.completeness ----------------------------------------------
NEXT = (END, END + timedelta(hours=1))
NEXT_INTERVAL = "[2026-03-01T11:00:00+00:00, 2026-03-01T12:00:00+00:00)"


def test_silent_host_warns_by_default_and_fails_when_made_critical(lake, monkeypatch) -> None:
    """raw.completeness: a host that reported the day before and sent nothing in the interval."""
    _ingest(lake, _frame(hosts=("h1", "h2", "h3")), "run-1")

    # default severity: a warning is recorded and the data loads
    report = _ingest(lake, _frame(*NEXT), "run-2", *NEXT)  # h3 stopped reporting
    assert report.rows_loaded == 480
    assert report.validation == {"raw_metrics": "passed", "raw_completeness": "warning"}
    assert report.warnings == ["raw_completeness: raw.completeness (1 unexpected of 3 rows (33.33%))"]
    got = _q(
        lake,
        "SELECT severity, success, observed_value, unexpected_count, element_count, examples "
        "FROM validation_results WHERE run_id = 'run-2' AND expectation = 'raw.completeness'",
    )
    assert got.to_dict("records") == [
        {
            "severity": "warning",
            "success": False,
            "observed_value": "1 unexpected of 3 rows (33.33%)",
            "unexpected_count": 1,
            "element_count": 3,
            "examples": "share=0.0 host=h3",
        }
    ]
    assert _q(lake, "SELECT count(*) AS n FROM quarantine_batches")["n"][0] == 0
    row = _index_row("run-2", "raw_completeness")
    assert ">warning</td>" in row and ">raw.completeness</span>" in row

    # made critical: the same batch fails, names the host, and the interval keeps run-2's rows
    monkeypatch.setenv("ANOMALY_VALIDATION_SEVERITY", "raw.completeness=critical")
    get_settings.cache_clear()
    with pytest.raises(ValidationFailed) as err:
        _ingest(lake, _frame(*NEXT), "run-3", *NEXT)
    message = str(err.value)
    assert (
        f"interval {NEXT_INTERVAL}, run 'run-3': suite raw_completeness, expectation raw.completeness ("
        in message
    )
    assert "critical): observed 1 unexpected of 3 rows (33.33%), e.g. share=0.0 host=h3" in message
    assert "suite raw_metrics" not in message
    kept = _q(lake, "SELECT run_id, count(*) AS n FROM raw_metrics WHERE ts >= ? GROUP BY run_id", END)
    assert kept.to_dict("records") == [{"run_id": "run-2", "n": 480}]
    q = _q(lake, "SELECT reason, count(*) AS n FROM quarantine WHERE run_id = 'run-3' GROUP BY reason")
    assert q.to_dict("records") == [{"reason": "validation_failed", "n": 480}]
    batch = _q(lake, "SELECT suite, reason, rows, released_at FROM quarantine_batches")
    assert batch[["suite", "reason", "rows"]].to_dict("records") == [
        {"suite": "raw_completeness", "reason": "raw.completeness", "rows": 480}
    ]
    assert pd.isna(batch["released_at"][0])
    severity = _q(lake, "SELECT severity FROM validation_results WHERE run_id = 'run-3' AND NOT success")
    assert severity["severity"].tolist() == ["critical"]

    # h3 is back: the interval passes and the held batch is released
    report = _ingest(lake, _frame(*NEXT, hosts=("h1", "h2", "h3")), "run-4", *NEXT)
    assert report.validation == {"raw_metrics": "passed", "raw_completeness": "passed"}
    assert report.rows_loaded == 720
    assert _q(lake, "SELECT released_by_run FROM quarantine_batches")["released_by_run"].tolist() == ["run-4"]


# --- every validation is recorded --------------------------------------------------------------------
def test_problems_each_under_the_tolerance_load_and_are_quarantined_row_by_row(lake) -> None:
    """Tolerance is per expectation: 0.73 % NaN and 0.73 % infinity each pass their expectation."""
    frame = _frame(hosts=tuple(f"h{i}" for i in range(4)))  # 960 rows
    load1 = frame.index[frame["metric"] == "load1"]
    frame.loc[load1[:7], "value"] = np.nan
    frame.loc[load1[7:14], "value"] = np.inf
    report = _ingest(lake, frame, "run-x")
    assert report.rows_loaded == 946 and report.rejects == {"nan_value": 7, "infinite_value": 7}
    got = _q(lake, "SELECT DISTINCT suite FROM validation_results WHERE run_id = 'run-x' ORDER BY suite")
    assert got["suite"].tolist() == ["raw_completeness", "raw_metrics"]


def test_a_validation_that_ran_is_recorded_even_when_the_release_is_refused(lake) -> None:
    """The shrink guard refuses a batch that lost a whole metric: the validation is still recorded,
    and the batch is quarantined and listed, not dropped."""
    _ingest(lake, _frame(), "run-1")
    partial = _frame()
    partial = partial[partial["metric"] != "load1"].reset_index(drop=True)
    with pytest.raises(IngestRejected, match=r"no rows for metric\(s\) load1"):
        _ingest(lake, partial, "run-x")
    got = _q(lake, "SELECT DISTINCT suite FROM validation_results WHERE run_id = 'run-x' ORDER BY suite")
    assert got["suite"].tolist() == ["raw_completeness", "raw_metrics"]
    assert ">run-x<" in _index_row("run-x", "raw_metrics") or "run-x" in _index_row("run-x", "raw_metrics")
    held = _q(lake, "SELECT suite, rows, reason FROM quarantine_batches WHERE run_id = 'run-x'")
    assert held[["suite", "rows"]].to_dict("records") == [{"suite": "raw_metrics", "rows": len(partial)}]
    assert "shrink guard" in held["reason"][0]
    q = _q(lake, "SELECT reason, count(*) AS n FROM quarantine WHERE run_id = 'run-x' GROUP BY reason")
    assert q.to_dict("records") == [{"reason": "batch_rejected", "n": len(partial)}]
    assert _q(lake, "SELECT count(*) AS n FROM raw_staging")["n"][0] == 0
    kept = _q(lake, "SELECT run_id, count(*) AS n FROM raw_metrics GROUP BY run_id")
    assert kept.to_dict("records") == [{"run_id": "run-1", "n": 480}]


def test_a_batch_is_decided_once(lake) -> None:
    """validate_raw run again after its batch was decided (a task retry) gives the same answer
    and changes nothing: it never validates an empty staging area."""
    from anomaly.ingest import release_interval, stage_interval

    bad = _frame().assign(value=np.nan)
    stage_interval("files", START, END, "run-1", source=FrameSource(bad), lake=lake)
    with pytest.raises(ValidationFailed):
        release_interval("files", START, END, "run-1", lake=lake)
    before = _q(lake, "SELECT count(*) AS n FROM quarantine")["n"][0]
    with pytest.raises(ValidationFailed, match=r"expectation raw.value_not_nan"):  # a retry: same verdict
        release_interval("files", START, END, "run-1", lake=lake)
    assert _q(lake, "SELECT count(*) AS n FROM quarantine")["n"][0] == before == 480
    assert _q(lake, "SELECT released_at FROM quarantine_batches")["released_at"].isna().all()

    # the same run staged again (a cleared run in Airflow): a new batch; the first one's history stays
    stage_interval("files", START, END, "run-1", source=FrameSource(_frame()), lake=lake)
    report = release_interval("files", START, END, "run-1", lake=lake)
    assert report.rows_loaded == 480
    assert _q(lake, "SELECT count(*) AS n FROM quarantine WHERE reason = 'validation_failed'")["n"][0] == 480
    batches = _q(lake, "SELECT count(DISTINCT batch_id) AS n FROM validation_results WHERE run_id = 'run-1'")
    assert batches["n"][0] == 2
    assert _q(lake, "SELECT released_by_run FROM quarantine_batches")["released_by_run"].tolist() == ["run-1"]
    again = release_interval("files", START, END, "run-1", lake=lake)  # a retry after the release
    assert again.rows_loaded == 480 and again.batch_id == report.batch_id
    assert _q(lake, "SELECT count(*) AS n FROM raw_metrics")["n"][0] == 480
