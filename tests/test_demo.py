"""``make demo`` end to end, small: simulated fleet -> promtool -> Prometheus -> Airflow DAG -> lake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest


@pytest.fixture
def publish_db():
    """A throwaway Postgres database for the demo's publish step (not the user's anomaly_demo)."""
    import uuid

    import psycopg2

    name = f"anomaly_demo_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3
    )
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


# the simulation run covers a day: enough history for the demo to train and score its last quarter
@pytest.mark.parametrize(("source", "days"), [("prometheus", "0.5"), ("simulation", "1")])
def test_demo_ingests_every_host_and_metric_and_says_how_to_query(
    tmp_path: Path, source: str, days: str, publish_db: str
) -> None:
    env = {
        **os.environ,
        "ANOMALY_HOME": str(tmp_path / "var"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "ANOMALY_TASK_RETRIES": "0",
        "AIRFLOW_CONN_ANOMALY_POSTGRES": publish_db,
        "COLUMNS": "200",
    }
    exe = Path(sys.executable).parent / "anomaly"
    out = subprocess.run(
        [str(exe), "demo", "--hosts", "4", "--days", days, "--source", source]
        + (["--trees", "40"] if source == "simulation" else ["--no-train"]),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # 4 hosts x 15 metrics x 2 six-hour intervals of one-minute samples, less what injected faults
    # removed (scrape gaps, reboots): every host and metric still lands, nothing is quarantined
    m = re.search(r"([\d,]+) rows from 4 hosts x 15 metrics in raw_metrics; 0 rows in quarantine\.", text)
    assert m, text[-3000:]
    rows = int(m.group(1).replace(",", ""))
    expected_rows = int(float(days) * 86_400)  # 4 hosts x 15 metrics x 1,440 minutes a day
    assert 0.8 * expected_rows <= rows <= expected_rows
    assert "uv run anomaly sql" in text and "ATTACH 'ducklake:sqlite:" in text
    # every loaded host x timestamp got its features, in one build per interval
    m = re.search(
        r"features: ([\d,]+) rows x (\d+) feature columns in table features \((\d+) interval builds", text
    )
    assert m, text[-3000:]
    assert int(m.group(2)) >= 40 and int(m.group(3)) == int(float(days) * 4)

    from anomaly.settings import Settings
    from anomaly.simulate.faults import load_faults
    from anomaly.store import Lake

    faults = load_faults(tmp_path / "var" / "demo" / "faults.json")
    assert len({f.type for f in faults}) >= 3  # the demo fleet has labelled incidents
    lake = Lake(Settings(home=tmp_path / "var"))
    keys = lake.query(
        "SELECT (SELECT count(*) FROM features) AS f, (SELECT count(DISTINCT (host, ts)) FROM raw_metrics) AS r"
    ).iloc[0]
    assert keys["f"] == keys["r"] == int(m.group(1).replace(",", ""))
    # every interval was validated (raw, completeness, features) and its Data Docs page written
    m = re.search(r"validation: (.*); Data Docs: (\S+index\.html)", text)
    assert m, text[-3000:]
    index = Path(m.group(2))
    checks = lake.query(
        "SELECT suite, count(DISTINCT interval_start) AS intervals, count(DISTINCT report) AS pages, "
        "bool_and(success OR severity = 'warning') AS passed FROM validation_results GROUP BY suite ORDER BY suite"
    )
    assert checks["suite"].tolist() == ["features", "raw_completeness", "raw_metrics"]
    n = int(float(days) * 4)
    assert checks["intervals"].tolist() == checks["pages"].tolist() == [n, n, n] and checks["passed"].all()
    html = index.read_text()
    for page in lake.query("SELECT DISTINCT report FROM validation_results")["report"]:
        assert Path(page).exists() and Path(page).name in html
    labels = lake.query("SELECT type, dataset FROM labels")
    assert len(labels) == len(faults) and set(labels["dataset"]) == {source}
    assert (tmp_path / "var" / "demo" / "faults.png").stat().st_size > 20_000
    if source == "prometheus":
        assert "promtool backfilled the TSDB" in text
        assert re.search(r"prometheus fetch: [\d,]+ rows in [\d.]+s = [\d,]+ rows/s", text)
    else:
        # the simulation source applies the same faults file: the lake holds exactly its rows
        from anomaly.simulate import make_fleet
        from anomaly.simulate.faults import inject
        from anomaly.simulate.fleet import simulate

        window = lake.query("SELECT min(ts) AS a, max(ts) AS b FROM raw_metrics").iloc[0]
        expected = simulate(
            make_fleet(4, 7),
            window["a"].to_pydatetime(),
            window["b"].to_pydatetime() + timedelta(minutes=1),
            60,
            7,
            modifiers=[inject(faults)],
        )
        assert rows == len(expected)

    if source == "simulation":
        # trained, scored the test span, compared with the injected faults, published
        assert re.search(r"model v1 \(\d+s\): test span point precision", text), text[-3000:]
        assert (tmp_path / "var" / "reports" / "models" / "v1.html").exists()
        m = re.search(r"detection: (\d+) of (\d+) injected faults found; (\d+) of (\d+) incidents", text)
        assert m, text[-3000:]
        found, faults_in_span, _, incidents = map(int, m.groups())
        assert faults_in_span > 0 and found > 0 and incidents > 0
        m = re.search(r"anomaly_incidents ([\d,]+) rows, anomaly_incident_explanations ([\d,]+) rows", text)
        assert m and int(m.group(1)) >= incidents and int(m.group(2)) == 5 * int(m.group(1))
