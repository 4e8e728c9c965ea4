"""
### ingest_metrics

Loads host metrics for one data interval `[data_interval_start, data_interval_end)` from a
source (`simulation`, `prometheus`, `postgres` or `files`) into the lake table `raw_metrics`
(grain: one row per host x metric x timestamp), then builds that interval's features. Great
Expectations validates both before anyone downstream reads them.

Tasks: `ingest` >> `validate_raw` >> `build_features` >> `validate_features`.

* **Reads**: the source chosen by the `source` param (default: `ANOMALY_SOURCE`).
* **Writes**: `raw_staging` (the fetched batch, held until validated); `raw_metrics` (the
  interval of that source, replaced in one transaction when the batch passes), `quarantine`
  (rejected rows, and whole batches that failed a critical expectation, with the reason),
  `hosts`, `ingest_log`; then `features` (the interval, replaced in one transaction from
  `sql/features/*.sql`), `feature_catalog`, `feature_log`; `validation_results`,
  `quarantine_batches` and Data Docs pages under `ANOMALY_HOME/reports/validation/`.
* **Validation gates**: `validate_raw` runs the `raw_metrics` and `raw_completeness` suites on
  the staged batch; `validate_features` runs the `features` suite on the built interval. A
  critical failure fails the task (no retries: the same batch fails the same way) with a message
  naming the suite, the expectation, the observed value and the interval; the batch is moved to
  quarantine and the downstream tasks do not run. Warnings are recorded and the run goes on.
  Fix the data, then clear the run's `ingest` task with its downstream tasks (or trigger the
  interval again): a passing run releases it.
* **Emits**: the Assets `x-anomaly://lake/raw_metrics` (from `validate_raw`) and
  `x-anomaly://lake/features` (from `validate_features`), so DAGs scheduled on them only ever
  see validated data.
* **Why features live here** rather than in a DAG scheduled on the raw Asset: a feature build
  needs the exact data interval (it reads the longest window's lookback before it and writes
  only the interval), and an Asset-triggered run has no data interval of its own. Running it
  as the next task of the same run keeps interval, retries and backfills aligned: backfilling
  ingest backfills features, and a failed ingest or validation never feeds features a partial
  or unvalidated interval.
* **One run at a time** (`max_active_runs=1`): a feature build reads the hour before its
  interval, so interval N+1 must not be built before N's raw data is in. Runs go in order
  (scheduler, catchup and backfill alike); a failed run does not block the next one, whose
  features then see the gap. Data that arrives after an interval was built (a re-ingest, a late
  fix, a quarantined hour released) makes the next hour's features and the seasonal columns a
  day and a week later stale: rebuild that range with `anomaly features build`.
* **Idempotent**: a re-run or an overlapping backfill leaves the same rows; a failed run
  leaves the interval as it was.
* **Schedule**: hourly by default (`ANOMALY_INGEST_SCHEDULE`, a cron in UTC); catchup off
  (`ANOMALY_INGEST_CATCHUP`). Backfill any past range with
  `airflow backfill create --dag-id ingest_metrics --from-date ... --to-date ... --reprocess-behavior failed`
  (also re-runs intervals whose earlier run failed) or the UI.
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
    max_active_runs=1,
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
    def interval(data_interval_start, data_interval_end, dag_run, dag):
        from anomaly.ingest import manual_interval

        if data_interval_start is None or data_interval_end is None:
            # triggered without a logical date: the last full interval
            return manual_interval(dag.timetable, dag_run.run_after)
        return data_interval_start, data_interval_end

    def gate(fn, *args, **kwargs):
        """Run a step whose refusal is a verdict on the data (a failed validation, a batch that does
        not parse): fail the task with its message and without retries, which would only repeat it."""
        from airflow.sdk.exceptions import AirflowFailException

        from anomaly.features import FeatureError
        from anomaly.ingest import IngestRejected
        from anomaly.validation import ValidationFailed

        try:
            return fn(*args, **kwargs)
        except (ValidationFailed, IngestRejected, FeatureError) as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def ingest(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Fetch the interval, type every row and stage it (raw_staging); returns the report."""
        from anomaly.ingest import stage_interval

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        return gate(stage_interval, params["source"], start, end, run_id).as_dict()

    @task(outlets=[raw_metrics])
    def validate_raw(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Great Expectations suites raw_metrics and raw_completeness on the staged batch; release it
        into raw_metrics, or quarantine it and fail."""
        from anomaly.ingest import release_interval
        from anomaly.sources import get_source

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        src = get_source(params["source"])
        host_meta = src.hosts() if hasattr(src, "hosts") else None
        report = gate(
            release_interval,
            params["source"],
            start,
            end,
            run_id,
            allow_shrink=params["allow_shrink"],
            host_meta=host_meta,
        )
        return report.as_dict()

    @task
    def build_features(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Compute the interval's features from `sql/features/*.sql` and replace them in the lake."""
        from anomaly.features import build_features as build

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        return gate(build, params["source"], start, end, run_id).as_dict()

    @task(outlets=[features])
    def validate_features(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Great Expectations suite features on the interval's features; quarantine them and fail
        on a critical failure, so training and scoring never read them."""
        from anomaly.features import validate_features as validate

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        return gate(validate, params["source"], start, end, run_id).as_dict()

    ingest() >> validate_raw() >> build_features() >> validate_features()


ingest_metrics()
