"""The lake: schema applied idempotently, extensions from wheels, concurrent readers and writers."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from anomaly.settings import Settings
from anomaly.store import Lake, duckdb_cli_lines, extension_path
from tests.conftest import FrameSource, grid_frame

T0 = datetime(2026, 4, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_schema_is_applied_once_and_tables_exist(lake) -> None:
    lake.init()
    Lake().init()  # a second process-like handle finds everything applied
    versions = lake.query("SELECT version, count(*) AS n FROM schema_migrations GROUP BY ALL ORDER BY 1")
    assert versions["n"].tolist() == [1] * len(versions)
    assert versions["version"].tolist()[0] == "001_raw_metrics"
    tables = set(
        lake.query("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake'")[
            "table_name"
        ]
    )
    assert {"raw_metrics", "hosts", "metric_catalog", "labels", "quarantine", "ingest_log"} <= tables
    kinds = lake.query("SELECT name, kind FROM metric_catalog")
    assert len(kinds) == kinds["name"].nunique() == 15
    assert set(kinds["kind"]) <= {"ratio", "percent", "gauge", "counter", "bytes", "rate"}
    cols = lake.query("DESCRIBE raw_metrics").set_index("column_name")["column_type"].to_dict()
    assert cols["ts"] == "TIMESTAMP WITH TIME ZONE" and cols["value"] == "DOUBLE"


def test_lake_files_live_under_anomaly_home(lake, anomaly_home: Path) -> None:
    from anomaly.ingest import ingest_interval

    ingest_interval("files", T0, T0 + HOUR, "r", source=FrameSource(grid_frame(T0, T0 + HOUR)))
    assert (anomaly_home / "lake" / "catalog.sqlite").is_file()
    assert any((anomaly_home / "lake" / "data").rglob("*.parquet"))


def test_extensions_come_from_installed_wheels(tmp_path: Path) -> None:
    import duckdb

    path = extension_path("ducklake")
    assert "site-packages" in str(path) and path.name == "ducklake.duckdb_extension"
    assert f"v{duckdb.__version__}" in str(path)
    sqlite = extension_path("sqlite", tmp_path)
    assert sqlite.name == "sqlite_scanner.duckdb_extension" and sqlite.parent.parent == tmp_path


def test_plain_duckdb_cli_reads_the_lake(lake, anomaly_home: Path) -> None:
    """The README's duckdb CLI lines work as printed (the duckdb-cli wheel is a dependency)."""
    from anomaly.ingest import ingest_interval

    ingest_interval("files", T0, T0 + HOUR, "r", source=FrameSource(grid_frame(T0, T0 + HOUR)))
    duckdb_bin = Path(sys.executable).parent / "duckdb"
    out = subprocess.run(
        [str(duckdb_bin), "-csv"],
        input=duckdb_cli_lines(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "host,metric,n"
    assert lines[1:] == ["h1,cpu_util,60", "h1,load1,60", "h2,cpu_util,60", "h2,load1,60"]


# --- concurrency: separate processes, as Airflow tasks and a person's query would be ----------------


def _writer(home: str, intervals: int, tag: str, done: mp.Queue) -> None:
    os.environ["ANOMALY_HOME"] = home
    from anomaly.ingest import ingest_interval

    for i in range(intervals):
        start = T0 + i * HOUR
        ingest_interval(
            "files",
            start,
            start + HOUR,
            f"{tag}-{i}",
            source=FrameSource(grid_frame(start, start + HOUR, hosts=("a", "b", "c"))),
        )
    done.put(tag)


def test_reads_and_writes_run_concurrently_without_blocking_or_partial_intervals(lake, anomaly_home) -> None:
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    intervals = 6
    writers = [
        ctx.Process(target=_writer, args=(str(anomaly_home), intervals, tag, done)) for tag in ("w1", "w2")
    ]
    for w in writers:
        w.start()
    reads, seen = 0, set()
    full = 3 * 2 * 60  # hosts x metrics x minutes in one interval
    deadline = time.monotonic() + 240
    reader = Lake()
    while any(w.is_alive() for w in writers) and time.monotonic() < deadline:
        counts = reader.query(
            "SELECT date_trunc('hour', ts) AS h, count(*) AS n FROM raw_metrics GROUP BY ALL"
        )
        # a reader sees an interval whole or not at all, never half-written or doubled
        assert set(counts["n"]) <= {full}, counts
        seen.add(len(counts))
        reads += 1
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert {done.get(timeout=5), done.get(timeout=5)} == {"w1", "w2"}
    assert reads >= 3, "the reader made no progress while the writers ran"
    assert len(seen) >= 2, "the reader never saw the lake change while it was being written"
    final = lake.query("SELECT count(*) AS n, count(DISTINCT (host, metric, ts)) AS k FROM raw_metrics")
    assert final["n"][0] == final["k"][0] == intervals * full


# --- Postgres catalog --------------------------------------------------------------------------------


@pytest.fixture
def postgres_catalog(monkeypatch, tmp_path: Path):
    name = f"anomaly_catalog_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEST_CATALOG",
        f'{{"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, '
        f'"login": "postgres", "schema": "{name}"}}',
    )
    yield Settings(home=tmp_path / "home", catalog="postgres", catalog_conn_id="test_catalog")
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_postgres_catalog_holds_the_same_tables(postgres_catalog: Settings) -> None:
    from anomaly.ingest import ingest_interval

    pg_lake = Lake(postgres_catalog)
    ingest_interval(
        "files",
        T0,
        T0 + HOUR,
        "r",
        settings=postgres_catalog,
        lake=pg_lake,
        source=FrameSource(grid_frame(T0, T0 + HOUR)),
    )
    assert pg_lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 240
    assert not (postgres_catalog.home / "lake" / "catalog.sqlite").exists()
    conn_id = postgres_catalog.catalog_conn_id
    dbname = os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"].split('"schema": "')[1].split('"')[0]
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=dbname) as pg:
        cur = pg.cursor()
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'ducklake_%'")
        assert cur.fetchone()[0] > 5  # DuckLake's catalog tables are in Postgres


def test_postgres_catalog_without_connection_says_which(tmp_path: Path) -> None:
    from anomaly.store import StoreError

    settings = Settings(home=tmp_path, catalog="postgres", catalog_conn_id="no_such_catalog")
    with pytest.raises(StoreError, match=r"no_such_catalog.*AIRFLOW_CONN_NO_SUCH_CATALOG"):
        Lake(settings).init()


def _long_reader(home: str, started: mp.Event, finished: mp.Queue) -> None:
    os.environ["ANOMALY_HOME"] = home
    from anomaly.store import Lake

    lake = Lake()
    started.set()
    # seconds of work inside one read of raw_metrics: the catalog stays attached throughout
    lake.query("SELECT sum(r.value * x.range) FROM raw_metrics r, range(4000000) x")
    finished.put(time.monotonic())


def test_a_long_read_does_not_block_or_fail_a_writer(lake, anomaly_home) -> None:
    from anomaly.ingest import ingest_interval

    ingest_interval("files", T0, T0 + HOUR, "r0", source=FrameSource(grid_frame(T0, T0 + HOUR)))
    ctx = mp.get_context("spawn")
    started, finished = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_long_reader, args=(str(anomaly_home), started, finished))
    reader.start()
    assert started.wait(60)
    time.sleep(1.0)  # let the read get going
    ingest_interval(
        "files", T0 + HOUR, T0 + 2 * HOUR, "r1", source=FrameSource(grid_frame(T0 + HOUR, T0 + 2 * HOUR))
    )
    wrote_at = time.monotonic()
    reader.join(timeout=240)
    assert reader.exitcode == 0
    read_done = finished.get(timeout=5)
    assert wrote_at < read_done, "the writer waited for the reader to finish"
    assert lake.query("SELECT count(*) AS n FROM raw_metrics")["n"][0] == 480
