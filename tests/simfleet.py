"""The small labelled fleet the training and scoring tests share (not a conftest: importing
that twice would reset the session's Airflow home)."""

from __future__ import annotations


def simulated_fleet(name: str):
    """3 hosts x 2 days with four typed faults (seed 5) through the normal ingest path, features
    built: the small labelled fleet the training and scoring tests share. Uses the current
    ANOMALY_HOME; returns (scenario, lake)."""
    from datetime import timedelta

    from anomaly.features import build_range
    from anomaly.simulate.run import run_scenario
    from anomaly.simulate.scenario import Scenario
    from anomaly.store import Lake

    sc = Scenario(
        hosts=3,
        days=2,
        name=name,
        anomaly_share=0.2,
        seed=5,
        types=("cpu_saturation", "memory_leak", "traffic_spike", "level_shift"),
    )
    run_scenario(sc)
    lake = Lake()
    build_range(sc.source_name, sc.start, sc.end, timedelta(hours=12), run_id="build", lake=lake)
    return sc, lake
