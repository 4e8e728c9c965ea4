"""End to end with a real scheduler: ``airflow backfill create`` loads exactly the simulated rows,
and an overlapping backfill that reprocesses finished intervals changes nothing; a backfill of a
week of scoring (CLI), then an overlapping one through the REST API the UI's backfill dialog
calls, leave exactly the scores and incidents of scoring that week hour by hour.

Starts ``airflow standalone`` (API server, scheduler, DAG processor, triggerer; LocalExecutor) on a
free loopback port for this module, with its metadata in a throw-away database on the real
PostgreSQL (SQLite answers "database is locked" when the CLI and the scheduler write at once):
about 40 s and 1.5 GB. DAGs start paused; each test unpauses the one it backfills. A run takes
15-30 s here (every task is a fresh process importing pandas, DuckDB, Great Expectations or the
boosters), so the scoring DAG runs daily intervals in this module (``ANOMALY_SCORE_SCHEDULE``):
a week is 7 runs, not 168.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg2
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T0 = datetime(2026, 2, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOSTS = 3
SCORE_SOURCE = "simulation:e2e"

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    def __init__(self, home: Path, env: dict[str, str], database: str, url: str) -> None:
        self.home, self.env, self.database, self.url = home, env, database, url

    def _sql(self, query: str, params: tuple = ()) -> pd.DataFrame:
        with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=self.database) as db:
            cur = db.cursor()
            cur.execute(query, params)
            return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert out.returncode == 0, f"airflow {' '.join(args)} failed:\n{out.stderr[-3000:]}"
        return out.stdout

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """The REST API as the UI calls it (simple auth manager, every user an admin here)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    def runs(self, dag_id: str = "ingest_metrics", prefix: str = "backfill__") -> pd.DataFrame:
        return self._sql(
            "SELECT run_id, state, data_interval_start, data_interval_end, clear_number, backfill_id FROM dag_run "
            "WHERE dag_id = %s AND run_id LIKE %s ORDER BY data_interval_start",
            (dag_id, prefix + "%"),
        )

    def _backfills_completed(self) -> bool:
        # Airflow allows one running backfill per DAG; the scheduler closes it after its last run
        return int(self._sql("SELECT count(*) AS n FROM backfill WHERE completed_at IS NULL")["n"][0]) == 0

    def wait_for_runs(
        self, expected: int, dag_id: str = "ingest_metrics", *, closed: bool = True, timeout: float = 420
    ) -> pd.DataFrame:
        """Until ``expected`` backfill runs exist and finished; with ``closed``, also until the
        scheduler closed the backfill (it checks every 30 s), so that another may be created."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            finished = runs[runs["state"].isin(["success", "failed"])]
            done = len(runs) >= expected and len(finished) == len(runs)
            if done and (not closed or self._backfills_completed()):
                return runs
            time.sleep(2)
        raise AssertionError(f"backfill did not finish in {timeout}s:\n{self.runs(dag_id)}")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    base = tmp_path_factory.mktemp("e2e")
    port = _free_port()
    database = f"anomaly_e2e_airflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # standalone spawns `airflow ...` by name
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "ANOMALY_HOME": str(base / "var"),
        "ANOMALY_SIM_HOSTS": str(HOSTS),
        "ANOMALY_TASK_RETRIES": "1",
        "ANOMALY_RETRY_DELAY_SECONDS": "1",
        "ANOMALY_SCORE_SCHEDULE": "0 0 * * *",
    }
    log = (base / "standalone.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (
                f"airflow standalone died:\n{(base / 'standalone.log').read_text()[-3000:]}"
            )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
                    if r.status == 200 and b'"scheduler":{"status":"healthy"' in r.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "airflow standalone was not healthy within 180 s"
            time.sleep(2)
        yield Airflow(base / "airflow", env, database, f"http://127.0.0.1:{port}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def _lake_rows(env: dict[str, str], start: datetime, end: datetime) -> pd.DataFrame:
    from anomaly.settings import Settings
    from anomaly.store import Lake

    lake = Lake(Settings(home=env["ANOMALY_HOME"]))
    return lake.query(
        "SELECT ts, host, metric, value FROM raw_metrics WHERE ts >= ? AND ts < ? ORDER BY ts, host, metric",
        [start, end],
    )


def _expected(start: datetime, end: datetime) -> pd.DataFrame:
    from anomaly.sources.simulation import SimulationSource

    frame = SimulationSource(n_hosts=HOSTS, seed=7, step_seconds=60).fetch(start, end)
    return frame.sort_values(["ts", "host", "metric"]).reset_index(drop=True)


def test_backfill_then_overlapping_reprocess_leaves_exactly_the_source_rows(airflow: Airflow) -> None:
    airflow.cli("dags", "unpause", "ingest_metrics")
    # logical dates 00:00 .. 02:00 -> three hourly intervals [00:00, 03:00)
    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        "ingest_metrics",
        "--from-date",
        "2026-02-01T00:00:00+00:00",
        "--to-date",
        "2026-02-01T02:00:00+00:00",
        # one run at a time, as the DAG says: a feature build reads the interval before its own
        "--max-active-runs",
        "1",
        "--reprocess-behavior",
        "failed",
    )
    runs = airflow.wait_for_runs(3)
    assert (runs["state"] == "success").all(), runs
    first = _lake_rows(airflow.env, T0, T0 + 3 * HOUR)
    pd.testing.assert_frame_equal(first, _expected(T0, T0 + 3 * HOUR), check_dtype=False)

    # overlapping backfill, the finished 02:00 interval reprocessed, 03:00 new
    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        "ingest_metrics",
        "--from-date",
        "2026-02-01T02:00:00+00:00",
        "--to-date",
        "2026-02-01T03:00:00+00:00",
        "--max-active-runs",
        "1",
        "--reprocess-behavior",
        "completed",
    )
    # a reprocessed run is cleared and runs again under its own run id: 4 runs, one cleared once
    runs = airflow.wait_for_runs(4, closed=False)
    airflow.cli("dags", "pause", "ingest_metrics")
    assert (runs["state"] == "success").all(), runs
    assert runs["clear_number"].tolist() == [0, 0, 1, 0] and runs["backfill_id"].nunique() == 2, runs
    both = _lake_rows(airflow.env, T0, T0 + 4 * HOUR)
    pd.testing.assert_frame_equal(both, _expected(T0, T0 + 4 * HOUR), check_dtype=False)
    assert not both.duplicated(["ts", "host", "metric"]).any()
    # every interval's features were built, once: one row per host and timestamp
    from anomaly.settings import Settings
    from anomaly.store import Lake

    lake = Lake(Settings(home=airflow.env["ANOMALY_HOME"]))
    counts = lake.query(
        "SELECT (SELECT count(*) FROM features WHERE source = 'simulation' AND ts < $end) AS f, "
        "(SELECT count(DISTINCT (host, ts)) FROM features WHERE source = 'simulation' AND ts < $end) AS k, "
        "(SELECT count(DISTINCT (host, ts)) FROM raw_metrics WHERE source = 'simulation' AND ts < $end) AS r",
        {"end": T0 + 4 * HOUR},
    ).iloc[0]
    assert counts["f"] == counts["k"] == counts["r"] >= HOSTS * 4 * 60


@pytest.mark.timeout(1500)  # ~6.5 min alone; over 10 min while the other worker runs the rest
def test_score_backfill_of_a_week_equals_hourly_scoring_and_an_overlapping_ui_backfill_changes_nothing(
    airflow: Airflow,
) -> None:
    from anomaly.features import build_range
    from anomaly.scoring import score_interval
    from anomaly.simulate.run import run_scenario
    from anomaly.simulate.scenario import Scenario
    from anomaly.store import Lake
    from anomaly.training import model_registry
    from tests.simfleet import anomaly_home, clear_scores, incidents_of, scores_of, small_model

    day = timedelta(days=1)
    with anomaly_home(airflow.env["ANOMALY_HOME"]):
        # 3 hosts x 8 days at 5 min with typed faults, features built, a small champion
        sc = Scenario(
            hosts=3,
            days=8,
            name="e2e",
            anomaly_share=0.2,
            seed=5,
            step_seconds=300,
            types=("cpu_saturation", "memory_leak", "traffic_spike", "level_shift"),
        )
        assert sc.source_name == SCORE_SOURCE
        run_scenario(sc)
        lake = Lake()
        build_range(sc.source_name, sc.start, sc.end, day, run_id="build", lake=lake)
        model_registry.promote(small_model(sc, lake, trees=20).version, reason="e2e", lake=lake)
        week = (sc.start + day, sc.start + 8 * day)

        # the reference: the week scored hour by hour, in this process
        for h in range(7 * 24):
            score_interval(sc.source_name, week[0] + h * HOUR, week[0] + (h + 1) * HOUR, f"h{h}", lake=lake)
        hourly_scores, hourly_incidents = scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)
        assert len(hourly_scores) == 3 * 7 * 288 and hourly_scores["is_anomaly"].any()
        assert len(hourly_incidents) > 0

        clear_scores(lake, sc.source_name)

    # the week as 7 daily runs from the CLI, two at a time
    airflow.cli("dags", "unpause", "score_metrics")
    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        "score_metrics",
        "--from-date",
        week[0].isoformat(),
        "--to-date",
        (week[1] - day).isoformat(),
        "--max-active-runs",
        "2",
        "--reprocess-behavior",
        "failed",
        "--dag-run-conf",
        json.dumps({"source": sc.source_name, "publish": False}),
    )
    runs = airflow.wait_for_runs(7, "score_metrics")
    assert (runs["state"] == "success").all(), runs
    scores, incidents = scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)
    pd.testing.assert_frame_equal(scores, hourly_scores, obj="scores, CLI backfill vs hourly")
    pd.testing.assert_frame_equal(incidents, hourly_incidents, obj="incidents, CLI backfill vs hourly")

    # an overlapping backfill from the UI's endpoint, finished days reprocessed, newest first
    created = airflow.api(
        "POST",
        "backfills",
        {
            "dag_id": "score_metrics",
            "from_date": (week[0] + 2 * day).isoformat(),
            "to_date": (week[0] + 4 * day).isoformat(),
            "run_backwards": True,
            "reprocess_behavior": "completed",
            "max_active_runs": 2,
            "dag_run_conf": {"source": sc.source_name, "publish": False},
        },
    )
    assert created["dag_id"] == "score_metrics"
    runs = airflow.wait_for_runs(7, "score_metrics", closed=False)
    airflow.cli("dags", "pause", "score_metrics")
    assert (runs["state"] == "success").all(), runs
    assert runs["clear_number"].tolist() == [0, 0, 1, 1, 1, 0, 0], runs  # days 3-5 ran again
    scores, incidents = scores_of(lake, sc.source_name), incidents_of(lake, sc.source_name)
    pd.testing.assert_frame_equal(scores, hourly_scores, obj="scores after the overlapping backfill")
    pd.testing.assert_frame_equal(incidents, hourly_incidents, obj="incidents after the overlapping backfill")
    assert not scores.duplicated(["host", "ts"]).any()
    # every incident the scheduler's runs touched was explained by their explain task
    explained = lake.query(
        "SELECT count(*) FILTER (WHERE explained_at IS NULL) AS n FROM incidents WHERE source = ?",
        [sc.source_name],
    )
    assert explained["n"][0] == 0
