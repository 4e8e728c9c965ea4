"""
### simulate_scenario

Generates labelled training data on demand: a simulated fleet (web, database, batch and cache
hosts in dev, staging and prod) with typed infrastructure faults injected into a chosen share
of its points.

* **Reads**: nothing; everything is generated from the params (deterministic for the seed).
* **Writes**: `raw_metrics` under source `simulation:<name>` (through the files source and the
  normal ingest checks, one day per transaction), `labels` (one row per fault, dataset
  `simulation:<name>`), `hosts`, and a picture of a few hosts with the faults shaded under
  `$ANOMALY_HOME/reports/simulations/<name>.png`.
* **Idempotent**: re-running with the same params replaces the same rows and labels.
* **Schedule**: none; trigger it from the UI with the params below (`exclude` holds fault types
  out, to test detectors on faults they never saw).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

from anomaly.registry import ASSET_RAW_METRICS
from anomaly.settings import get_settings

settings = get_settings()


@dag(
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
    },
    params={
        "name": Param("sim", type="string", pattern=r"^[a-z0-9_-]{1,40}$", description="Dataset name."),
        "hosts": Param(50, type="integer", minimum=1, maximum=2000),
        "days": Param(14, type="number", exclusiveMinimum=0, maximum=366),
        "anomaly_share": Param(0.2, type="number", minimum=0, maximum=0.9),
        "types": Param("all", type="string", description="Comma-separated fault types, or 'all'."),
        "exclude": Param("", type="string", description="Comma-separated fault types to hold out."),
        "seed": Param(7, type="integer"),
        "start": Param("2026-01-05T00:00:00+00:00", type="string", description="First timestamp (UTC)."),
    },
    tags=["anomaly", "simulation"],
    doc_md=__doc__,
)
def simulate_scenario() -> None:
    @task(outlets=[Asset(ASSET_RAW_METRICS)])
    def simulate(params=None) -> dict:
        """Plan the faults, render, ingest, label and draw the scenario."""
        from anomaly.simulate.run import run_params

        return run_params(params)

    simulate()


simulate_scenario()
