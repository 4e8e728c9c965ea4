"""The model registry: the ``models`` table, artifacts on disk, and champion/challenger promotion.

Each trained ensemble is registered as a new version with everything needed to judge and
rebuild it: parameters, feature list, the training set's record (source, range, labels,
snapshot, split), the point threshold tuned on validation data (the alert threshold is stored
with the metrics), its metrics on the test span, and its artifacts (each library's native
format) with their SHA-256. Artifacts are checked against the registry's hashes before anything
is read from them.

Promotion (:func:`promote_if_better`): a challenger becomes champion only when it meets the
configured minimums (event F1, point precision, point recall) AND is at least as good as the
current champion on the primary metric, the champion being scored on the challenger's own test
span (same rows, its own point and alert thresholds). Otherwise it stays a candidate with the
reason recorded.
:func:`promote` (by hand) and :func:`rollback` record their reason too.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from anomaly.store import Lake
    from anomaly.training.ensemble import AnomalyEnsemble

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION, RETIRED = "candidate", "champion", "retired"
UNDECIDED = "registered; not evaluated for promotion yet"


class RegistryError(ValueError):
    """A registry operation was refused (unknown version, no champion, nothing to roll back)."""


@dataclass
class ModelRecord:
    """One row of ``models``, JSON columns decoded."""

    version: int
    created_at: datetime
    status: str
    run_id: str | None
    params: dict[str, Any]
    features: list[str]
    training: dict[str, Any]
    snapshot: int
    data_start: datetime
    data_end: datetime
    threshold: float
    metrics: dict[str, Any]
    primary_metric: str
    primary_value: float | None
    artifacts: Path
    sha256: dict[str, str]
    reason: str | None
    promoted_at: datetime | None
    retired_at: datetime | None

    @property
    def alert_threshold(self) -> float:
        """The score that raises an incident (tuned on validation for event F1, stored with the
        test metrics); the point threshold for models registered before it existed."""
        value = self.metrics.get("alert_threshold")
        return self.threshold if value is None else float(value)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelRecord:
        def ts(value: Any) -> datetime | None:
            return None if value is None or value != value else value  # NaT -> None

        return cls(
            version=int(row["version"]),
            created_at=row["created_at"],
            status=row["status"],
            run_id=row["run_id"],
            params=json.loads(row["params"]),
            features=list(row["features"]),
            training=json.loads(row["training"]),
            snapshot=int(row["snapshot"]),
            data_start=row["data_start"],
            data_end=row["data_end"],
            threshold=float(row["threshold"]),
            metrics=json.loads(row["metrics"]),
            primary_metric=row["primary_metric"],
            primary_value=None if row["primary_value"] != row["primary_value"] else row["primary_value"],
            artifacts=Path(row["artifacts"]),
            sha256=json.loads(row["sha256"]),
            reason=row["reason"],
            promoted_at=ts(row["promoted_at"]),
            retired_at=ts(row["retired_at"]),
        )


def metric(metrics: dict[str, Any], name: str) -> float | None:
    """``name`` from an evaluation dict, flat or one level nested (``{"event": {"event_f1": ...}}``)."""
    if name in metrics and not isinstance(metrics[name], dict):
        return None if metrics[name] is None else float(metrics[name])
    for value in metrics.values():
        if isinstance(value, dict) and name in value and not isinstance(value[name], dict):
            return None if value[name] is None else float(value[name])
    return None


def register(
    model: AnomalyEnsemble,
    *,
    training: dict[str, Any],
    threshold: float,
    metrics: dict[str, Any],
    run_id: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> ModelRecord:
    """Save ``model``'s artifacts and add it to ``models`` as a new candidate version.

    ``training`` is the training set's record (``TrainingSet.record()`` plus the split); it must
    hold ``snapshot``, ``start``, ``end`` and ``features``.
    """
    from anomaly.store import Lake

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    for key in ("snapshot", "start", "end", "features"):
        if key not in training:
            raise RegistryError(f"the training record lacks {key!r}: nothing registered")
    directory = settings.models_dir / f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    hashes = model.save(directory)
    primary = settings.model_primary_metric
    params = {k: _jsonable(v) for k, v in model.get_params().items()}
    state: dict[str, int] = {}

    def work(con: duckdb.DuckDBPyConnection) -> None:
        if run_id is not None:
            row = con.execute(f"SELECT version FROM {registry.MODELS} WHERE run_id = ?", [run_id]).fetchone()
            if row is not None:  # this run registered already (a retried task): nothing new
                state["version"], state["existing"] = int(row[0]), 1
                return
        state["version"] = int(
            con.execute(f"SELECT coalesce(max(version), 0) + 1 FROM {registry.MODELS}").fetchone()[0]
        )
        con.execute(
            f"""
            INSERT INTO {registry.MODELS} (version, created_at, status, run_id, params, features, training,
                snapshot, data_start, data_end, threshold, metrics, primary_metric, primary_value, artifacts,
                sha256, reason)
            VALUES (?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                state["version"],
                CANDIDATE,
                run_id,
                json.dumps(params, sort_keys=True),
                list(training["features"]),
                json.dumps(training, sort_keys=True, default=str),
                int(training["snapshot"]),
                training["start"],
                training["end"],
                float(threshold),
                json.dumps(metrics, sort_keys=True),
                primary,
                metric(metrics, primary),
                str(directory),
                json.dumps(hashes, sort_keys=True),
                UNDECIDED,
            ],
        )

    lake.write(work, what="register model")
    if state.get("existing"):
        shutil.rmtree(directory, ignore_errors=True)
        log.info("run %s already registered model version %d: kept it", run_id, state["version"])
        return get(state["version"], lake=lake)
    log.info("registered model version %d (%s)", state["version"], directory)
    return get(state["version"], lake=lake)


def get(version: int, *, lake: Lake | None = None) -> ModelRecord:
    from anomaly.store import Lake

    lake = lake or Lake()
    rows = lake.query(f"SELECT * FROM {registry.MODELS} WHERE version = ?", [int(version)])
    if rows.empty:
        known = lake.query(f"SELECT version FROM {registry.MODELS} ORDER BY version")["version"].tolist()
        raise RegistryError(f"no model version {version}; versions: {known or 'none yet'}")
    return ModelRecord.from_row(rows.iloc[0].to_dict())


def by_run(run_id: str, *, lake: Lake | None = None) -> ModelRecord | None:
    """The version a run registered, if any (the training DAG registers once per run)."""
    from anomaly.store import Lake

    lake = lake or Lake()
    rows = lake.query(f"SELECT * FROM {registry.MODELS} WHERE run_id = ? ORDER BY version LIMIT 1", [run_id])
    return None if rows.empty else ModelRecord.from_row(rows.iloc[0].to_dict())


def champion(*, lake: Lake | None = None) -> ModelRecord | None:
    from anomaly.store import Lake

    lake = lake or Lake()
    rows = lake.query(
        f"SELECT * FROM {registry.MODELS} WHERE status = ? ORDER BY version DESC LIMIT 1", [CHAMPION]
    )
    return None if rows.empty else ModelRecord.from_row(rows.iloc[0].to_dict())


def list_models(*, lake: Lake | None = None) -> pd.DataFrame:
    """Versions newest first: status, when, primary metric, point and alert thresholds, reason."""
    from anomaly.store import Lake

    lake = lake or Lake()
    return lake.query(
        f"""
        SELECT version, status, created_at, primary_metric, primary_value, threshold,
               coalesce(TRY_CAST(json_extract_string(metrics, '$.alert_threshold') AS DOUBLE), threshold)
                   AS alert_threshold,
               len(features) AS features,
               data_start, data_end, snapshot, reason
        FROM {registry.MODELS} ORDER BY version DESC
        """
    )


def load(record: ModelRecord) -> AnomalyEnsemble:
    """The record's ensemble, every artifact checked against the registry's SHA-256 first."""
    from anomaly.training.ensemble import AnomalyEnsemble

    return AnomalyEnsemble.load(record.artifacts, expected_sha256=record.sha256)


def decide(
    candidate: dict[str, Any], incumbent: dict[str, Any] | None, settings: Settings | None = None
) -> tuple[bool, str]:
    """Whether a challenger with ``candidate`` metrics may replace a champion with ``incumbent``
    metrics (both on the same test span), and why."""
    settings = settings or get_settings()
    minimums = {
        "event_f1": settings.model_min_event_f1,
        "precision": settings.model_min_precision,
        "recall": settings.model_min_recall,
    }
    short = []
    for name, floor in minimums.items():
        value = metric(candidate, name)
        if value is None or value < floor:
            short.append(f"{name} {value if value is None else round(value, 4)} < {floor}")
    if short:
        return False, "below the minimums: " + ", ".join(short)
    primary = settings.model_primary_metric
    mine = metric(candidate, primary)
    if incumbent is None:
        return True, f"meets the minimums; no champion yet ({primary} {mine:.4f})"
    theirs = metric(incumbent, primary)
    if theirs is not None and (mine is None or mine < theirs):
        return False, f"{primary} {mine:.4f} < champion's {theirs:.4f} on the same test span"
    return True, f"meets the minimums and {primary} {mine:.4f} >= champion's {theirs} on the same test span"


def promote_if_better(
    version: int,
    test_points: pd.DataFrame,
    *,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> tuple[bool, str]:
    """Champion/challenger: score the champion on the challenger's test rows, compare, record.

    ``test_points`` holds the test span's rows: host, ts, event_id, fault_type and the features.
    """
    from anomaly.store import Lake
    from anomaly.training.metrics import evaluate

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    challenger = get(version, lake=lake)
    incumbent = champion(lake=lake)
    incumbent_metrics = None
    if incumbent is not None and incumbent.version != version:
        missing = sorted(set(incumbent.features) - set(test_points.columns))
        if missing:
            incumbent_metrics = None
            log.warning(
                "champion v%d needs features the test span lacks (%s)", incumbent.version, missing[:5]
            )
        else:
            model = load(incumbent)
            scores = model.decision_function(test_points[incumbent.features])
            incumbent_metrics = evaluate(test_points, scores, incumbent.threshold, incumbent.alert_threshold)
    ok, why = decide(challenger.metrics, incumbent_metrics, settings)
    if ok:
        _set_champion(lake, challenger.version, why)
    else:
        _set_reason(lake, challenger.version, why)
    log.info("model v%d %s: %s", version, "promoted" if ok else "stays a candidate", why)
    return ok, why


def promote(version: int, *, reason: str = "promoted by hand", lake: Lake | None = None) -> ModelRecord:
    """Make ``version`` the champion whatever its metrics (an operator's decision, recorded)."""
    from anomaly.store import Lake

    lake = lake or Lake()
    record = get(version, lake=lake)
    if record.status == CHAMPION:
        raise RegistryError(f"model version {version} is already the champion")
    _set_champion(lake, version, reason)
    return get(version, lake=lake)


def rollback(*, lake: Lake | None = None) -> ModelRecord:
    """Retire the champion and bring back the most recently retired model."""
    from anomaly.store import Lake

    lake = lake or Lake()
    current = champion(lake=lake)
    if current is None:
        raise RegistryError("there is no champion to roll back from (anomaly models promote VERSION)")
    previous = lake.query(
        f"SELECT version FROM {registry.MODELS} WHERE status = ? AND version <> ? "
        "ORDER BY retired_at DESC NULLS LAST, version DESC LIMIT 1",
        [RETIRED, current.version],
    )
    if previous.empty:
        raise RegistryError(f"no retired model to roll back to from champion v{current.version}")
    target = int(previous["version"][0])
    _set_champion(lake, target, f"rollback from v{current.version}")
    return get(target, lake=lake)


def _set_champion(lake: Lake, version: int, reason: str) -> None:
    def work(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            f"UPDATE {registry.MODELS} SET status = ?, retired_at = now(), reason = ? WHERE status = ?",
            [RETIRED, f"replaced by v{version}", CHAMPION],
        )
        con.execute(
            f"UPDATE {registry.MODELS} SET status = ?, promoted_at = now(), retired_at = NULL, reason = ? "
            "WHERE version = ?",
            [CHAMPION, reason, version],
        )

    lake.write(work, what=f"promote model v{version}")


def _set_reason(lake: Lake, version: int, reason: str) -> None:
    lake.write(
        lambda con: con.execute(
            f"UPDATE {registry.MODELS} SET reason = ? WHERE version = ?", [reason, version]
        ),
        what=f"record model v{version}",
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
