"""End to end with a real scheduler: ``airflow backfill create`` loads exactly the simulated rows,
and an overlapping backfill that reprocesses finished intervals changes nothing.

Starts ``airflow standalone`` (API server, scheduler, DAG processor, triggerer; LocalExecutor) on a
free loopback port for this module, with its metadata in a throw-away database on the real
PostgreSQL (SQLite answers "database is locked" when the CLI and the scheduler write at once):
about 40 s and 1.5 GB.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    def __init__(self, home: Path, env: dict[str, str], database: str) -> None:
        self.home, self.env, self.database = home, env, database

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

    def runs(self, prefix: str = "backfill__") -> pd.DataFrame:
        return self._sql(
            "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = 'ingest_metrics' AND run_id LIKE %s ORDER BY data_interval_start",
            (prefix + "%",),
        )

    def _backfills_completed(self) -> bool:
        # Airflow allows one running backfill per DAG; the scheduler closes it after its last run
        return int(self._sql("SELECT count(*) AS n FROM backfill WHERE completed_at IS NULL")["n"][0]) == 0

    def wait_for_runs(self, expected: int, timeout: float = 300) -> pd.DataFrame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs()
            finished = runs[runs["state"].isin(["success", "failed"])]
            if len(runs) >= expected and len(finished) == len(runs) and self._backfills_completed():
                return runs
            time.sleep(2)
        raise AssertionError(f"backfill did not finish in {timeout}s:\n{self.runs()}")


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
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "ANOMALY_HOME": str(base / "var"),
        "ANOMALY_SIM_HOSTS": str(HOSTS),
        "ANOMALY_TASK_RETRIES": "1",
        "ANOMALY_RETRY_DELAY_SECONDS": "1",
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
        yield Airflow(base / "airflow", env, database)
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
    # logical dates 00:00 .. 05:00 -> six hourly intervals [00:00, 06:00)
    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        "ingest_metrics",
        "--from-date",
        "2026-02-01T00:00:00+00:00",
        "--to-date",
        "2026-02-01T05:00:00+00:00",
        # one run at a time, as the DAG says: a feature build reads the interval before its own
        "--max-active-runs",
        "1",
        "--reprocess-behavior",
        "failed",
    )
    runs = airflow.wait_for_runs(6)
    assert (runs["state"] == "success").all(), runs
    first = _lake_rows(airflow.env, T0, T0 + 6 * HOUR)
    pd.testing.assert_frame_equal(first, _expected(T0, T0 + 6 * HOUR), check_dtype=False)

    # overlapping backfill, finished intervals reprocessed: 03:00 .. 08:00
    airflow.cli(
        "backfill",
        "create",
        "--dag-id",
        "ingest_metrics",
        "--from-date",
        "2026-02-01T03:00:00+00:00",
        "--to-date",
        "2026-02-01T08:00:00+00:00",
        "--max-active-runs",
        "1",
        "--reprocess-behavior",
        "completed",
    )
    runs = airflow.wait_for_runs(9)
    assert (runs["state"] == "success").all(), runs
    both = _lake_rows(airflow.env, T0, T0 + 9 * HOUR)
    pd.testing.assert_frame_equal(both, _expected(T0, T0 + 9 * HOUR), check_dtype=False)
    assert not both.duplicated(["ts", "host", "metric"]).any()
    # every interval's features were built, once: one row per host and timestamp
    from anomaly.settings import Settings
    from anomaly.store import Lake

    lake = Lake(Settings(home=airflow.env["ANOMALY_HOME"]))
    counts = lake.query(
        "SELECT (SELECT count(*) FROM features) AS f, (SELECT count(DISTINCT (host, ts)) FROM features) AS k, "
        "(SELECT count(DISTINCT (host, ts)) FROM raw_metrics) AS r"
    ).iloc[0]
    assert counts["f"] == counts["k"] == counts["r"] >= HOSTS * 9 * 60
