"""``dag.test()`` of score_metrics on a simulated fleet with injected faults: incidents overlap the
labelled windows, every incident is explained, Postgres holds them, drift signals retraining."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.simfleet import simulated_fleet, small_model

DAGS = Path(__file__).resolve().parents[2] / "dags"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
HOUR = timedelta(hours=1)


@pytest.fixture
def database():
    name = f"anomaly_score_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield name
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def fleet(airflow_db, anomaly_home, database, monkeypatch):
    """3 hosts x 2 days with faults, features built, a small model trained and pinned."""
    from anomaly.settings import get_settings

    monkeypatch.setenv("ANOMALY_TASK_RETRIES", "0")
    monkeypatch.setenv("ANOMALY_PUBLISH_CONN_ID", "anomaly_dagtest_pg")
    monkeypatch.setenv("AIRFLOW_CONN_ANOMALY_DAGTEST_PG", f"postgresql://postgres@127.0.0.1:5432/{database}")
    get_settings.cache_clear()
    sc, lake = simulated_fleet("dagscore")
    return sc, lake, small_model(sc, lake)


def _run(dag, sc, start, **conf):
    dr = dag.test(logical_date=start + HOUR, run_conf={"source": sc.source_name, **conf})
    assert dr.data_interval_start == start and dr.data_interval_end == start + HOUR
    return dr


def test_score_metrics_finds_labelled_faults_explains_publishes_and_signals_drift(fleet, database) -> None:
    from airflow.dag_processing.dagbag import DagBag

    sc, lake, trained = fleet
    dag = DagBag(dag_folder=str(DAGS)).get_dag("score_metrics")
    # two days of 3 hosts leave too few validation events to tune an alert threshold: the point
    # threshold raises incidents (ANOMALY_ALERT_MIN_EVENTS), and the model says so
    assert trained.metrics["alert_threshold"] == trained.threshold
    assert "fewer than ANOMALY_ALERT_MIN_EVENTS (10)" in trained.metrics["alert_threshold_basis"]

    # no champion: the run fails, naming the command that fixes it
    first = sc.end - 4 * HOUR
    refused = _run(dag, sc, first)
    assert refused.state == "failed"
    states = {ti.task_id: ti.state for ti in refused.get_task_instances()}
    assert states["score"] == "failed" and states["wait_for_features"] == "success"

    version = trained.version
    for k in range(4):  # the last 4 hours (in the model's test span), pinned version
        dr = _run(dag, sc, first + k * HOUR, model_version=version)
        assert dr.state == "success", {ti.task_id: ti.state for ti in dr.get_task_instances()}

    incidents = lake.query("SELECT * FROM incidents WHERE source = ?", [sc.source_name])
    labels = lake.query("SELECT host, start_ts, end_ts FROM labels WHERE dataset = ?", [sc.source_name])
    labels = labels[(labels["end_ts"] > first) & (labels["start_ts"] < sc.end)]
    assert len(incidents) > 0 and len(labels) > 0
    overlapping = [
        any(
            (i.host == lab.host) and i.start_ts < lab.end_ts and i.end_ts >= lab.start_ts
            for lab in labels.itertuples()
        )
        for i in incidents.itertuples()
    ]
    assert sum(overlapping) >= len(labels) // 2, (incidents, labels)
    assert incidents["explained_at"].notna().all() and all(len(m) for m in incidents["top_metrics"])
    scores = lake.query("SELECT count(*) AS n FROM scores WHERE source = ?", [sc.source_name])["n"][0]
    assert (
        scores
        == lake.query(
            "SELECT count(*) AS n FROM features WHERE source = ? AND ts >= ?", [sc.source_name, first]
        )["n"][0]
    )

    with psycopg2.connect(dbname=database, **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM anomaly_incidents")
        assert cur.fetchone()[0] == len(incidents)
        cur.execute("SELECT count(*) FROM anomaly_scores")
        assert cur.fetchone()[0] == scores
        cur.execute("SELECT count(*) FROM anomaly_incident_explanations")
        assert cur.fetchone()[0] == 5 * len(incidents)

    drift = lake.query("SELECT * FROM drift WHERE source = ?", [sc.source_name])
    assert set(drift["kind"]) == {"feature", "score", "alert_rate"}

    # Drift: half a day whose features moved far from the training data signals train_model.
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    last = first + 3 * HOUR
    shifted = last + HOUR - 12 * HOUR
    cols = [  # the rolling means of three metrics (not the seasonal comparisons, NULL without history)
        c
        for c in trained.model.feature_names_in_
        if re.fullmatch(r"(cpu_util|load1|mem_util)__mean_(5m|15m|1h)", c)
    ]
    assert len(cols) == 9

    def shift(con):
        sets = ", ".join(f'"{c}" = "{c}" * 10 + 5' for c in cols)
        con.execute(
            f"UPDATE features SET {sets} WHERE source = ? AND ts >= ? AND ts < ?",
            [sc.source_name, shifted, last + HOUR],
        )

    lake.write(shift)
    drifted = _run(dag, sc, last, model_version=version)
    after = {ti.task_id: ti.state for ti in drifted.get_task_instances()}
    assert after["check_drift"] == "success" and after["signal_drift"] == "success", after
    row = lake.query(
        "SELECT count(*) FILTER (WHERE drifted) AS n FROM drift WHERE source = ? AND kind = 'feature' AND window_end = ?",
        [sc.source_name, last + HOUR],
    )
    assert row["n"][0] >= 3
    shifted_names = set(
        lake.query(
            "SELECT name FROM drift WHERE source = ? AND kind = 'feature' AND window_end = ? AND drifted",
            [sc.source_name, last + HOUR],
        )["name"]
    )
    assert set(cols) <= shifted_names  # every moved feature is named

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from anomaly.registry import ASSET_DRIFT

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == ASSET_DRIFT, AssetEvent.source_run_id == drifted.run_id)
            .count()
        )
    assert events == 1
