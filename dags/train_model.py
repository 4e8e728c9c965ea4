"""
### train_model

Trains the anomaly ensemble on labelled history, evaluates it on a later time span and
registers it; it becomes the champion only when it beats the current one.

Tasks: `build_training_set` >> `validate_training_set` >> `fit_member` (one mapped task per
member, run in parallel) >> `evaluate` >> `register` >> `promote`.

* **Reads**: `features` and `labels` of the `source` param (default `ANOMALY_TRAIN_SOURCE`) over
  the `days` before the run (or `[start, end)` when given), as of the lake snapshot the first
  task records; the current champion (to compare on the same test span).
* **Writes**: `models` (one candidate per run, then champion or the reason it is not), the
  artifacts under `ANOMALY_HOME/models/`, the HTML report
  `ANOMALY_HOME/reports/models/v<version>.html`, and the run's working files under
  `ANOMALY_HOME/runs/train_model/<run id>/`.
* **Splits**: train < validation < test in time with an embargo as long as the longest feature
  window between them; the members learn on the train span, the combiner on validation, the
  point threshold is tuned on validation (to `ANOMALY_MODEL_TARGET_RECALL`, with
  `ANOMALY_MODEL_RECALL_CONFIDENCE`) and so is the alert threshold (best
  event F1: what raises incidents), metrics are computed on test. `test_hosts`
  holds hosts out of training; `exclude_types` keeps fault types out of training and
  validation (faults never seen).
* **Refusals** (task fails, no retries, nothing registered): a range with no positives, one
  class only, too few rows, features missing from `feature_catalog`, an empty span.
* **Idempotent per run**: a cleared or retried task reuses the run's training set (same
  snapshot), the version the run registered and the decision it recorded.
* **Schedule**: weekly (`ANOMALY_TRAIN_SCHEDULE`, cron in UTC), on the drift Asset
  `x-anomaly://lake/drift` that scoring emits when features drift, and by hand from the UI
  with the params below. Emits `x-anomaly://lake/models` when a model is registered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from anomaly.registry import ASSET_DRIFT, ASSET_MODELS
from anomaly.settings import get_settings
from anomaly.training.members import DEFAULT_MEMBERS, MEMBERS

settings = get_settings()
models = Asset(ASSET_MODELS)


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(settings.train_schedule, timezone="UTC"), assets=[Asset(ASSET_DRIFT)]
    ),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
    },
    params={
        "source": Param(
            settings.train_source, type="string", description="Source whose features train the model."
        ),
        "labels_dataset": Param("", type="string", description="Label dataset (empty: the source)."),
        "days": Param(
            settings.train_days, type="number", exclusiveMinimum=0, description="Days before the run."
        ),
        "start": Param("", type="string", description="First timestamp (ISO, UTC); overrides days."),
        "end": Param("", type="string", description="End of the range (ISO, UTC); empty: the run's time."),
        "tolerance_seconds": Param(
            0, type="number", minimum=0, description="Widen each label window by this."
        ),
        "members": Param(
            list(DEFAULT_MEMBERS), type="array", items={"type": "string", "enum": list(MEMBERS)}
        ),
        "n_estimators": Param(300, type="integer", minimum=1),
        "seed": Param(7, type="integer"),
        "exclude_types": Param(
            "", type="string", description="Comma-separated fault types kept out of training."
        ),
        "test_hosts": Param(
            "", type="string", description="Comma-separated hosts held out for the test span."
        ),
        "promote": Param(True, type="boolean", description="Promote when it beats the champion."),
    },
    tags=["anomaly", "training"],
    doc_md=__doc__,
)
def train_model() -> None:
    def options(params) -> dict:
        return {
            "exclude_types": [t.strip() for t in params["exclude_types"].split(",") if t.strip()],
            "test_hosts": [h.strip() for h in params["test_hosts"].split(",") if h.strip()] or None,
        }

    def model_params(params) -> dict:
        return {
            "members": tuple(params["members"]),
            "n_estimators": params["n_estimators"],
            "random_state": params["seed"],
            "n_jobs": 2,
        }

    def refusing(fn, *args, **kwargs):
        """A training set that cannot train a model fails now, without retries (they would repeat it)."""
        from airflow.sdk.exceptions import AirflowFailException

        from anomaly.training.dataset import TrainingSetError

        try:
            return fn(*args, **kwargs)
        except TrainingSetError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def build_training_set(run_id=None, params=None, dag_run=None) -> dict:
        """Features joined with labels at the lake's current snapshot (recorded; reused on retry)."""
        from anomaly.training.pipeline import build, training_range

        start, end = training_range(params["start"], params["end"], params["days"], dag_run.run_after)
        record = refusing(
            build,
            run_id,
            params["source"],
            start,
            end,
            labels_dataset=params["labels_dataset"] or None,
            tolerance=timedelta(seconds=params["tolerance_seconds"]),
        )
        return record["describe"]

    @task
    def validate_training_set(run_id=None, params=None) -> dict:
        """Each time span has positives and negatives; rows and features are usable."""
        from anomaly.training.pipeline import validate

        return refusing(validate, run_id, **options(params))

    @task
    def fit_member(member: str, run_id=None, params=None) -> dict:
        """One member on the train span, saved in its native format; returns its SHA-256."""
        from anomaly.training.pipeline import fit_member as fit

        return refusing(fit, run_id, member, model_params(params), **options(params))

    @task
    def evaluate(fitted: list[dict], run_id=None, params=None) -> dict:
        """Verify and assemble the members, fit the combiner, tune the threshold, test."""
        from anomaly.training.pipeline import evaluate as run

        # indexing with len() asks Airflow for the count once; iterating probes past the end
        return refusing(
            run, run_id, model_params(params), [fitted[i] for i in range(len(fitted))], **options(params)
        )

    @task(outlets=[models])
    def register(run_id=None) -> int:
        """A candidate in `models` (once per run) and its HTML report."""
        from anomaly.training.pipeline import register as run

        return run(run_id)

    @task
    def promote(version: int, run_id=None, params=None) -> dict:
        """Champion if it meets the minimums and beats the champion on the same test span."""
        from anomaly.training.pipeline import promote as run

        if not params["promote"]:
            return {"version": version, "promoted": False, "reason": "promote param is off"}
        return run(run_id, version)

    @task
    def member_names(params=None) -> list[str]:
        return list(params["members"])

    checked = build_training_set() >> validate_training_set()
    names = member_names()
    checked >> names
    fitted = fit_member.expand(member=names)
    summary = evaluate(fitted)
    version = register()
    summary >> version
    promote(version)


train_model()
