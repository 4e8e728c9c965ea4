"""The small labelled fleet the training and scoring tests share (not a conftest: importing
that twice would reset the session's Airflow home)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Environment variables set (a value) or removed (None) while the block runs, settings
    re-read on entry and exit (for module-scoped fixtures and for work on another process's
    lake, where pytest's function-scoped monkeypatch does not fit)."""
    from anomaly.settings import get_settings

    old = {key: os.environ.get(key) for key in values}

    def apply(new: dict[str, str | None]) -> None:
        for key, value in new.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        get_settings.cache_clear()

    apply(values)
    try:
        yield
    finally:
        apply(old)


def anomaly_home(home):
    """``ANOMALY_HOME`` is ``home`` while the block runs."""
    return environment(ANOMALY_HOME=str(home))


def small_model(sc, lake, trees: int = 30):
    """A small ensemble trained on the whole fleet and registered as a candidate."""
    from anomaly.training.train import train_model

    return train_model(
        sc.source_name,
        sc.start,
        sc.end,
        run_id="train",
        params={"n_estimators": trees, "random_state": 0},
        promote=False,
        lake=lake,
    )


def scores_of(lake, source: str):
    return lake.query(
        "SELECT host, ts, score, is_anomaly, is_alert, model_version FROM scores WHERE source = ? ORDER BY host, ts",
        [source],
    )


def incidents_of(lake, source: str):
    return lake.query(
        "SELECT incident_id, host, start_ts, end_ts, peak_score, mean_score, points, model_version "
        "FROM incidents WHERE source = ? ORDER BY host, start_ts",
        [source],
    )


def clear_scores(lake, source: str) -> None:
    """Remove a source's scores, incidents, score log and orphaned explanations."""

    def work(con):
        for table in ("scores", "incidents", "score_log"):
            con.execute(f"DELETE FROM {table} WHERE source = ?", [source])
        con.execute(
            "DELETE FROM incident_explanations WHERE incident_id NOT IN (SELECT incident_id FROM incidents)"
        )

    lake.write(work)
