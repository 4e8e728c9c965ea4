"""The steps of the ``train_model`` DAG, each a separate process sharing one run directory.

``ANOMALY_HOME/runs/train_model/<run id>/`` holds what the tasks hand each other:

* ``training_set.parquet`` and ``training_set.json`` (the record: source, range, labels,
  tolerance, snapshot, features) from :func:`build`;
* ``spans.json`` from :func:`validate` (boundaries, class shares);
* ``members/<native file>`` from :func:`fit_member`, one task per member (Airflow runs them in
  parallel), each returning the file's SHA-256;
* ``model/`` (the assembled ensemble), ``test.parquet`` (test rows with their scores) and
  ``evaluation.json`` from :func:`evaluate`, which loads the members only after their SHA-256
  matched, fits the combiner, tunes the point and alert thresholds on validation and evaluates
  on test;
* then :func:`register` (a candidate in ``models`` and its HTML report) and :func:`promote`.

**Idempotent per run.** A retried or cleared task finds what its run already produced: the
training set is built once per run (a retry reads the same lake snapshot, not a newer one),
``register`` returns the version already registered by this run id, and ``promote`` returns the
decision already recorded. Members and the evaluation are recomputed (deterministic for the
run's seed) and overwrite their files.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    from anomaly.store import Lake
    from anomaly.training.dataset import TrainingSet

log = logging.getLogger(__name__)

SET_FILE = "training_set.parquet"
RECORD_FILE = "training_set.json"
SPANS_FILE = "spans.json"
EVALUATION_FILE = "evaluation.json"
TEST_FILE = "test.parquet"


def run_dir(run_id: str, settings: Settings | None = None) -> Path:
    """The run's working directory (the run id made filesystem-safe)."""
    settings = settings or get_settings()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._") or "run"
    return settings.home / "runs" / "train_model" / safe


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, default=str))
    tmp.replace(path)


def training_range(start: str, end: str, days: float, run_after: datetime) -> tuple[datetime, datetime]:
    """The DAG params as a UTC range: ``[start, end)`` when given (ISO), else the ``days`` before
    ``end`` (default: the run's time, floored to the hour)."""
    from anomaly.sources.base import to_utc
    from anomaly.training.dataset import TrainingSetError

    def parse(text: str, name: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise TrainingSetError(f"{name} {text!r} is not an ISO timestamp") from exc
        if value.tzinfo is None:
            raise TrainingSetError(f"{name} {text!r} has no time zone (add +00:00)")
        return to_utc(value)

    finish = parse(end, "end") if end else to_utc(run_after).replace(minute=0, second=0, microsecond=0)
    begin = parse(start, "start") if start else finish - timedelta(days=float(days))
    if finish <= begin:
        raise TrainingSetError(f"empty training range [{begin.isoformat()}, {finish.isoformat()})")
    return begin, finish


def build(
    run_id: str,
    source: str,
    start: datetime,
    end: datetime,
    *,
    labels_dataset: str | None = None,
    tolerance: timedelta = timedelta(0),
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Build the training set at the lake's current snapshot, once per run; returns its description."""
    from anomaly.training.dataset import build_training_set

    directory = run_dir(run_id, settings)
    record_path = directory / RECORD_FILE
    if record_path.exists() and (directory / SET_FILE).exists():
        record = json.loads(record_path.read_text())
        log.info("training set of this run already built at snapshot %s: reused", record["snapshot"])
        return record
    directory.mkdir(parents=True, exist_ok=True)
    ts = build_training_set(source, start, end, lake=lake, labels_dataset=labels_dataset, tolerance=tolerance)
    tmp = directory / (SET_FILE + ".tmp")
    ts.frame.to_parquet(tmp, index=False)
    tmp.replace(directory / SET_FILE)
    record = {**ts.record(), "describe": ts.describe()}
    _write_json(record_path, record)  # last: its presence says the set is complete
    log.info("training set: %s", ts.describe())
    return record


def load_training_set(run_id: str, settings: Settings | None = None) -> TrainingSet:
    """The training set :func:`build` stored for this run."""
    import pandas as pd

    from anomaly.training.dataset import TrainingSet, TrainingSetError

    directory = run_dir(run_id, settings)
    try:
        record = json.loads((directory / RECORD_FILE).read_text())
        frame = pd.read_parquet(directory / SET_FILE)
    except FileNotFoundError as exc:
        raise TrainingSetError(
            f"run {run_id!r} has no training set in {directory}: run its build task"
        ) from exc
    return TrainingSet(
        frame,
        list(record["features"]),
        record["source"],
        record["labels_dataset"],
        datetime.fromisoformat(record["start"]),
        datetime.fromisoformat(record["end"]),
        timedelta(seconds=float(record["tolerance_seconds"])),
        int(record["snapshot"]),
    )


def validate(
    run_id: str,
    *,
    exclude_types: list[str] | tuple[str, ...] = (),
    test_hosts: list[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Check the set can train and test a model: train, validation and test spans (in time, with
    the embargo) each hold positives and enough negatives, and the train span has rows and at
    least one feature with values. Raises TrainingSetError naming the problem (nothing is
    registered); returns the boundaries and the class shares of each span."""
    from anomaly.training.dataset import TrainingSetError
    from anomaly.training.ensemble import MIN_NEGATIVES, MIN_ROWS
    from anomaly.training.train import spans

    ts = load_training_set(run_id, settings)
    rows = spans(ts, exclude_types=exclude_types, test_hosts=test_hosts)
    frame, shares = ts.frame, {}
    for name in ("train", "validation", "test"):
        mask = getattr(rows, name)
        n, pos = int(mask.sum()), int(frame.loc[mask, "label"].sum())
        if n - pos < MIN_NEGATIVES:
            raise TrainingSetError(
                f"the {name} span has {n - pos} normal rows, need at least {MIN_NEGATIVES}"
            )
        shares[name] = {"rows": n, "positives": pos, "positive_share": pos / n, "negative_share": 1 - pos / n}
    if shares["train"]["rows"] < MIN_ROWS:
        raise TrainingSetError(f"the train span has {shares['train']['rows']} rows, need at least {MIN_ROWS}")
    empty = frame.loc[rows.train, ts.features].isna().all()
    if empty.all():
        raise TrainingSetError("every feature is empty (all NULL) in the train span")
    result = {
        "boundaries": rows.split.boundaries,
        "shares": shares,
        "empty_features": sorted(empty[empty].index),
        "exclude_types": list(exclude_types),
        "test_hosts": list(test_hosts or []),
    }
    _write_json(run_dir(run_id, settings) / SPANS_FILE, result)
    log.info("spans: %s", shares)
    return result


def fit_member(
    run_id: str,
    member: str,
    params: dict[str, Any],
    *,
    exclude_types: list[str] | tuple[str, ...] = (),
    test_hosts: list[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Fit one member on the train span exactly as the whole ensemble would; save it in its
    native format; return its name, SHA-256 and fit time."""
    from anomaly.training.ensemble import AnomalyEnsemble, save_member
    from anomaly.training.train import spans

    ts = load_training_set(run_id, settings)
    train = spans(ts, exclude_types=exclude_types, test_hosts=test_hosts).train
    frame = ts.frame
    t0 = time.perf_counter()
    model = AnomalyEnsemble(**params)
    fitted = model.fit_member(
        member,
        frame.loc[train, ts.features],
        frame.loc[train, "label"].to_numpy(),
        time=frame.loc[train, "ts"],
        all_rows=True,  # fit_and_evaluate hands the combiner the validation span
    )
    sha = save_member(member, fitted, run_dir(run_id, settings) / "members")
    seconds = time.perf_counter() - t0
    log.info("fitted %s in %.1f s (sha256 %s)", member, seconds, sha)
    return {"member": member, "sha256": sha, "seconds": round(seconds, 3)}


def evaluate(
    run_id: str,
    params: dict[str, Any],
    fitted: list[dict[str, Any]],
    *,
    exclude_types: list[str] | tuple[str, ...] = (),
    test_hosts: list[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Assemble the members (each verified against the SHA-256 its task returned), fit the
    combiner, tune the threshold on validation, evaluate on test; store model and results."""
    from anomaly.training.ensemble import load_member
    from anomaly.training.train import fit_and_evaluate

    settings = settings or get_settings()
    directory = run_dir(run_id, settings)
    ts = load_training_set(run_id, settings)
    prefit = {
        f["member"]: load_member(f["member"], directory / "members", f["sha256"], params.get("n_jobs", 2))
        for f in fitted
    }
    missing = sorted(set(params.get("members", ())) - set(prefit))
    if missing:
        raise ValueError(f"members {missing} were not fitted by this run")
    result = fit_and_evaluate(
        ts,
        params=params,
        exclude_types=exclude_types,
        test_hosts=test_hosts,
        prefit=prefit,
        settings=settings,
    )
    result.model.save(directory / "model")
    test = result.test_points[["host", "ts", "event_id", "fault_type", *ts.features]].assign(
        score=result.test_scores
    )
    tmp = directory / (TEST_FILE + ".tmp")
    test.to_parquet(tmp, index=False)
    tmp.replace(directory / TEST_FILE)
    evaluation = {
        "threshold": result.threshold,
        "metrics": result.metrics,
        "split": result.split.boundaries,
        "exclude_types": list(exclude_types),
    }
    _write_json(directory / EVALUATION_FILE, evaluation)
    summary = result.summary()
    log.info("evaluation on the test span: %s", summary)
    return summary


def register(run_id: str, *, lake: Lake | None = None, settings: Settings | None = None) -> int:
    """Register the run's evaluated model as a candidate (once per run id) and write its report."""
    import pandas as pd

    from anomaly.training import model_registry
    from anomaly.training.ensemble import AnomalyEnsemble

    settings = settings or get_settings()
    directory = run_dir(run_id, settings)
    existing = model_registry.by_run(run_id, lake=lake)
    if existing is not None:
        log.info("run %s already registered model version %d", run_id, existing.version)
        return existing.version
    record = json.loads((directory / RECORD_FILE).read_text())
    evaluation = json.loads((directory / EVALUATION_FILE).read_text())
    model = AnomalyEnsemble.load(directory / "model")  # checked against its own manifest
    training = {key: value for key, value in record.items() if key != "describe"} | {
        "split": evaluation["split"],
        "exclude_types": evaluation["exclude_types"],
    }
    version = model_registry.register(
        model,
        training=training,
        threshold=evaluation["threshold"],
        metrics=evaluation["metrics"],
        run_id=run_id,
        lake=lake,
        settings=settings,
    ).version
    test = pd.read_parquet(directory / TEST_FILE)
    write_report(version, model, test, test["score"].to_numpy(), evaluation, lake=lake, settings=settings)
    return version


def promote(
    run_id: str, version: int, *, lake: Lake | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Champion/challenger on the run's test span; a decision already recorded is returned as is."""
    import pandas as pd

    from anomaly.training import model_registry

    record = model_registry.get(version, lake=lake)
    if record.reason and record.reason != model_registry.UNDECIDED:
        return {"version": version, "status": record.status, "reason": record.reason, "repeated": True}
    test = pd.read_parquet(run_dir(run_id, settings) / TEST_FILE)
    ok, why = model_registry.promote_if_better(version, test, lake=lake, settings=settings)
    record = model_registry.get(version, lake=lake)
    return {"version": version, "status": record.status, "reason": why, "promoted": ok}


def write_report(
    version: int,
    model: Any,
    test_points: Any,
    scores: Any,
    evaluation: dict[str, Any],
    *,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> Path:
    """The model's HTML report: ``ANOMALY_HOME/reports/models/v<version>.html``."""
    from anomaly.training import model_registry
    from anomaly.training.report import feature_importance, write_model_report

    settings = settings or get_settings()
    record = model_registry.get(version, lake=lake)
    details = {
        "version": record.version,
        "status": record.status,
        "decision": record.reason,
        "run id": record.run_id,
        "training snapshot": record.snapshot,
        "data range": f"{record.data_start} to {record.data_end}",
        "split": evaluation.get("split"),
        "members": list(model.members_),
        "combiner": getattr(model, "stacking_coef_", None) or getattr(model, "member_weights_", None),
        "parameters": record.params,
        "features": len(record.features),
        "artifacts": record.artifacts,
    }
    path = settings.model_reports_dir / f"v{version}.html"
    write_model_report(
        path,
        title=f"Model version {version}",
        test_points=test_points,
        scores=scores,
        threshold=evaluation["threshold"],
        metrics=evaluation["metrics"],
        importance=feature_importance(model),
        details=details,
    )
    log.info("model report: %s", path)
    return path
