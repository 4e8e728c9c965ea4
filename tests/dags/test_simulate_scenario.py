"""``dag.test()`` of simulate_scenario: params in, labelled rows and a picture out, idempotent."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"
CONF = {
    "name": "dagtest",
    "hosts": 5,
    "days": 0.5,
    "anomaly_share": 0.2,
    "types": "cpu_saturation,memory_leak,traffic_drop,scrape_gap",
    "exclude": "",
    "seed": 3,
    "start": "2026-01-05T00:00:00+00:00",
}


def test_simulate_scenario_dag_writes_rows_labels_and_plot(airflow_db, anomaly_home, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from anomaly.settings import get_settings
    from anomaly.store import Lake

    monkeypatch.setenv("ANOMALY_TASK_RETRIES", "0")
    get_settings.cache_clear()
    dag = DagBag(dag_folder=str(DAGS)).get_dag("simulate_scenario")
    first = dag.test(run_conf=CONF)
    assert first.state == "success"
    lake = Lake()
    rows = lake.query("SELECT count(*) AS n FROM raw_metrics WHERE source = 'simulation:dagtest'")["n"][0]
    labels = lake.query("SELECT type FROM labels WHERE dataset = 'simulation:dagtest'")
    assert rows > 0 and len(labels) >= 4
    assert set(labels["type"]) == set(CONF["types"].split(","))
    assert (anomaly_home / "reports" / "simulations" / "dagtest.png").stat().st_size > 20_000

    again = dag.test(run_conf=CONF)
    assert again.state == "success"
    assert (
        lake.query("SELECT count(*) AS n FROM raw_metrics WHERE source = 'simulation:dagtest'")["n"][0]
        == rows
    )
    assert len(lake.query("SELECT * FROM labels WHERE dataset = 'simulation:dagtest'")) == len(labels)
