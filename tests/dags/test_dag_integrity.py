"""Every DAG file imports cleanly, fast, without heavy imports or parse-time I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = [
    "pandas",
    "numpy",
    "duckdb",
    "sklearn",
    "xgboost",
    "lightgbm",
    "great_expectations",
    "pyarrow",
    "requests",
    "psycopg2",
]

# Runs in a fresh interpreter: imports Airflow first (its own cost is not the DAG's), then
# forbids connections, variables and sockets, then times the import of the DAG file alone.
_PROBE = r"""
import importlib.util, json, socket, sys, time
import airflow.sdk  # noqa: F401  (Airflow's own import cost is not the DAG file's)
from airflow.sdk import BaseHook, Variable

def _forbidden(*args, **kwargs):
    raise RuntimeError("parse-time access")

BaseHook.get_connection = classmethod(_forbidden)
Variable.get = staticmethod(_forbidden)
socket.socket.connect = _forbidden
socket.create_connection = _forbidden
before = set(sys.modules)
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
t0 = time.process_time()  # CPU time: other processes on the cores do not count
spec.loader.exec_module(module)
elapsed = time.process_time() - t0
from airflow.sdk import DAG
dags = [v.dag_id for v in vars(module).values() if isinstance(v, DAG)]
new = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"seconds": elapsed, "new_modules": new, "dags": dags}))
"""


def _probe(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"{path.name} failed to import:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_fast_and_light(path: Path) -> None:
    result = _probe(path)
    heavy = sorted(set(result["new_modules"]) & set(HEAVY))
    assert not heavy, f"{path.name} imports heavy modules at parse time: {heavy}"
    assert result["seconds"] < 1.0, f"{path.name} took {result['seconds']:.2f}s to import"


def test_probe_catches_heavy_imports_and_parse_time_access(tmp_path: Path) -> None:
    """The integrity check itself can fail: a DAG file that does what we forbid is caught."""
    heavy = tmp_path / "heavy.py"
    heavy.write_text("import pandas\n")
    assert "pandas" in _probe(heavy)["new_modules"]
    conn = tmp_path / "conn.py"
    conn.write_text("from airflow.sdk import BaseHook\nBaseHook.get_connection('x')\n")
    with pytest.raises(AssertionError, match="parse-time access"):
        _probe(conn)


def test_dagbag_has_expected_dags_without_errors(airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "ingest_metrics" in bag.dag_ids
    for dag_id in bag.dag_ids:
        dag = bag.get_dag(dag_id)
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None
        assert Path(dag.fileloc).stem == dag_id, "one DAG per file, file stem = dag_id"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_ingest_dag_uses_interval_timetable(airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.timetables.interval import CronDataIntervalTimetable

    dag = DagBag(dag_folder=str(DAGS)).get_dag("ingest_metrics")
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False
