"""Honest evaluation of anomaly scores on a time-ordered test span.

Point metrics score every (host, ts) row on its own; event metrics score label windows (an
event is found when any of its points is flagged) and count false alarms as runs of flagged
points, which is what an on-call engineer experiences: one page per run, not one per row.

Conventions used throughout:

* ``y_true`` is 1 (or True) for a point inside a labelled window; ``y_pred`` / ``flagged`` is
  ``score >= threshold``.
* A ratio whose denominator is zero (precision with nothing flagged, recall with no positives)
  is reported as ``0.0``, never NaN: this is scikit-learn's ``zero_division=0``, made explicit
  so that a JSON report never carries NaN.
* The threshold is tuned on a validation span (:func:`tune_threshold`) and then applied,
  unchanged, to the later test span (:func:`evaluate`); tuning on the test span would report an
  optimistic number.

Example::

    >>> import pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=4, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": [None, "e1", "e1", None],
    ...                     "flagged": [False, False, True, False]})
    >>> event_metrics(pts)["event_recall"], event_metrics(pts)["mean_time_to_detect"]
    (1.0, 60.0)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

__all__ = [
    "calibration",
    "evaluate",
    "event_metrics",
    "event_table",
    "point_metrics",
    "recall_by_type",
    "tune_alert_threshold",
    "tune_threshold",
]

DEFAULT_MAX_GAP = pd.Timedelta("5min")
RECALL_RESAMPLES = 1000  # resamples of the events behind tune_threshold's confidence bound

_EVENT_COLUMNS = ("event_id", "host", "fault_type", "start", "end", "points", "detected", "first_flag")


# --------------------------------------------------------------------------- input checks


def _labels(y_true: Any, name: str = "y_true") -> np.ndarray:
    """A 1-d bool array from 0/1 or bool labels; anything else is an error, not a guess."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 or booleans")
    return y.astype(bool)


def _scores(scores: Any, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(f"scores must be 1-dimensional with {n} values, got shape {s.shape}")
    # A NaN score would silently count as "not flagged" (NaN >= t is False): refuse it instead.
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (found NaN or inf)")
    return s


def _ratio(num: float, den: float) -> float:
    # zero_division=0: an undefined ratio is reported as 0.0, never NaN.
    return float(num) / float(den) if den else 0.0


def _f1(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if p + r else 0.0


# --------------------------------------------------------------------------- thresholds


def tune_threshold(
    y_true: Any,
    scores: Any,
    target_recall: float = 0.9,
    *,
    events: Any = None,
    confidence: float = 0.0,
    n_boot: int = RECALL_RESAMPLES,
    random_state: int = 0,
) -> float:
    """The threshold (flag when ``score >= threshold``) with the best precision among those
    reaching at least ``target_recall`` point-wise recall; ties in precision go to the highest
    threshold (fewer alarms for the same precision).

    ``confidence`` (with ``events``, the event id of each point): the recall that must reach the
    target is then also the lower ``confidence`` bound of recall over ``n_boot`` resamples of
    the labelled events (with replacement, seeded by ``random_state``), not only the span's own
    recall. A threshold tuned to exactly the target on one span falls short of it on the next
    about half the time: an event's points tend to be flagged together or not at all, so point
    recall varies by whole events. 0 (default) tunes to the span's own recall.

    Call it on the **validation** span only and apply the result unchanged to the test span:
    choosing the threshold is the caller's job, and doing it on the test data is leakage.

    The candidates are the distinct score values (``precision_recall_curve``'s thresholds):
    tied scores are flagged together, so a threshold can only fall between two distinct score
    values, and every threshold in ``(s_prev, s]`` flags the same points; the highest of them,
    ``s`` itself, is returned. Raises ``ValueError`` when no threshold reaches the target,
    which happens only when ``y_true`` has no positives.

    >>> tune_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], target_recall=1.0)
    0.35
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0, 1), got {confidence}")
    if confidence and events is None:
        raise ValueError("confidence needs events: the event id of each point, to resample by event")
    if confidence and n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    y = _labels(y_true)
    s = _scores(scores, y.shape[0])
    if not y.any():
        raise ValueError(
            f"no threshold reaches recall {target_recall}: y_true has no positives "
            f"({y.shape[0]} points), so recall is undefined; tune on a span with labelled events"
        )
    # precision[i], recall[i] belong to thresholds[i] (ascending distinct scores); the final
    # (precision=1, recall=0) point has no threshold and is dropped.
    precision, recall, thresholds = precision_recall_curve(y, s, drop_intermediate=False)
    precision, recall = precision[:-1], recall[:-1]
    # Recall is tp / P with tp, P integers; a tolerance of a few ulps keeps a target such as
    # 0.7 from missing 7/10 through rounding in either number.
    ok = recall >= target_recall - 1e-12
    if not ok.any():  # unreachable while y has positives (the lowest threshold flags all)
        raise ValueError(f"no threshold reaches recall {target_recall}")
    if confidence:
        highest = _highest_confident_threshold(
            y, s, events, thresholds, target_recall, confidence, n_boot, random_state
        )
        ok &= thresholds <= highest
    best = precision[ok].max()
    # Equal fractions give bitwise-equal floats, so == finds exact ties in precision.
    candidates = thresholds[ok & (precision == best)]
    return float(candidates.max())


def _highest_confident_threshold(
    y: np.ndarray,
    s: np.ndarray,
    events: Any,
    thresholds: np.ndarray,
    target_recall: float,
    confidence: float,
    n_boot: int,
    random_state: int,
) -> float:
    """The highest of ``thresholds`` whose recall's lower ``confidence`` bound, over resamples of
    the events, reaches the target. Every resample's recall only falls as the threshold rises,
    so the bound does too and a bisection finds the crossing."""
    events = np.asarray(events, dtype=object)
    if events.shape != y.shape:
        raise ValueError(f"events must have one value per point, shape ({len(y)},), got shape {events.shape}")
    ids = pd.Series(events[y])
    if ids.isna().any():
        raise ValueError(
            f"{int(ids.isna().sum())} positive point(s) have no event id: cannot resample by event"
        )
    codes, uniques = pd.factorize(ids)
    per_event = np.bincount(codes, minlength=len(uniques)).astype(float)
    weights = (
        np.random.default_rng(random_state)
        .multinomial(len(uniques), np.full(len(uniques), 1.0 / len(uniques)), size=int(n_boot))
        .astype(float)
    )
    totals = weights @ per_event
    positive_scores = s[y]

    def bound(threshold: float) -> float:
        caught = np.bincount(codes[positive_scores >= threshold], minlength=len(uniques))
        return float(np.quantile((weights @ caught) / totals, 1.0 - confidence))

    # thresholds ascend and the lowest flags every point (bound 1): the answer is the one just
    # below the first whose bound misses the target.
    first_miss = bisect.bisect_left(
        range(len(thresholds)), True, key=lambda i: bound(thresholds[i]) < target_recall - 1e-12
    )
    return float(thresholds[first_miss - 1])


def tune_alert_threshold(
    points: pd.DataFrame, scores: Any, floor: float = 0.0, max_gap: pd.Timedelta = DEFAULT_MAX_GAP
) -> float:
    """The alert threshold: the one with the best **event F1** on ``points`` (flag when
    ``score >= threshold``; events and false-alarm runs as in :func:`event_metrics`), ties going
    to the **lowest** threshold: with few validation events the best F1 spans a range whose top
    is set by one event's peak score, and a later event peaking a little lower would then never
    page. Like :func:`tune_threshold`, call it on the validation span only.

    Two thresholds, because one cannot serve both goals: the point threshold
    (:func:`tune_threshold`) reaches a point recall such as 0.9, which flags the borderline
    points of every event, and with them scattered normal points whose runs each page once; an
    event is found by any one of its points, so pages need only its clearest ones. On the
    14-day bench fleet the recall-tuned threshold gave 1,321 false-alarm runs on the test span
    (event F1 0.18), the alert threshold tuned here 6 (event F1 0.94).

    Candidates are the distinct scores at the quantiles 0.5, 0.5025, ..., 1 (201 levels,
    ``inverted_cdf``: scores that occur, the maximum included): a threshold flagging more than
    half of the points is never an alert threshold, nor one below ``floor`` (give the point
    threshold: a page on a point that is not even flagged would contradict ``is_anomaly``).
    ``ValueError`` without events.

    >>> import pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=6, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": [None, None, "e1", "e1", None, None]})
    >>> tune_alert_threshold(pts, [0.1, 0.7, 0.6, 0.9, 0.2, 0.1])
    0.9
    """
    max_gap = pd.Timedelta(max_gap)
    s = _scores(scores, len(points))
    df = _prepared(points.assign(flagged=False))
    order = points.assign(_s=s).sort_values(["host", "ts"], kind="mergesort")["_s"].to_numpy()
    if not df["in_event"].any():
        raise ValueError("no alert threshold can be tuned: the points hold no labelled event")
    candidates = np.unique(np.quantile(order, np.linspace(0.5, 1.0, 201), method="inverted_cdf"))
    candidates = candidates[candidates >= floor]
    if not candidates.size:  # floor above every score: nothing pages, as at the floor itself
        return float(floor)
    best, best_f1 = float(candidates[0]), -1.0
    for threshold in candidates:  # lowest first: a tie keeps the lower threshold
        df["flagged"] = order >= threshold
        table = _event_table(df)
        detected = int(table["detected"].sum())
        precision = _ratio(detected, detected + _false_alarm_runs(df, max_gap))
        f1 = _f1(precision, _ratio(detected, len(table)))
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


# --------------------------------------------------------------------------- point metrics


def point_metrics(y_true: Any, y_pred: Any, scores: Any | None = None) -> dict[str, Any]:
    """Point-wise precision, recall, F1 and counts; ``pr_auc`` (average precision) from
    ``scores`` when given.

    Undefined ratios are 0.0 (``zero_division=0``): precision when nothing is flagged, recall
    when there are no positives, F1 when ``2tp + fp + fn == 0``. ``pr_auc`` is ``None`` without
    scores or without positives (a ranking of nothing is not 0).

    >>> m = point_metrics([0, 1, 1, 0], [0, 1, 0, 1], scores=[0.1, 0.9, 0.3, 0.6])
    >>> m["precision"], m["recall"], m["tp"], m["fp"], m["fn"]
    (0.5, 0.5, 1, 1, 1)
    """
    y = _labels(y_true)
    p = _labels(y_pred, "y_pred")
    if p.shape != y.shape:
        raise ValueError(f"y_pred has {p.shape[0]} values, y_true {y.shape[0]}")
    tp = int(np.count_nonzero(y & p))
    fp = int(np.count_nonzero(~y & p))
    fn = int(np.count_nonzero(y & ~p))
    pr_auc = None
    if scores is not None:
        s = _scores(scores, y.shape[0])
        if y.any():
            pr_auc = float(average_precision_score(y, s))
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        # sklearn's F1 is 2tp / (2tp + fp + fn) (not 2PR/(P+R)), which stays defined when P is.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "pr_auc": pr_auc,
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "flagged": int(p.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


# --------------------------------------------------------------------------- event metrics


def _prepared(points: pd.DataFrame) -> pd.DataFrame:
    """The columns used, checked, in (host, ts) order; the sort is stable so equal timestamps
    keep their input order."""
    missing = {"host", "ts", "event_id", "flagged"} - set(points.columns)
    if missing:
        raise ValueError(f"points is missing columns {sorted(missing)}")
    if not isinstance(points["ts"].dtype, pd.DatetimeTZDtype):
        raise ValueError(f"points.ts must be tz-aware timestamps, got dtype {points['ts'].dtype}")
    if points["flagged"].isna().any():
        raise ValueError("points.flagged has missing values")
    cols = ["host", "ts", "event_id", "flagged"] + (["fault_type"] if "fault_type" in points else [])
    df = points[cols].copy()
    df["flagged"] = df["flagged"].astype(bool)
    df["in_event"] = df["event_id"].notna()
    return df.sort_values(["host", "ts"], kind="mergesort").reset_index(drop=True)


def _event_table(df: pd.DataFrame) -> pd.DataFrame:
    ev = df[df["in_event"]]
    if ev.empty:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in _EVENT_COLUMNS})
        out["time_to_detect_s"] = pd.Series(dtype=float)
        return out
    g = ev.groupby("event_id", sort=False)
    hosts = g["host"].nunique()
    if (hosts > 1).any():
        bad = list(hosts[hosts > 1].index[:5])
        # A label window belongs to one host (the labels table has one host per row).
        raise ValueError(f"events span more than one host: {bad}")
    if "fault_type" in ev:
        types = g["fault_type"].nunique()
        if (types > 1).any():
            raise ValueError(f"events with more than one fault_type: {list(types[types > 1].index[:5])}")
        fault_type = g["fault_type"].first()  # first non-null; None when all are null
    else:
        fault_type = pd.Series(None, index=hosts.index, dtype=object)
    first_flag = ev[ev["flagged"]].groupby("event_id", sort=False)["ts"].min()
    out = pd.DataFrame(
        {
            "host": g["host"].first(),
            "fault_type": fault_type.astype(object).where(fault_type.notna(), None),
            "start": g["ts"].min(),
            "end": g["ts"].max(),
            "points": g.size(),
            "first_flag": first_flag,
        }
    )
    out["detected"] = out["first_flag"].notna()
    out["time_to_detect_s"] = (out["first_flag"] - out["start"]).dt.total_seconds()
    out = out.rename_axis("event_id").reset_index()
    out = out.sort_values(["start", "host"], kind="mergesort").reset_index(drop=True)
    return out[[*_EVENT_COLUMNS, "time_to_detect_s"]]


def event_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled event: event_id, host, fault_type (None without that column),
    start / end (first and last scored point), points, detected, first_flag (NaT when missed)
    and time_to_detect_s (first_flag - start in seconds, NaN when missed), ordered by start.

    The start is the event's first *scored* point, not the label's nominal start: a point the
    model never saw cannot be flagged, so it should not count as detection delay.

    >>> import pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=3, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": "e1", "flagged": [False, False, True]})
    >>> event_table(pts)[["event_id", "points", "detected", "time_to_detect_s"]].to_dict("records")
    [{'event_id': 'e1', 'points': 3, 'detected': True, 'time_to_detect_s': 120.0}]
    """
    return _event_table(_prepared(points))


def _false_alarm_runs(df: pd.DataFrame, max_gap: pd.Timedelta) -> int:
    # A run is a maximal stretch of flagged, unlabelled points of one host with no point of an
    # event in between (that point would be in_event, hence not a candidate) and no gap in the
    # scored rows above max_gap. Count run starts: a candidate whose predecessor is not one.
    cand = (df["flagged"] & ~df["in_event"]).to_numpy()
    if not cand.any():
        return 0
    host = df["host"].to_numpy()
    ts = df["ts"]
    new_host = np.ones(len(df), dtype=bool)
    new_host[1:] = host[1:] != host[:-1]
    gap = (ts.diff() > max_gap).to_numpy()  # diff across hosts is masked by new_host
    prev = np.zeros(len(df), dtype=bool)
    prev[1:] = cand[:-1]
    return int(np.count_nonzero(cand & (~prev | new_host | gap)))


def event_metrics(points: pd.DataFrame, max_gap: pd.Timedelta = DEFAULT_MAX_GAP) -> dict[str, Any]:
    """Event recall, false-alarm runs, event precision / F1 and time to detect.

    * An event (rows sharing an ``event_id``) is **detected** when any of its points is flagged.
    * A **false-alarm event** is a maximal run of flagged points of one host outside every
      event, consecutive in that host's ts order among the scored rows; an unflagged point, a
      point of any event, or a gap between scored rows larger than ``max_gap`` ends the run.
    * A flagged run that crosses an event boundary is split at the boundary: its points inside
      the event detect the event, and its points after the end (or before the start) are a
      separate false-alarm run, because they are flagged points outside every labelled window
      (an alarm that outlives the fault still pages, once per run, not once per point).
    * ``event_precision = detected / (detected + false_alarm_events)``,
      ``event_recall = detected / events``, ``event_f1`` their harmonic mean; 0.0 when undefined.
    * ``mean_time_to_detect`` / ``median_time_to_detect``: seconds from an event's first scored
      point to its first flagged point, over detected events; ``None`` if none is detected.

    >>> import pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=5, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": [None, "e1", "e1", None, None],
    ...                     "flagged": [True, False, True, True, False]})
    >>> m = event_metrics(pts)
    >>> m["detected"], m["false_alarm_events"], m["event_precision"], m["mean_time_to_detect"]
    (1, 2, 0.3333333333333333, 60.0)
    """
    max_gap = pd.Timedelta(max_gap)
    if max_gap <= pd.Timedelta(0):
        raise ValueError(f"max_gap must be positive, got {max_gap}")
    df = _prepared(points)
    table = _event_table(df)
    events = len(table)
    detected = int(table["detected"].sum()) if events else 0
    false_alarms = _false_alarm_runs(df, max_gap)
    precision = _ratio(detected, detected + false_alarms)
    recall = _ratio(detected, events)
    ttd = table.loc[table["detected"], "time_to_detect_s"].to_numpy(dtype=float) if events else np.array([])
    return {
        "events": events,
        "detected": detected,
        "missed": events - detected,
        "false_alarm_events": false_alarms,
        "event_precision": precision,
        "event_recall": recall,
        "event_f1": _f1(precision, recall),
        "mean_time_to_detect": float(ttd.mean()) if ttd.size else None,
        "median_time_to_detect": float(np.median(ttd)) if ttd.size else None,
    }


def recall_by_type(points: pd.DataFrame) -> pd.DataFrame:
    """Per fault_type: events, detected, event_recall, points (labelled points of that type)
    and point_recall (the flagged share of those points), ordered by fault_type.

    Requires a ``fault_type`` column (``ValueError`` otherwise); an event's type is its first
    non-null value, and events without one are grouped under ``None``.

    >>> import pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=3, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": "e1", "fault_type": "disk_full",
    ...                     "flagged": [False, True, True]})
    >>> recall_by_type(pts).to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'fault_type': 'disk_full', 'events': 1, 'detected': 1, 'event_recall': 1.0,
      'points': 3, 'point_recall': 0.6666666666666666}]
    """
    if "fault_type" not in points:
        raise ValueError("points has no fault_type column")
    df = _prepared(points)
    table = _event_table(df)
    cols = ["fault_type", "events", "detected", "event_recall", "points", "point_recall"]
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    # Flagged points per event, so point recall follows the event's type (not a per-row value).
    flagged = df[df["in_event"]].groupby("event_id", sort=False)["flagged"].sum()
    table = table.assign(flagged_points=table["event_id"].map(flagged).astype(int))
    g = table.groupby(table["fault_type"].fillna("\0none"), sort=True)  # None sorts, then restored
    out = pd.DataFrame(
        {
            "events": g.size(),
            "detected": g["detected"].sum().astype(int),
            "points": g["points"].sum().astype(int),
            "flagged_points": g["flagged_points"].sum().astype(int),
        }
    )
    out["event_recall"] = out["detected"] / out["events"]
    out["point_recall"] = out["flagged_points"] / out["points"]
    out = out.rename_axis("fault_type").reset_index()
    out["fault_type"] = out["fault_type"].astype(object).where(out["fault_type"] != "\0none", None)
    return out[cols]


# --------------------------------------------------------------------------- calibration


def calibration(y_true: Any, scores: Any, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and a reliability table for probability scores.

    Bins are equal-width over [0, 1] (``[i/bins, (i+1)/bins)``, the last one closed at 1); ECE
    is ``sum_b n_b / n * |mean_score_b - observed_rate_b|``. Scores outside [0, 1] are not
    probabilities and raise ``ValueError``. ``reliability`` has one row per bin (lower, upper,
    count, mean_score, observed_rate), with NaN means in empty bins, for a reliability plot.

    >>> c = calibration([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], bins=2)
    >>> round(c["brier"], 4), round(c["ece"], 4), c["reliability"]["count"].tolist()
    (0.025, 0.15, [2, 2])
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y = _labels(y_true)
    s = _scores(scores, y.shape[0])
    if not y.size:
        raise ValueError("calibration needs at least one point")
    if (s < 0).any() or (s > 1).any():
        raise ValueError("calibration needs probability scores in [0, 1]")
    yf = y.astype(float)
    # floor(s * bins) matches the reported lower edge i / bins; 1.0 joins the last bin.
    idx = np.minimum(np.floor(s * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_s = np.bincount(idx, weights=s, minlength=bins)
    sum_y = np.bincount(idx, weights=yf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: NaN, skipped by the ECE
        mean_s = sum_s / count
        rate = sum_y / count
    filled = count > 0
    ece = float(np.sum(count[filled] / y.size * np.abs(mean_s[filled] - rate[filled])))
    table = pd.DataFrame(
        {
            "lower": np.arange(bins) / bins,
            "upper": np.arange(1, bins + 1) / bins,
            "count": count.astype(int),
            "mean_score": mean_s,
            "observed_rate": rate,
        }
    )
    return {"brier": float(np.mean((s - yf) ** 2)), "ece": ece, "reliability": table}


# --------------------------------------------------------------------------- the bundle


def _jsonable(x: Any) -> Any:
    """Plain Python for json.dumps: numpy scalars unwrapped, NaN / NaT / NA as None."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or (isinstance(x, Sequence) and not isinstance(x, str)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, pd.Timestamp):
        return None if pd.isna(x) else x.isoformat()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool | int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if pd.isna(x):
        return None
    return str(x)


def evaluate(
    points: pd.DataFrame, scores: Any, threshold: float, alert_threshold: float | None = None
) -> dict[str, Any]:
    """All metrics of one scored test span, as a JSON-serialisable dict.

    ``scores`` align with ``points`` by position; ``flagged`` is recomputed as
    ``scores >= threshold`` (any ``flagged`` column of ``points`` is ignored) and ``y_true`` is
    ``event_id`` not null. Point metrics and each type's point recall use ``threshold``; event
    metrics and each type's event recall use ``alert_threshold`` (:func:`tune_alert_threshold`:
    what raises an incident), or ``threshold`` when it is None. Keys: ``threshold``,
    ``alert_threshold``, ``point`` (:func:`point_metrics`), ``event`` (:func:`event_metrics`),
    ``recall_by_type`` (records; ``[]`` without a fault_type column) and ``calibration``
    (``{"brier", "ece"}``, or ``None`` when scores are not in [0, 1]). Both thresholds must come
    from validation data, not from this span.

    >>> import json, pandas as pd
    >>> ts = pd.date_range("2026-01-05", periods=3, freq="1min", tz="UTC")
    >>> pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": [None, "e1", "e1"]})
    >>> r = evaluate(pts, [0.1, 0.4, 0.9], threshold=0.5)
    >>> r["point"]["recall"], r["event"]["event_recall"], len(json.dumps(r)) > 0
    (0.5, 1.0, True)
    """
    threshold = float(threshold)
    alert = threshold if alert_threshold is None else float(alert_threshold)
    if not (math.isfinite(threshold) and math.isfinite(alert)):
        raise ValueError(f"thresholds must be finite, got {threshold} and {alert}")
    s = _scores(scores, len(points))
    pts = points.assign(flagged=s >= threshold)  # a copy: the caller's frame is untouched
    alerts = pts.assign(flagged=s >= alert)
    y = pts["event_id"].notna().to_numpy()
    by_type = []
    if "fault_type" in pts:
        by_type = recall_by_type(pts)
        by_event = recall_by_type(alerts).set_index("fault_type")
        by_type["detected"] = by_type["fault_type"].map(by_event["detected"])
        by_type["event_recall"] = by_type["fault_type"].map(by_event["event_recall"])
        by_type = by_type.to_dict("records")
    cal = None
    if s.size and s.min() >= 0.0 and s.max() <= 1.0:  # calibration is defined for probabilities only
        c = calibration(y, s)
        cal = {"brier": c["brier"], "ece": c["ece"]}
    return _jsonable(
        {
            "threshold": threshold,
            "alert_threshold": alert,
            "point": point_metrics(y, pts["flagged"].to_numpy(), s),
            "event": event_metrics(alerts),
            "recall_by_type": by_type,
            "calibration": cal,
        }
    )
