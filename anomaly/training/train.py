"""Train, validate, register and (maybe) promote one ensemble: the steps of the training DAG.

1. Build the training set as of the lake's current snapshot (:mod:`anomaly.training.dataset`).
2. Split it in time: train < validation < test, with an embargo as long as the longest
   feature window between them (optionally holding out hosts for the test span).
3. Fit the ensemble: its members on the train span, its member combination on the validation
   span (``combiner_span="train"``: on the last 20 % of the train span instead, in time order).
4. Tune two thresholds on the validation span only: the point threshold, to reach the target
   recall at the best precision (``scores.is_anomaly``; with ``ANOMALY_MODEL_RECALL_CONFIDENCE``
   the recall's lower bound over resamples of the validation events must reach it), and the
   alert threshold, at the best event F1 (what raises an incident;
   :func:`~anomaly.training.metrics.tune_alert_threshold`).
5. Evaluate on the test span: point, event, per-type and calibration metrics (points at the
   point threshold, events at the alert threshold).
6. Register the model as a candidate; promote it if it meets the minimums and beats the
   champion scored on the same test span.

``exclude_types`` removes the events of those fault types from the train and validation spans
(their points are dropped, not relabelled as normal) and keeps them in the test span: the
leave-types-out evaluation of faults never seen in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from anomaly.store import Lake
    from anomaly.training.dataset import Split, TrainingSet
    from anomaly.training.ensemble import AnomalyEnsemble

log = logging.getLogger(__name__)

# The recall confidence bound resamples validation events: with a handful of them, the weakest
# one drawn again and again decides the bound and drags the point threshold down to it (on the
# test suite's 2-day, 3-host fleet, the point threshold then fell to where nothing separated
# flagged points from alerting ones: 449 flagged, 448 of them alerting). Below this many events
# the threshold reaches the validation recall itself, and metrics.point_threshold_basis says so.
MIN_CONFIDENCE_EVENTS = 20


@dataclass
class TrainResult:
    """What one training run produced (the model, its spans and metrics)."""

    model: AnomalyEnsemble
    training_set: TrainingSet
    split: Split
    threshold: float
    metrics: dict[str, Any]
    test_points: pd.DataFrame = field(repr=False)
    test_scores: np.ndarray = field(repr=False)
    validation_labels: np.ndarray = field(repr=False)
    validation_scores: np.ndarray = field(repr=False)
    version: int | None = None
    promoted: bool | None = None
    decision: str | None = None
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        point, event = self.metrics["point"], self.metrics["event"]
        return {
            "version": self.version,
            "promoted": self.promoted,
            "decision": self.decision,
            "report": None if self.report is None else str(self.report),
            "threshold": self.threshold,
            "alert_threshold": self.metrics["alert_threshold"],
            "precision": point["precision"],
            "recall": point["recall"],
            "f1": point["f1"],
            "pr_auc": point.get("pr_auc"),
            "event_precision": event["event_precision"],
            "event_recall": event["event_recall"],
            "event_f1": event["event_f1"],
            "mean_time_to_detect_s": event["mean_time_to_detect"],
            "class_shares": self.metrics.get("class_shares"),
        }


@dataclass(frozen=True)
class Spans:
    """Which rows of a training set train, tune and test a model (boolean masks)."""

    split: Split
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def spans(
    training_set: TrainingSet,
    *,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.25,
    embargo: timedelta | None = None,
    test_hosts: Sequence[str] | None = None,
    exclude_types: Sequence[str] = (),
) -> Spans:
    """The time split of step 2, with ``exclude_types`` dropped from train and validation; each
    span must hold positives (:class:`TrainingSetError` naming the span otherwise)."""
    from anomaly.training.dataset import TrainingSetError, time_split

    frame = training_set.frame
    split = time_split(
        frame["ts"],
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        embargo=embargo,
        hosts=frame["host"],
        test_hosts=test_hosts,
    )
    unseen = frame["fault_type"].isin(list(exclude_types)).to_numpy()
    result = Spans(split, split.train & ~unseen, split.validation & ~unseen, split.test)
    for name in ("train", "validation", "test"):
        mask = getattr(result, name)
        if int(frame.loc[mask, "label"].sum()) == 0:
            raise TrainingSetError(
                f"the {name} span has no positive rows: widen the range or inject more faults"
            )
    return result


def fit_and_evaluate(
    training_set: TrainingSet,
    *,
    params: dict[str, Any] | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.25,
    embargo: timedelta | None = None,
    test_hosts: Sequence[str] | None = None,
    exclude_types: Sequence[str] = (),
    target_recall: float | None = None,
    prefit: dict[str, Any] | None = None,
    combiner_span: str = "validation",
    settings: Settings | None = None,
) -> TrainResult:
    """Steps 2 to 5 on a built training set (no lake writes). ``prefit``: members already fitted
    with ``AnomalyEnsemble(**params).fit_member`` on :func:`spans`' train rows (the DAG's
    parallel tasks; ``fit_member(..., all_rows=True)``). ``combiner_span``: ``"validation"``
    (default) fits the member combination on the validation span, the span the thresholds are
    tuned on, and the members on the whole train span; ``"train"`` on the last
    ``params["validation_fraction"]`` of the train span (the members on the rest)."""
    from anomaly.training.ensemble import AnomalyEnsemble
    from anomaly.training.metrics import RECALL_RESAMPLES, evaluate, tune_alert_threshold, tune_threshold

    if combiner_span not in ("validation", "train"):
        raise ValueError(f"combiner_span must be 'validation' or 'train', got {combiner_span!r}")
    if prefit and combiner_span != "validation":
        raise ValueError(
            "prefit members come from fit_member(all_rows=True), fitted on the whole train span: "
            "they go with combiner_span='validation' only"
        )
    settings = settings or get_settings()
    frame = training_set.frame
    rows = spans(
        training_set,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        embargo=embargo,
        test_hosts=test_hosts,
        exclude_types=exclude_types,
    )
    train, validation, test = rows.train, rows.validation, rows.test
    features = training_set.features
    X_val = frame.loc[validation, features]
    val_labels = frame.loc[validation, "label"].to_numpy()
    val_event_ids = frame.loc[validation, "event_id"]
    model = AnomalyEnsemble(**(params or {}))
    model.fit(
        frame.loc[train, features],
        frame.loc[train, "label"].to_numpy(),
        time=frame.loc[train, "ts"],
        prefit=prefit,
        validation=(X_val, val_labels) if combiner_span == "validation" else None,
    )
    val_scores = model.decision_function(X_val)
    recall_target, confidence = (
        target_recall or settings.model_target_recall,
        settings.model_recall_confidence,
    )
    val_events = int(val_event_ids.nunique())
    point_basis = f"recall {recall_target:g} on the validation span"
    if confidence and val_events < MIN_CONFIDENCE_EVENTS:
        point_basis += (
            f" (no confidence bound: {val_events} validation events, fewer than the "
            f"{MIN_CONFIDENCE_EVENTS} a resampled bound needs)"
        )
        log.warning("point threshold: %s", point_basis)
        confidence = 0.0
    elif confidence:
        point_basis += (
            f", at confidence {confidence:g} over {RECALL_RESAMPLES} resamples of its {val_events} events"
        )
    threshold = tune_threshold(
        val_labels,
        val_scores,
        recall_target,
        events=val_event_ids.to_numpy(),
        confidence=confidence,
    )
    if val_events >= settings.alert_min_events:
        alert_threshold = tune_alert_threshold(
            frame.loc[validation, ["host", "ts", "event_id"]], val_scores, floor=threshold
        )
        alert_basis = f"best event F1 on {val_events} validation events"
    else:  # a best event F1 over a handful of events is one event's peak score, not a threshold
        alert_threshold = threshold
        alert_basis = (
            f"the point threshold: {val_events} validation events, fewer than ANOMALY_ALERT_MIN_EVENTS "
            f"({settings.alert_min_events}) to tune one"
        )
        log.warning("alert threshold = %s", alert_basis)
    test_points = frame.loc[test].reset_index(drop=True)
    test_scores = model.decision_function(test_points[features])
    metrics = evaluate(test_points, test_scores, threshold, alert_threshold)
    metrics["point_threshold_basis"] = point_basis
    metrics["alert_threshold_basis"] = alert_basis
    n_train = int(train.sum())
    pos_train = int(frame.loc[train, "label"].sum())
    metrics["class_shares"] = {
        "train_rows": n_train,
        "train_positive_share": pos_train / n_train,
        "train_negative_share": 1 - pos_train / n_train,
        "test_rows": int(test.sum()),
        "test_positive_share": float(frame.loc[test, "label"].mean()),
    }
    if exclude_types:
        metrics["unseen_types"] = list(exclude_types)
    return TrainResult(
        model,
        training_set,
        rows.split,
        float(threshold),
        metrics,
        test_points,
        test_scores,
        val_labels,
        val_scores,
    )


def train_model(
    source: str,
    start: datetime,
    end: datetime,
    *,
    run_id: str | None = None,
    labels_dataset: str | None = None,
    tolerance: timedelta = timedelta(0),
    params: dict[str, Any] | None = None,
    exclude_types: Sequence[str] = (),
    test_hosts: Sequence[str] | None = None,
    promote: bool = True,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> TrainResult:
    """All six steps: build, split, fit, tune, evaluate, register (and promote when better).

    Example::

        >>> result = train_model("simulation:bench", t0, t1)   # doctest: +SKIP
        >>> result.summary()["event_f1"], result.version        # doctest: +SKIP
    """
    from anomaly.store import Lake
    from anomaly.training import model_registry
    from anomaly.training.dataset import build_training_set
    from anomaly.training.pipeline import write_report

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    training_set = build_training_set(
        source, start, end, lake=lake, labels_dataset=labels_dataset, tolerance=tolerance
    )
    log.info("training set: %s", training_set.describe())
    result = fit_and_evaluate(
        training_set, params=params, exclude_types=exclude_types, test_hosts=test_hosts, settings=settings
    )
    record = model_registry.register(
        result.model,
        training={
            **training_set.record(),
            "split": result.split.boundaries,
            "exclude_types": list(exclude_types),
        },
        threshold=result.threshold,
        metrics=result.metrics,
        run_id=run_id,
        lake=lake,
        settings=settings,
    )
    result.version = record.version
    if promote:
        result.promoted, result.decision = model_registry.promote_if_better(
            record.version, result.test_points, lake=lake, settings=settings
        )
    result.report = write_report(
        record.version,
        result.model,
        result.test_points,
        result.test_scores,
        {"threshold": result.threshold, "metrics": result.metrics, "split": result.split.boundaries},
        lake=lake,
        settings=settings,
    )
    return result
