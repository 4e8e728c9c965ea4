"""
### score_metrics

Scores one data interval `[data_interval_start, data_interval_end)` of a source with the champion
model (or the version pinned by the `model_version` param), groups alert points (score at or
above the model's alert threshold) into incidents, explains them, publishes them to Postgres and
watches drift.

Tasks: `wait_for_features` >> `score` >> `explain` >> `publish`, and `score` >> `check_drift` >>
`signal_drift`.

* **Reads**: `features` of the interval (the sensor waits until `feature_log` covers it, i.e. the
  ingest DAG built and validated it), `raw_metrics` (to record points without features), the
  model registry.
* **Writes**: `scores` (the interval, replaced in one transaction with the incidents it touches
  and a `score_log` row), `incidents`, `incident_explanations`, `drift` and a drift report under
  `ANOMALY_HOME/reports/drift/`, `publish_log`; Postgres tables `anomaly_incidents`,
  `anomaly_incident_explanations` and `anomaly_scores` through the connection
  `ANOMALY_PUBLISH_CONN_ID`.
* **Idempotent**: a re-run, a backfill or overlapping backfills leave one score per (host, ts) and
  the same incidents, whatever the order (incidents are recomputed from the scores around the
  interval; an incident open at an interval's end is extended by the next run, same id).
* **Refusals** (no retries): no champion (promote one with `anomaly models promote VERSION`), a
  model whose features the feature store lacks (named). Points without features are not scored
  and are listed in `score_log.missing`.
* **Postgres down**: `publish` retries with backoff, then fails naming the connection; the lake
  keeps everything and the next run publishes what was missed.
* **Drift**: `check_drift` compares the last `ANOMALY_DRIFT_WINDOW_HOURS` (24) up to the
  interval's end with the model's training data (PSI per feature, score PSI, alert rate); when
  it crosses its thresholds `signal_drift` emits the Asset `x-anomaly://lake/drift`, which
  triggers `train_model` (visible under Assets in the UI); otherwise `signal_drift` is skipped.
* **Schedule**: hourly (`ANOMALY_SCORE_SCHEDULE`, cron in UTC), catchup off; backfill any range
  with `airflow backfill create --dag-id score_metrics --from-date ... --to-date ...` or the UI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from anomaly.registry import ASSET_DRIFT
from anomaly.settings import get_settings

settings = get_settings()
drift = Asset(ASSET_DRIFT)


@dag(
    schedule=CronDataIntervalTimetable(settings.score_schedule, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": True,
    },
    params={
        "source": Param(
            settings.score_source, type="string", description="Source whose features are scored."
        ),
        "model_version": Param(
            0, type="integer", minimum=0, description="Pinned model version; 0 = the champion."
        ),
        "publish": Param(True, type="boolean", description="Publish incidents (and scores) to Postgres."),
        "wait_for_features_seconds": Param(
            6 * 3600, type="integer", minimum=0, description="How long to wait for the interval's features."
        ),
    },
    tags=["anomaly", "scoring"],
    doc_md=__doc__,
)
def score_metrics() -> None:
    def interval(data_interval_start, data_interval_end, dag_run, dag):
        from anomaly.ingest import manual_interval

        if data_interval_start is None or data_interval_end is None:
            return manual_interval(dag.timetable, dag_run.run_after)
        return data_interval_start, data_interval_end

    def refusing(fn, *args, **kwargs):
        """A refusal that a retry would only repeat fails the task now, with its message."""
        from airflow.sdk.exceptions import AirflowFailException

        from anomaly.drift import DriftError
        from anomaly.scoring import ScoringError

        try:
            return fn(*args, **kwargs)
        except (ScoringError, DriftError) as exc:
            raise AirflowFailException(str(exc)) from exc

    @task.sensor(poke_interval=60, mode="reschedule", timeout=6 * 3600)
    def wait_for_features(
        data_interval_start=None, data_interval_end=None, params=None, dag_run=None, dag=None, ti=None
    ):
        """Until feature_log covers the interval (the ingest DAG built and validated it)."""
        from airflow.sdk import PokeReturnValue
        from airflow.sdk.exceptions import AirflowFailException

        from anomaly.scoring import features_ready

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        ready, why = features_ready(params["source"], start, end)
        if not ready and ti is not None and ti.start_date is not None:
            waited = (datetime.now(UTC) - ti.start_date).total_seconds()
            if waited > params["wait_for_features_seconds"]:
                raise AirflowFailException(f"gave up after {waited:.0f} s: {why}")
        return PokeReturnValue(is_done=ready, xcom_value=why)

    @task
    def score(
        data_interval_start=None, data_interval_end=None, run_id=None, params=None, dag_run=None, dag=None
    ):
        """Score the interval; replace its scores and recompute the incidents it touches (one transaction)."""
        from anomaly.scoring import score_interval

        start, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        version = params["model_version"] or None
        return refusing(score_interval, params["source"], start, end, run_id, version=version).as_dict()

    @task
    def explain(run_id=None, params=None):
        """Top contributing features (tree SHAP) of every incident whose points changed."""
        from anomaly.scoring import explain_incidents

        return refusing(explain_incidents, params["source"], run_id)

    @task
    def publish(run_id=None, params=None):
        """Upsert incidents (and scores) into Postgres; catches up what failed runs missed."""
        if not params["publish"]:
            return {"skipped": "publish param is off"}
        from anomaly.publish import publish as run

        return run(run_id=run_id)

    @task
    def check_drift(
        scored: dict,
        data_interval_start=None,
        data_interval_end=None,
        run_id=None,
        params=None,
        dag_run=None,
        dag=None,
    ):
        """PSI per feature, score PSI and alert rate against the model's training data; a report."""
        from airflow.sdk.exceptions import AirflowSkipException

        from anomaly.drift import check_drift as run

        if not scored["rows"]:
            raise AirflowSkipException("nothing was scored in this interval: no drift to measure")
        from anomaly.settings import get_settings

        _, end = interval(data_interval_start, data_interval_end, dag_run, dag)
        start = end - timedelta(hours=get_settings().drift_window_hours)  # a whole daily cycle
        return refusing(
            run, params["source"], start, end, model_version=scored["model_version"], run_id=run_id
        ).as_dict()

    @task(outlets=[drift])
    def signal_drift(result: dict):
        """Emits the drift Asset (train_model runs on it) only when drift crossed its thresholds."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not result["drifted"]:
            raise AirflowSkipException("no drift beyond the thresholds")
        return result["reasons"]

    scored = score()
    wait_for_features() >> scored
    scored >> explain() >> publish()
    signal_drift(check_drift(scored))


score_metrics()
