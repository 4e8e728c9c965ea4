"""``make demo`` end to end, small: simulated fleet -> promtool -> Prometheus -> Airflow DAG -> lake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
    # 4 hosts x 15 metrics x 2 six-hour intervals of one-minute samples
    assert "43,200 rows from 4 hosts x 15 metrics in raw_metrics; 0 rows in quarantine." in text
    assert len(re.findall(r"\b720\b", text)) >= 4 + 15  # every host and every metric has 720 rows
    assert "uv run anomaly sql" in text and "ATTACH 'ducklake:sqlite:" in text
    if source == "prometheus":
        assert "promtool backfilled the TSDB" in text
        assert re.search(r"prometheus fetch: 43,200 rows in [\d.]+s = [\d,]+ rows/s", text)
