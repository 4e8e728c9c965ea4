"""``make demo`` end to end, small: simulated fleet -> promtool -> Prometheus -> Airflow DAG -> lake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest


@pytest.mark.parametrize("source", ["prometheus", "simulation"])
def test_demo_ingests_every_host_and_metric_and_says_how_to_query(tmp_path: Path, source: str) -> None:
    env = {
        **os.environ,
        "ANOMALY_HOME": str(tmp_path / "var"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "ANOMALY_TASK_RETRIES": "0",
        "COLUMNS": "200",
    }
    exe = Path(sys.executable).parent / "anomaly"
    out = subprocess.run(
        [str(exe), "demo", "--hosts", "4", "--days", "0.5", "--source", source],
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
    assert 0.8 * 43_200 <= rows <= 43_200
    assert "uv run anomaly sql" in text and "ATTACH 'ducklake:sqlite:" in text
    # every loaded host x timestamp got its features, in one build per interval
    m = re.search(
        r"features: ([\d,]+) rows x (\d+) feature columns in table features \((\d+) interval builds", text
    )
    assert m, text[-3000:]
    assert int(m.group(2)) >= 40 and int(m.group(3)) == 2

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
    assert checks["intervals"].tolist() == checks["pages"].tolist() == [2, 2, 2] and checks["passed"].all()
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
