"""
### ingest_metrics

Loads host metrics for one data interval `[data_interval_start, data_interval_end)` from a
source (`simulation`, `prometheus`, `postgres` or `files`) into the lake table `raw_metrics`
(grain: one row per host x metric x timestamp), then builds that interval's features.

Tasks: `ingest` >> `build_features`.

* **Reads**: the source chosen by the `source` param (default: `ANOMALY_SOURCE`).
* **Writes**: `raw_metrics` (the interval of that source, replaced in one transaction),
  `quarantine` (rejected rows with their reason), `hosts`, `ingest_log`; then `features`
  (the interval, replaced in one transaction from `sql/features/*.sql`), `feature_catalog`,
  `feature_log`.
* **Emits**: the Assets `x-anomaly://lake/raw_metrics` and `x-anomaly://lake/features`,
  which later DAGs schedule on.
* **Why features live here** rather than in a DAG scheduled on the raw Asset: a feature build
  needs the exact data interval (it reads the longest window's lookback before it and writes
  only the interval), and an Asset-triggered run has no data interval of its own. Running it
  as the next task of the same run keeps interval, retries and backfills aligned: backfilling
  ingest backfills features, and a failed ingest never feeds features a partial interval.
  `build_features` has `depends_on_past`: it waits for the previous interval's build, and so
  for its ingest, since its first hour reads the hour before. Data that arrives after an
  interval was built (a re-ingest, a late fix) makes the next hour's features and the seasonal
  columns a day and a week later stale: rebuild that range with `anomaly features build`.
  Validation tasks will sit between the two (they belong to the validation issue).
* **Idempotent**: a re-run or an overlapping backfill leaves the same rows; a failed run
  leaves the interval as it was.
* **Schedule**: hourly by default (`ANOMALY_INGEST_SCHEDULE`, a cron in UTC); catchup off
  (`ANOMALY_INGEST_CATCHUP`). Backfill any past range with
  `airflow backfill create --dag-id ingest_metrics --from-date ... --to-date ... --reprocess-behavior failed`
  (Airflow asks for a reprocess behaviour because `build_features` depends on the past) or the UI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from anomaly.registry import ASSET_FEATURES, ASSET_RAW_METRICS
from anomaly.settings import get_settings
from anomaly.sources import SOURCE_NAMES

settings = get_settings()
raw_metrics = Asset(ASSET_RAW_METRICS)
features = Asset(ASSET_FEATURES)


@dag(
    schedule=CronDataIntervalTimetable(settings.ingest_schedule, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=settings.ingest_catchup,
    max_active_runs=4,
    default_args={
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": True,
    },
    params={
        "source": Param(
            settings.source, type="string", enum=list(SOURCE_NAMES), description="Where to read metrics from."
        ),
        "allow_shrink": Param(
            False,
            type="boolean",
            description="Let an empty answer (or one missing whole metrics) replace an interval that "
            "holds data. Off: such a run fails instead of deleting rows.",
        ),
    },
    tags=["anomaly", "ingest"],
    doc_md=__doc__,
)
def ingest_metrics() -> None:
    @task(outlets=[raw_metrics])
    def ingest(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Fetch, check and load the interval; returns the ingest report."""
        from anomaly.ingest import ingest_interval, manual_interval

        start, end = data_interval_start, data_interval_end
        if start is None or end is None:  # triggered without a logical date: the last full interval
            start, end = manual_interval(dag.timetable, dag_run.run_after)
        report = ingest_interval(params["source"], start, end, run_id, allow_shrink=params["allow_shrink"])
        return report.as_dict()

    @task(outlets=[features], depends_on_past=True)
    def build_features(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Compute the interval's features from `sql/features/*.sql` and replace them in the lake."""
        from anomaly.features import build_features as build
        from anomaly.ingest import manual_interval

        start, end = data_interval_start, data_interval_end
        if start is None or end is None:
            start, end = manual_interval(dag.timetable, dag_run.run_after)
        return build(params["source"], start, end, run_id).as_dict()

    ingest() >> build_features()


ingest_metrics()
