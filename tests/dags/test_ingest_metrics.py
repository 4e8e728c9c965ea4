"""``dag.test()`` of ingest_metrics: consecutive intervals, then a re-run, leave exactly the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
T0 = datetime(2026, 2, 2, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def ingest_dag(airflow_db, anomaly_home, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from anomaly.settings import get_settings

    monkeypatch.setenv("ANOMALY_SIM_HOSTS", "3")
    # dag.test() honours retry delays; a failing run should fail now, not in a minute
    monkeypatch.setenv("ANOMALY_TASK_RETRIES", "1")
    monkeypatch.setenv("ANOMALY_RETRY_DELAY_SECONDS", "0")
    get_settings.cache_clear()
    return DagBag(dag_folder=str(DAGS)).get_dag("ingest_metrics")


def run_interval(dag, start: datetime, **conf):
    """Run the DAG for the data interval that starts at ``start`` (dag.test infers it from its end)."""
    dr = dag.test(logical_date=start + HOUR, run_conf=conf or None)
    assert dr.data_interval_start == start and dr.data_interval_end == start + HOUR
    return dr


def fingerprint(lake) -> tuple[int, int, str, str]:
    row = lake.query(
        "SELECT count(*) AS n, sum(hash(ts, host, metric, value)) AS h, min(ts) AS lo, max(ts) AS hi "
        "FROM raw_metrics"
    ).iloc[0]
    return int(row["n"]), int(row["h"]), str(row["lo"]), str(row["hi"])


def test_two_intervals_then_rerun_of_first_is_unchanged(ingest_dag) -> None:
    from anomaly.store import Lake

    lake = Lake()
    first = run_interval(ingest_dag, T0)
    assert first.state == "success"
    after_first = fingerprint(lake)
    assert after_first[0] == 3 * 15 * 60  # 3 hosts x 15 metrics x 60 one-minute steps
    second = run_interval(ingest_dag, T0 + HOUR)
    assert second.state == "success"
    after_two = fingerprint(lake)
    assert after_two[0] == 2 * after_first[0]
    assert (after_two[2], after_two[3]) == ("2026-02-02 00:00:00+00:00", "2026-02-02 01:59:00+00:00")

    rerun = run_interval(ingest_dag, T0)
    assert rerun.state == "success"
    assert fingerprint(lake) == after_two
    per_interval = lake.query(
        "SELECT date_trunc('hour', ts) AS h, count(*) AS n, count(DISTINCT (host, metric, ts)) AS k "
        "FROM raw_metrics GROUP BY ALL ORDER BY h"
    )
    assert per_interval["n"].tolist() == per_interval["k"].tolist() == [2700, 2700]
    runs = lake.query("SELECT count(*) AS n FROM ingest_log WHERE status = 'loaded'")
    assert runs["n"][0] == 3


def test_failed_source_fails_the_run_and_keeps_the_interval(ingest_dag, monkeypatch, tmp_path) -> None:
    """A source that errors fails the run and leaves the rows it would have replaced untouched."""
    from anomaly.settings import get_settings
    from anomaly.sources.simulation import SimulationSource
    from anomaly.store import Lake

    files = tmp_path / "metrics"
    files.mkdir()
    SimulationSource(n_hosts=3).fetch(T0, T0 + HOUR).to_parquet(files / "a.parquet")
    monkeypatch.setenv("ANOMALY_FILES_GLOB", str(files / "*.parquet"))
    get_settings.cache_clear()
    assert run_interval(ingest_dag, T0, source="files").state == "success"
    before = fingerprint(Lake())
    assert before[0] == 2700
    # the same source, now failing: its files are gone (a real error, raised by the real source)
    (files / "a.parquet").unlink()
    failed = run_interval(ingest_dag, T0, source="files")
    assert failed.state == "failed"
    assert fingerprint(Lake()) == before
    log = Lake().query("SELECT status FROM ingest_log ORDER BY finished_at")
    # the failed run wrote nothing, not even a log row
    assert log["status"].tolist() == ["staged", "loaded"]


def test_each_run_builds_the_features_of_its_interval(ingest_dag) -> None:
    """ingest >> build_features: each run writes the features of exactly its interval; a re-run
    replaces them with the same rows."""
    from anomaly.store import Lake

    lake = Lake()
    assert run_interval(ingest_dag, T0).state == "success"
    assert run_interval(ingest_dag, T0 + HOUR).state == "success"

    def features():
        return lake.query(
            "SELECT count(*) AS n, min(ts) AS lo, max(ts) AS hi, sum(hash(host, ts, cpu_util__mean_1h)) AS h, "
            "count(cpu_util__mean_1h) AS filled FROM features"
        ).iloc[0]

    first = features()
    assert first["n"] == 3 * 60 * 2 == first["filled"]
    assert (str(first["lo"]), str(first["hi"])) == ("2026-02-02 00:00:00+00:00", "2026-02-02 01:59:00+00:00")
    log = lake.query("SELECT source, interval_start, rows_written FROM feature_log ORDER BY interval_start")
    assert list(log["rows_written"]) == [180, 180] and set(log["source"]) == {"simulation"}

    assert run_interval(ingest_dag, T0).state == "success"
    assert features().equals(first)


def test_corrupted_interval_fails_at_validation_and_keeps_the_lake(ingest_dag, monkeypatch, tmp_path) -> None:
    """A batch breaking a critical expectation stops the run at validate_raw: the lake keeps the
    interval's earlier rows and features, the batch is in quarantine, and a fixed re-run releases it."""
    from anomaly.settings import get_settings
    from anomaly.sources.simulation import SimulationSource
    from anomaly.store import Lake

    files = tmp_path / "metrics"
    files.mkdir()
    good = SimulationSource(n_hosts=3).fetch(T0, T0 + HOUR)
    good.to_parquet(files / "a.parquet")
    monkeypatch.setenv("ANOMALY_FILES_GLOB", str(files / "*.parquet"))
    get_settings.cache_clear()
    assert run_interval(ingest_dag, T0, source="files").state == "success"
    lake = Lake()
    before = fingerprint(lake)
    features_before = lake.query(
        "SELECT count(*) AS n, sum(hash(host, ts, cpu_util__mean_1h)) AS h FROM features"
    )

    # a broken exporter: a fifth of the cpu_util samples read 250 (a percentage sent as a ratio)
    bad = good.copy()
    cpu = bad.index[bad["metric"] == "cpu_util"]
    bad.loc[cpu[::5], "value"] = 250.0
    bad.to_parquet(files / "a.parquet")
    failed = run_interval(ingest_dag, T0, source="files")
    assert failed.state == "failed"
    states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
    assert states["ingest"] == "success" and states["validate_raw"] == "failed"
    assert states["build_features"] == states["validate_features"] == "upstream_failed"
    assert fingerprint(lake) == before
    assert lake.query(
        "SELECT count(*) AS n, sum(hash(host, ts, cpu_util__mean_1h)) AS h FROM features"
    ).equals(features_before)
    q = lake.query(
        "SELECT reason, count(*) AS n FROM quarantine WHERE run_id = ? GROUP BY reason", [failed.run_id]
    )
    assert q.to_dict("records") == [{"reason": "validation_failed", "n": len(bad)}]
    held = lake.query("SELECT suite, reason, released_at FROM quarantine_batches").to_dict("records")
    assert len(held) == 1 and held[0]["suite"] == "raw_metrics" and held[0]["reason"] == "raw.range_ratio"
    assert held[0]["released_at"] is None or held[0]["released_at"] != held[0]["released_at"]
    assert lake.query("SELECT count(*) AS n FROM raw_staging")["n"][0] == 0

    # the exporter is fixed: the interval passes and the quarantined batch is released
    good.to_parquet(files / "a.parquet")
    rerun = run_interval(ingest_dag, T0, source="files")
    assert rerun.state == "success"
    assert fingerprint(lake)[0] == before[0]
    released = lake.query("SELECT released_by_run FROM quarantine_batches")
    assert released["released_by_run"].tolist() == [rerun.run_id]
    assert lake.query("SELECT count(*) AS n FROM quarantine WHERE reason = 'validation_failed'")["n"][
        0
    ] == len(bad)
