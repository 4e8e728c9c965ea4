"""Drift: is the latest scored window still like the data its model was trained on?

One check compares a window ``[start, end)`` of one source with the model's *reference*: a
deterministic sample (at most :data:`REFERENCE_ROWS` rows) of the model's training data, read at
the lake snapshot the model records, and the model's own scores on a sample of its test span (rows
it never trained on; the whole training range if the record has no split). It measures

* per feature, the population stability index (:func:`psi`) of the window against the reference;
  a feature has drifted when its PSI exceeds ``ANOMALY_DRIFT_PSI_THRESHOLD`` (0.25);
* the PSI of the window's scores against the reference scores
  (``ANOMALY_DRIFT_SCORE_PSI_THRESHOLD``, 0.25);
* the window's alert rate (share of scored points flagged ``is_anomaly``, at the point threshold:
  more of them than ``is_alert`` points, so a steadier rate) against the rate the model flagged
  on its own test span: drift above ``ANOMALY_DRIFT_ALERT_RATE_FACTOR`` (3) times that rate.

The window has drifted, which should retrain the model, when at least
``ANOMALY_DRIFT_MIN_FEATURES`` (3) features drifted, OR the score PSI crossed its threshold, OR the
alert rate crossed its limit. Each check replaces its rows of ``drift`` (one per feature, one
``score``, one ``alert_rate``; keyed by source, window and model version) in one transaction and
writes a self-contained HTML report under ``ANOMALY_HOME/reports/drift/``.

PSI conventions (also in :func:`psi`): bins are the reference's deciles (edges deduplicated, the
outer bins open-ended, bins closed on the right), plus a separate *missing* bin for NULL, NaN and
infinite values, so a feature that goes NULL drifts. Shares are floored at :data:`EPS` so an empty
bin adds a large but finite term instead of infinity. PSI < 0.1 is usually read as stable, 0.1 to
0.25 as a moderate shift and > 0.25 as a significant one.

The reference profile (bin edges and shares per feature, the score bins and histogram, the
expected alert rate) is computed once per model and cached beside its artifacts
(``<artifacts>/drift_reference.json``); a check then reads only the window: for 6,000 rows of 400
features about 0.5 s to read, measure and write the rows, and about 1 s of matplotlib for the
report. The ``reference`` column of ``drift`` holds the expected alert rate on the ``alert_rate``
row and is NULL on PSI rows (a PSI compares two whole distributions).

Example::

    >>> result = check_drift("simulation", t0, t0 + timedelta(hours=1), run_id=run_id)  # doctest: +SKIP
    >>> result.drifted, result.drifted_features[:3], result.report                      # doctest: +SKIP
    (True, ['cpu_util__mean_5m', 'load1__mean_5m', 'cpu_util__max_1h'], PosixPath('.../v3__...html'))
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anomaly import registry
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from matplotlib.figure import Figure

    from anomaly.store import Lake
    from anomaly.training.model_registry import ModelRecord

log = logging.getLogger(__name__)

__all__ = [
    "DriftError",
    "DriftResult",
    "ReferenceProfile",
    "bin_shares",
    "check_drift",
    "profile_path",
    "psi",
    "psi_from_shares",
    "quantile_edges",
    "reference_profile",
]

BINS = 10
# Floor of a bin's share. PSI has ln(actual / expected): an empty bin would make it infinite.
# With 1e-4 a bin empty in the reference and holding 10 % of the window adds 0.1 * ln(1000) = 0.69;
# bins empty on both sides add nothing.
EPS = 1e-4
REFERENCE_ROWS = 50_000  # the reference sample: enough for stable deciles, bounded cost
PROFILE_FILE = "drift_reference.json"
PROFILE_FORMAT = 1
SCORE_HIST_BINS = 20  # fixed-width score histogram on [0, 1], for the report's plot
TABLE_FEATURES = 25  # rows of the report's worst-features table
PLOT_FEATURES = 6  # worst features plotted (each panel costs ~0.1 s of matplotlib)

FEATURE, SCORE, ALERT_RATE = "feature", "score", "alert_rate"


class DriftError(ValueError):
    """The drift check cannot run (no model, no scores, missing features); nothing was written."""


# --------------------------------------------------------------------------- PSI


def quantile_edges(reference: Any, bins: int = BINS) -> np.ndarray:
    """Inner bin edges of ``reference``: its ``bins``-quantiles, deduplicated, finite values only.

    The bins they make are ``(-inf, e1], (e1, e2], ..., (ek, +inf)`` (see :func:`bin_shares`), so a
    feature with few distinct values simply gets fewer bins. A *constant* reference ``c`` gets the
    edges ``[c - ulp, c]``: three bins, below, at and above ``c``, so a constant feature that moves
    either way drifts. An entirely missing reference gets no edge: one bin for every finite value
    (which then drifts against the missing bin).

    >>> quantile_edges([1.0, 2.0, 3.0, 4.0], bins=4)
    array([1.75, 2.5 , 3.25])
    >>> quantile_edges([5.0, 5.0, float("nan")])
    array([5., 5.])
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    values = np.asarray(reference, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.empty(0)
    edges = np.unique(np.quantile(values, np.arange(1, bins) / bins))
    if edges.size == 1 and values.min() == values.max():
        c = edges[0]
        return np.array([np.nextafter(c, -np.inf), c])
    return edges


def bin_shares(values: Any, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins of ``edges`` followed by the missing bin (NULL/NaN/inf).

    ``len(edges) + 2`` numbers summing to 1; bin ``i`` is ``(edges[i-1], edges[i]]``, the first and
    last finite bins are open-ended. Raises ``ValueError`` on an empty input.

    >>> bin_shares([0.0, 1.0, 2.0, float("nan")], np.array([0.5, 1.5]))
    array([0.25, 0.25, 0.25, 0.25])
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no values: shares of an empty sample are undefined")
    return _counts(x, np.asarray(edges, dtype=np.float64)) / x.size


def _counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    index = np.searchsorted(edges, x, side="left")  # side=left: a value equal to an edge goes below it
    index[~np.isfinite(x)] = edges.size + 1
    return np.bincount(index, minlength=edges.size + 2).astype(np.float64)


def psi_from_shares(expected: Any, actual: Any, eps: float = EPS) -> float:
    """``sum((a - e) * ln(a / e))`` over bins, both shares floored at ``eps`` (see :data:`EPS`).

    >>> round(psi_from_shares([0.5, 0.5], [0.5, 0.5]), 6)
    0.0
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    if e.shape != a.shape:
        raise ValueError(f"share vectors differ in length: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def shares_psi(reference_shares: Any, current_shares: Any, eps: float = EPS) -> float:
    """PSI of one feature from :func:`bin_shares` vectors (missing bin last), where *fewer*
    missing values than in the reference is not drift: lag features (a day or a week back) are
    NULL in the first days of any training range and present later, so then only the present
    values are compared (each side renormalised). More missing values than in the reference, a
    feature that stops coming through, counts with its missing bin.

    >>> shares_psi([0.25, 0.25, 0.5], [0.5, 0.5, 0.0])  # half missing in training, none now
    0.0
    >>> shares_psi([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]) > 0.25  # half missing now
    True
    """
    ref = np.asarray(reference_shares, dtype=np.float64)
    cur = np.asarray(current_shares, dtype=np.float64)
    if cur[-1] <= ref[-1] and ref[-1] < 1.0 and cur[-1] < 1.0:
        return psi_from_shares(ref[:-1] / (1.0 - ref[-1]), cur[:-1] / (1.0 - cur[-1]), eps)
    return psi_from_shares(ref, cur, eps)


def psi(reference: Any, current: Any, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference``.

    Bins are the reference's quantiles (:func:`quantile_edges`: deduplicated, outer bins
    open-ended, a constant reference gets below/at/above bins) plus a missing bin for NULL, NaN
    and infinite values, so a feature that starts coming through as NULL drifts. Shares are floored
    at :data:`EPS`. 0 for identical distributions; above 0.25 is a significant shift. Raises
    ``ValueError`` when either side is empty.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=10_000)
    >>> psi(ref, rng.normal(size=10_000)) < 0.01, psi(ref, rng.normal(1.0, size=10_000)) > 0.25
    (True, True)
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if ref.size == 0:
        raise ValueError("the reference is empty")
    edges = quantile_edges(ref, bins)
    return psi_from_shares(bin_shares(ref, edges), bin_shares(current, edges))


# --------------------------------------------------------------------------- reference profile


@dataclass
class ReferenceProfile:
    """What a model's drift checks compare against; cached as JSON beside the model's artifacts.

    ``features`` maps each feature to ``(edges, shares)`` where ``shares`` has ``len(edges) + 2``
    entries, the last one the missing share, over ``rows`` sampled rows of the training range;
    ``score`` is the same for the model's scores of ``score_rows`` rows of ``score_basis`` (its
    test span, out of sample, when the record has a split); ``score_hist`` the shares of
    :data:`SCORE_HIST_BINS` equal-width bins on [0, 1].
    ``expected_alert_rate`` comes from ``expected_alert_basis`` over ``expected_alert_rows`` points.
    """

    model_version: int
    model_sha256: str
    source: str
    snapshot: int
    start: str
    end: str
    rows: int
    bins: int
    features: dict[str, tuple[np.ndarray, np.ndarray]]
    score: tuple[np.ndarray, np.ndarray]
    score_hist: np.ndarray
    score_rows: int
    score_basis: str
    threshold: float
    expected_alert_rate: float
    expected_alert_basis: str
    expected_alert_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "source": self.source,
            "snapshot": self.snapshot,
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "bins": self.bins,
            "features": {
                name: {"edges": edges.tolist(), "shares": shares.tolist()}
                for name, (edges, shares) in self.features.items()
            },
            "score": {"edges": self.score[0].tolist(), "shares": self.score[1].tolist()},
            "score_hist": self.score_hist.tolist(),
            "score_rows": self.score_rows,
            "score_basis": self.score_basis,
            "threshold": self.threshold,
            "expected_alert_rate": self.expected_alert_rate,
            "expected_alert_basis": self.expected_alert_basis,
            "expected_alert_rows": self.expected_alert_rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReferenceProfile:
        def pair(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
            return np.asarray(d["edges"], dtype=np.float64), np.asarray(d["shares"], dtype=np.float64)

        return cls(
            model_version=int(data["model_version"]),
            model_sha256=str(data["model_sha256"]),
            source=str(data["source"]),
            snapshot=int(data["snapshot"]),
            start=str(data["start"]),
            end=str(data["end"]),
            rows=int(data["rows"]),
            bins=int(data["bins"]),
            features={name: pair(d) for name, d in data["features"].items()},
            score=pair(data["score"]),
            score_hist=np.asarray(data["score_hist"], dtype=np.float64),
            score_rows=int(data["score_rows"]),
            score_basis=str(data["score_basis"]),
            threshold=float(data["threshold"]),
            expected_alert_rate=float(data["expected_alert_rate"]),
            expected_alert_basis=str(data["expected_alert_basis"]),
            expected_alert_rows=int(data["expected_alert_rows"]),
        )


def reference_profile(
    record: ModelRecord,
    *,
    lake: Lake | None = None,
    refresh: bool = False,
) -> ReferenceProfile:
    """The model's reference profile: read from ``<artifacts>/drift_reference.json``, or computed
    (sample of the training data at the model's snapshot, scored by the model) and cached there.

    A cached file is used only if it was made for this model version, artifacts (manifest
    SHA-256) and feature list; anything else, or ``refresh=True``, recomputes it.
    """
    from anomaly.training.report import _write_atomic

    path = profile_path(record)
    if not refresh:
        cached = _read_profile(path, record)
        if cached is not None:
            return cached
    t0 = time.perf_counter()
    profile = _compute_profile(record, lake)
    _write_atomic(path, json.dumps(profile.to_json(), allow_nan=False))
    log.info(
        "drift reference of model v%d: %d rows, %d features in %.1fs -> %s",
        record.version,
        profile.rows,
        len(profile.features),
        time.perf_counter() - t0,
        path,
    )
    return profile


def profile_path(record: ModelRecord) -> Path:
    """Where :func:`reference_profile` caches the model's reference."""
    return Path(record.artifacts) / PROFILE_FILE


def _model_sha(record: ModelRecord) -> str:
    return str(record.sha256.get("manifest.json") or json.dumps(record.sha256, sort_keys=True))


def _read_profile(path: Path, record: ModelRecord) -> ReferenceProfile | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable drift reference %s (%s): recomputing it", path, exc)
        return None
    try:
        if data.get("format") != PROFILE_FORMAT:
            return None
        profile = ReferenceProfile.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("malformed drift reference %s (%s): recomputing it", path, exc)
        return None
    if (
        profile.model_version != record.version
        or profile.model_sha256 != _model_sha(record)
        or list(profile.features) != list(record.features)
    ):
        log.warning("drift reference %s belongs to another model: recomputing it", path)
        return None
    return profile


def _compute_profile(record: ModelRecord, lake: Lake | None) -> ReferenceProfile:
    import duckdb

    from anomaly.store import Lake
    from anomaly.training import model_registry

    lake = lake or Lake()
    source = record.training.get("source")
    if not source:
        raise DriftError(f"model v{record.version} records no training source: cannot rebuild its reference")
    snapshot = int(record.snapshot)
    at = f"AT (VERSION => {snapshot})"  # an int: time travel takes no bound parameter
    where = (
        f"source {source!r} in [{_iso(record.data_start)}, {_iso(record.data_end)}) at snapshot {snapshot}"
    )
    test_start = _test_start(record)
    lake.init()
    with lake.connection() as con:
        try:
            have = set(_columns(con, f"{registry.FEATURES} {at}"))
        except duckdb.Error as exc:  # no features table at that snapshot
            raise DriftError(f"cannot read the features of model v{record.version}'s {where}: {exc}") from exc
        _require_columns(record, have, f"the features table at snapshot {snapshot}")
        frame = _sample(con, at, source, record.data_start, record.data_end, record.features)
        tested = (
            _sample(con, at, source, test_start, record.data_end, record.features)
            if test_start is not None
            else frame.iloc[:0]
        )
    if frame.empty:
        raise DriftError(f"model v{record.version}'s training data ({where}) has no rows: no drift reference")
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for j, name in enumerate(record.features):
        edges = quantile_edges(X[:, j], BINS)
        features[name] = (edges, _counts(X[:, j], edges) / len(X))
    # Scores of the rows the model never trained on when the record says which (a boosted model
    # is more confident on its own training rows: that would read as score drift on new data).
    score_frame, score_basis = (tested, "test span") if len(tested) else (frame, "training range")
    scores = np.asarray(model_registry.load(record).decision_function(score_frame), dtype=np.float64)
    score_edges = quantile_edges(scores, BINS)
    rate, basis, basis_rows = _expected_alert_rate(record, scores)
    return ReferenceProfile(
        model_version=record.version,
        model_sha256=_model_sha(record),
        source=str(source),
        snapshot=snapshot,
        start=_iso(record.data_start),
        end=_iso(record.data_end),
        rows=len(frame),
        bins=BINS,
        features=features,
        score=(score_edges, _counts(scores, score_edges) / len(scores)),
        score_hist=_score_hist(scores),
        score_rows=len(scores),
        score_basis=score_basis,
        threshold=float(record.threshold),
        expected_alert_rate=rate,
        expected_alert_basis=basis,
        expected_alert_rows=basis_rows,
    )


def _sample(
    con: duckdb.DuckDBPyConnection, at: str, source: str, start: Any, end: Any, features: list[str]
) -> pd.DataFrame:
    """At most :data:`REFERENCE_ROWS` feature rows of ``[start, end)``, as DOUBLE columns.

    Rows are the first by a hash of their key, not a reservoir sample: the same rows on every
    machine and thread count. Keys first, then only those rows' columns are read.
    """
    return con.execute(
        f"""
        WITH keys AS (
            SELECT host, ts FROM {registry.FEATURES} {at}
            WHERE source = $source AND ts >= $start AND ts < $end
            ORDER BY hash(host, ts), host, ts
            LIMIT $n
        )
        SELECT {_cast_columns(features, "f.")}
        FROM {registry.FEATURES} f {at}
        SEMI JOIN keys ON keys.host = f.host AND keys.ts = f.ts
        WHERE f.source = $source AND f.ts >= $start AND f.ts < $end
        """,
        {"source": source, "start": start, "end": end, "n": REFERENCE_ROWS},
    ).df()


def _test_start(record: ModelRecord) -> datetime | None:
    """Start of the model's test span, from the split its training record keeps (else None)."""
    text = (record.training.get("split") or {}).get("test_start")
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        log.warning("model v%d: unreadable split test_start %r", record.version, text)
        return None
    return value if value.tzinfo is not None else None


def _expected_alert_rate(record: ModelRecord, scores: np.ndarray) -> tuple[float, str, int]:
    """The share of points the model flags on data like its own: flagged / points of its test span
    (``metrics["point"]``: out of sample, at the tuned threshold); without those counts, the share
    of the reference scores >= the threshold."""
    point = record.metrics.get("point") or {}
    try:
        flagged = int(point["flagged"])
        total = int(point["positives"]) + int(point["negatives"])
    except (KeyError, TypeError, ValueError):
        total = 0
    if total > 0:
        return flagged / total, "test span", total
    return float(np.mean(scores >= record.threshold)), "reference scores", len(scores)


def _score_hist(scores: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=SCORE_HIST_BINS, range=(0.0, 1.0))
    return counts / max(len(scores), 1)


# --------------------------------------------------------------------------- the check


@dataclass
class DriftResult:
    """One drift check of a window: what was measured, whether it drifted and why."""

    source: str
    window_start: datetime
    window_end: datetime
    model_version: int
    rows: int  # rows written to ``drift``
    window_rows: int  # feature rows in the window
    scored_rows: int  # scores of the window by this model
    drifted_features: list[str]  # PSI above its threshold, worst first
    score_psi: float
    alert_rate: float
    expected_alert_rate: float
    alert_rate_limit: float  # factor x max(expected, one point of its basis)
    drifted: bool
    reasons: list[str]
    report: Path
    seconds: float = 0.0
    feature_psi: dict[str, float] = field(default_factory=dict, repr=False)  # every feature, worst first

    def as_dict(self, top: int = 10) -> dict[str, Any]:
        """JSON-friendly (for XCom): the verdict, the measures and the ``top`` worst features."""
        return {
            "source": self.source,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "model_version": self.model_version,
            "rows": self.rows,
            "window_rows": self.window_rows,
            "scored_rows": self.scored_rows,
            "drifted": self.drifted,
            "reasons": list(self.reasons),
            "drifted_features": list(self.drifted_features),
            "worst_features": {k: round(v, 4) for k, v in list(self.feature_psi.items())[:top]},
            "score_psi": round(self.score_psi, 4),
            "alert_rate": self.alert_rate,
            "expected_alert_rate": self.expected_alert_rate,
            "alert_rate_limit": self.alert_rate_limit,
            "report": str(self.report),
            "seconds": round(self.seconds, 3),
        }


def check_drift(
    source: str,
    start: datetime,
    end: datetime,
    *,
    model_version: int | None = None,
    run_id: str | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> DriftResult:
    """Compare the window ``[start, end)`` of ``source`` with the reference of the model that
    scored it (default: the champion); replace the window's rows of ``drift`` and write the report.

    Raises :class:`DriftError` when there is no such model, when the model's features are not all
    columns of ``features``, or when the window has no features or no scores by that model.

    Example::

        >>> r = check_drift("simulation", t0, t1, model_version=3)   # doctest: +SKIP
        >>> r.drifted, r.reasons                                       # doctest: +SKIP
        (False, [])
    """
    import duckdb
    import pandas as pd

    from anomaly.sources.base import require_aware, to_utc
    from anomaly.store import Lake

    t0 = time.perf_counter()
    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    settings = settings or (lake.settings if lake is not None else get_settings())
    lake = lake or Lake(settings)
    lake.init()
    window = f"{source!r} [{start.isoformat()}, {end.isoformat()})"
    record = _model(model_version, lake)

    params = {"source": source, "start": start, "end": end}
    with lake.connection() as con:
        try:
            have = set(_columns(con, registry.FEATURES))
        except duckdb.CatalogException as exc:
            raise DriftError(
                "there is no features table yet: build features first (anomaly features build)"
            ) from exc
        _require_columns(record, have, "the features table")
        # Not checked: calendar features (hour, weekday) say when a window is, not what it holds
        # (a day always differs from weeks of training there), and the history flags
        # (`{metric}__missing_1d`, `_7d`) say whether a lag was available: true in the first days
        # of every training range, false later, which would read as drift on every check.
        calendar = {
            n
            for (n,) in con.execute(
                f"SELECT name FROM {registry.FEATURE_CATALOG} "
                "WHERE family = 'time' OR (family = 'seasonality' AND contains(name, '__missing_'))"
            ).fetchall()
        }
        frame = con.execute(
            f"SELECT {_cast_columns(record.features)} FROM {registry.FEATURES} "
            "WHERE source = $source AND ts >= $start AND ts < $end",
            params,
        ).df()
        scored = con.execute(
            f"SELECT score, is_anomaly FROM {registry.SCORES} "
            "WHERE source = $source AND ts >= $start AND ts < $end AND model_version = $version",
            {**params, "version": record.version},
        ).df()
        if scored.empty:
            others = [
                int(v)
                for (v,) in con.execute(
                    f"SELECT DISTINCT model_version FROM {registry.SCORES} "
                    "WHERE source = $source AND ts >= $start AND ts < $end ORDER BY 1",
                    params,
                ).fetchall()
            ]
    if frame.empty:
        raise DriftError(f"no features for {window}: build the window's features first")
    if scored.empty:
        also = f" (it was scored by model version(s) {others})" if others else ""
        raise DriftError(
            f"no scores by model v{record.version} for {window}{also}: score the window first, "
            "or pass the model_version that scored it"
        )
    profile = reference_profile(record, lake=lake)  # computed once per model, then read from disk

    # ---- measures
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    current: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}
    for j, name in enumerate(record.features):
        if name in calendar:
            continue
        edges, ref_shares = profile.features[name]
        current[name] = _counts(X[:, j], edges) / len(X)
        values[name] = shares_psi(ref_shares, current[name])
    order = sorted(values, key=lambda n: (-values[n], n))
    feature_psi = {n: values[n] for n in order}
    drifted_features = [n for n in order if values[n] > settings.drift_psi_threshold]

    scores = scored["score"].to_numpy(dtype=np.float64)
    score_edges, score_ref = profile.score
    score_cur = _counts(scores, score_edges) / len(scores)
    score_psi = psi_from_shares(score_ref, score_cur)
    alert_rate = float(scored["is_anomaly"].astype(bool).mean())
    # An expected rate of 0 would make any single alert drift: the floor is one point of its basis.
    expected = profile.expected_alert_rate
    limit = settings.drift_alert_rate_factor * max(expected, 1.0 / max(profile.expected_alert_rows, 1))

    reasons = []
    if len(drifted_features) >= settings.drift_min_features:
        shown = ", ".join(drifted_features[:5]) + (", ..." if len(drifted_features) > 5 else "")
        reasons.append(
            f"{len(drifted_features)} features drifted (PSI > {settings.drift_psi_threshold:g}; "
            f"{settings.drift_min_features} needed): {shown}"
        )
    if score_psi > settings.drift_score_psi_threshold:
        reasons.append(f"score PSI {score_psi:.3f} > {settings.drift_score_psi_threshold:g}")
    if alert_rate > limit:
        reasons.append(
            f"alert rate {alert_rate:.2%} > {settings.drift_alert_rate_factor:g} x expected "
            f"{expected:.2%} ({limit:.2%})"
        )

    report = (
        settings.home
        / "reports"
        / "drift"
        / f"{_slug(source)}__{_stamp(start)}__{_stamp(end)}__v{record.version}.html"
    )
    result = DriftResult(
        source=source,
        window_start=start,
        window_end=end,
        model_version=record.version,
        rows=len(values) + 2,
        window_rows=len(frame),
        scored_rows=len(scored),
        drifted_features=drifted_features,
        score_psi=score_psi,
        alert_rate=alert_rate,
        expected_alert_rate=expected,
        alert_rate_limit=limit,
        drifted=bool(reasons),
        reasons=reasons,
        report=report,
        feature_psi=feature_psi,
    )
    _write_report(report, result, profile, record, settings, current, scores, score_cur)

    rows = pd.DataFrame(
        {
            "kind": [FEATURE] * len(values) + [SCORE, ALERT_RATE],
            "name": [*values, SCORE, ALERT_RATE],
            "value": [*values.values(), score_psi, alert_rate],
            "reference": [None] * len(values) + [None, expected],
            "threshold": [settings.drift_psi_threshold] * len(values)
            + [settings.drift_score_psi_threshold, limit],
        }
    )
    rows["reference"] = rows["reference"].astype("float64")
    rows["drifted"] = rows["value"] > rows["threshold"]

    def work(con: duckdb.DuckDBPyConnection) -> None:
        key = {**params, "version": record.version}
        con.execute(
            f"DELETE FROM {registry.DRIFT} WHERE source = $source AND window_start = $start "
            "AND window_end = $end AND model_version = $version",
            key,
        )
        con.register("drift_rows", rows)
        try:
            con.execute(
                f"""
                INSERT INTO {registry.DRIFT} (checked_at, run_id, source, window_start, window_end,
                    model_version, kind, name, value, reference, threshold, drifted, report_path)
                SELECT now(), $run_id, $source, $start, $end, $version, kind, name, value, reference,
                    threshold, drifted, $report
                FROM drift_rows
                """,
                {**key, "run_id": run_id, "report": str(report)},
            )
        finally:
            con.unregister("drift_rows")

    lake.write(work, what=f"drift check {window} v{record.version}")
    result.seconds = time.perf_counter() - t0
    log.info(
        "drift %s v%d: %s%s; %d/%d features drifted, score PSI %.3f, alert rate %.2f%% (limit %.2f%%) "
        "in %.2fs; report %s",
        window,
        record.version,
        "DRIFTED" if result.drifted else "stable",
        f" ({'; '.join(reasons)})" if reasons else "",
        len(drifted_features),
        len(values),
        score_psi,
        100 * alert_rate,
        100 * limit,
        result.seconds,
        report,
    )
    return result


def _model(model_version: int | None, lake: Lake) -> ModelRecord:
    from anomaly.training import model_registry

    if model_version is not None:
        try:
            return model_registry.get(int(model_version), lake=lake)
        except model_registry.RegistryError as exc:
            raise DriftError(str(exc)) from exc
    record = model_registry.champion(lake=lake)
    if record is None:
        raise DriftError(
            "no champion model to check drift against: train one, or make a version the champion "
            "with `anomaly models promote VERSION`"
        )
    return record


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description]


def _require_columns(record: ModelRecord, have: set[str], where: str) -> None:
    missing = [name for name in record.features if name not in have]
    if missing:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise DriftError(f"model v{record.version} needs feature(s) missing from {where}: {shown}")


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _cast_columns(names: list[str], prefix: str = "") -> str:
    # Everything as DOUBLE (booleans as 0/1): one float matrix, NULL as NaN.
    return ", ".join(f"CAST({prefix}{_ident(n)} AS DOUBLE) AS {_ident(n)}" for n in names)


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "source"


# --------------------------------------------------------------------------- the report

_REF, _CUR = "#4c72b0", "#dd8452"


def _write_report(
    path: Path,
    result: DriftResult,
    profile: ReferenceProfile,
    record: ModelRecord,
    settings: Settings,
    current: dict[str, np.ndarray],
    scores: np.ndarray,
    score_cur: np.ndarray,
) -> None:
    """One self-contained HTML page (inline CSS, base64 PNGs) for one check."""
    from anomaly.training.report import _CSS, _e, _grid, _num, _table, _write_atomic

    verdict = "DRIFTED: retraining is due" if result.drifted else "no drift"
    headline = [
        ("Verdict", verdict),
        ("Reasons", "; ".join(result.reasons) or "—"),
        ("Source", result.source),
        ("Window", f"[{result.window_start.isoformat()}, {result.window_end.isoformat()})"),
        ("Model version", str(result.model_version)),
        ("Feature rows / scored points", f"{result.window_rows:,} / {result.scored_rows:,}"),
        (
            "Drifted features",
            f"{len(result.drifted_features)} of {len(result.feature_psi)} "
            f"(PSI > {settings.drift_psi_threshold:g}; {settings.drift_min_features} trigger retraining)",
        ),
        ("Score PSI", f"{result.score_psi:.3f} (threshold {settings.drift_score_psi_threshold:g})"),
        (
            "Alert rate",
            f"{result.alert_rate:.2%} (expected {result.expected_alert_rate:.2%} on the "
            f"{profile.expected_alert_basis}; limit {result.alert_rate_limit:.2%} = "
            f"{settings.drift_alert_rate_factor:g} x)",
        ),
        (
            "Reference",
            f"{profile.rows:,} rows of {profile.source!r} in [{profile.start}, {profile.end}) "
            f"at snapshot {profile.snapshot}; scores of {profile.score_rows:,} rows of the "
            f"{profile.score_basis}",
        ),
        ("Model threshold (flag when score ≥)", f"{record.threshold:.4g}"),
    ]
    worst = list(result.feature_psi)[:TABLE_FEATURES]
    table_rows = [
        [
            name,
            _num(result.feature_psi[name]),
            "yes" if result.feature_psi[name] > settings.drift_psi_threshold else "no",
            f"{profile.features[name][1][-1]:.1%}",
            f"{current[name][-1]:.1%}",
        ]
        for name in worst
    ]
    plotted = worst[:PLOT_FEATURES]
    sections = [
        f"<h1>{_e(f'Drift check: {result.source}, model v{result.model_version}')}</h1>",
        _table([(_e(k), _e(v)) for k, v in headline]),
        "<h2>Alert rate</h2>",
        _png(_alert_figure(result), "Alert rate of the window against the model's expected rate"),
        "<h2>Score distribution</h2>",
        _png(
            _score_figure(profile, score_cur, scores, record.threshold),
            f"Scores: reference ({profile.score_basis}) against the window",
        ),
        f"<h2>Worst features by PSI (top {len(worst)})</h2>",
        _grid(["Feature", "PSI", "Drifted", "Missing (reference)", "Missing (window)"], table_rows),
        "<h2>Worst features: reference against window</h2>",
        _png(
            _features_figure(plotted, profile, current, result),
            f"Shares per reference bin (deciles of the reference, then missing) for the "
            f"{len(plotted)} worst features",
        )
        if plotted
        else "<p>No features.</p>",
        "<p>Bins are the reference's deciles (closed on the right) and a missing bin. "
        "PSI &lt; 0.1 is usually read as stable, 0.1 to 0.25 as a moderate shift, &gt; 0.25 as a "
        "significant one.</p>",
    ]
    title = f"Drift {result.source} {result.window_start.isoformat()} v{result.model_version}"
    page = (
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="UTF-8">\n<title>{_e(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
    _write_atomic(path, page)


def _png(fig: Figure, caption: str) -> str:
    """A figure as an inline ``<figure>``: layout set by hand, no tight bounding box (each of those
    makes matplotlib lay out every text twice: the report took seconds instead of a fraction)."""
    import base64
    import io

    from anomaly.training.report import _e

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _bin_labels(edges: np.ndarray) -> list[str]:
    """Each bin by its upper edge: ``≤e1``, ..., ``≤ek``, ``>ek``, then ``NA`` (missing)."""
    if edges.size == 0:
        return ["any", "NA"]
    return [*(f"≤{v:.3g}" for v in edges), f">{edges[-1]:.3g}", "NA"]


def _bars(ax: Any, labels: list[str], reference: np.ndarray, window: np.ndarray) -> None:
    from anomaly.training.report import _mpl

    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, reference, 0.4, color=_REF, label="reference")
    ax.bar(pos + 0.2, window, 0.4, color=_CUR, label="window")
    ax.set_xticks(pos, [_mpl(x) for x in labels], rotation=90, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def _alert_figure(result: DriftResult) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.0))
    fig.subplots_adjust(left=0.12, right=0.95, bottom=0.25, top=0.85)
    ax = fig.add_subplot()
    names = ["expected", "limit", "window"]
    values = [result.expected_alert_rate, result.alert_rate_limit, result.alert_rate]
    colours = [_REF, "grey", "#c44e52" if result.alert_rate > result.alert_rate_limit else _CUR]
    ax.barh(names, [100 * v for v in values], color=colours)
    for i, v in enumerate(values):
        ax.text(100 * v, i, f" {v:.2%}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100 * max(values) * 1.3 or 1)
    ax.set(xlabel="Share of points flagged (%)", title="Alert rate")
    return fig


def _score_figure(
    profile: ReferenceProfile, score_cur: np.ndarray, scores: np.ndarray, threshold: float
) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.22, top=0.9, wspace=0.25)
    left, right = fig.subplots(1, 2)
    edges = np.linspace(0.0, 1.0, SCORE_HIST_BINS + 1)
    floor = 0.5 / max(profile.score_rows, len(scores))  # log scale: empty bins just below the rest
    for shares, colour, label in (
        (profile.score_hist, _REF, "reference"),
        (_score_hist(scores), _CUR, "window"),
    ):
        left.stairs(np.maximum(shares, floor), edges, color=colour, linewidth=2, label=label)
    left.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    left.set_yscale("log")
    left.set(xlabel="Score", ylabel="Share of points (log)", title="Score histogram")
    left.legend(fontsize=8)
    # scores are never missing: the NA bin is left out
    _bars(right, _bin_labels(profile.score[0])[:-1], profile.score[1][:-1], score_cur[:-1])
    right.set(ylabel="Share", title="Score PSI bins (reference deciles)")
    right.legend(fontsize=8)
    return fig


def _features_figure(
    names: list[str], profile: ReferenceProfile, current: dict[str, np.ndarray], result: DriftResult
) -> Figure:
    from matplotlib.figure import Figure

    from anomaly.training.report import _mpl

    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    height = 3.2 * rows + 0.5  # the last 0.5 in: the legend, above the first row's titles
    fig = Figure(figsize=(4.0 * cols, height))
    fig.subplots_adjust(
        left=0.06, right=0.98, bottom=1.0 / height, top=1 - 0.95 / height, hspace=0.75, wspace=0.25
    )
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names, strict=False):
        edges, ref = profile.features[name]
        _bars(ax, _bin_labels(edges), ref, current[name])
        ax.set_title(
            f"{_mpl(name)}\nPSI {result.feature_psi[name]:.2f}; missing {ref[-1]:.0%} → {current[name][-1]:.0%}",
            fontsize=8,
        )
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", fontsize=8, ncols=2, frameon=False)
    return fig
